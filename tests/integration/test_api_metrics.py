"""`/metrics` in the Prometheus text format with the database gauges filled in, and
the OpenAPI document served without a key."""

from __future__ import annotations

import asyncio
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.receiver import Receiver, Reply

api_server, http, api, other = support.api_server, support.http, support.api, support.other


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_show_deliveries_queue_and_endpoints(api: Api, receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(500))
    active = await api.create_endpoint(receiver.url, retry_policy="none")
    paused = await api.create_endpoint(receiver.url)
    await api.post(f"/v1/endpoints/{paused['id']}/pause")
    ev = await api.publish("transaction", {"n": 1})
    await api.wait_for_status(active["id"], ev["id"], "Failed")
    await asyncio.sleep(1.1)  # the database gauges refresh at most once a second
    reply = await api.get("/metrics", auth=False)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    samples = _samples(reply.body)
    assert samples[("dispatcher_endpoints", (("state", "paused"),))] >= 1
    assert samples[("dispatcher_endpoints", (("state", "active"),))] >= 1
    assert samples[("dispatcher_deliveries", (("status", "Failed"),))] >= 1
    assert samples[("dispatcher_deliveries", (("status", "Pending"),))] >= 1  # held
    assert ("dispatcher_queue_depth", ()) in samples
    assert ("dispatcher_oldest_due_age_seconds", ()) in samples
    assert re.search(r"^dispatcher_attempt_duration_seconds_bucket", reply.body, re.M)
    assert samples[("dispatcher_attempt_duration_seconds_count", ())] >= 1
    assert samples[("dispatcher_attempts_total", (("outcome", "http_status"),))] >= 1
    assert samples[("dispatcher_deliveries_held", ())] >= 1  # the paused endpoint's
    assert samples[("dispatcher_ready", ())] == 1
    tenant_failures = [v for (name, labels), v in samples.items()
                       if name == "dispatcher_tenant_attempts_total"
                       and ("result", "failure") in labels]
    assert tenant_failures and max(tenant_failures) >= 1
    assert not any("endpoint_id" in dict(labels) for _, labels in samples)


async def test_openapi_document_needs_no_key(api: Api) -> None:
    reply = await api.get("/v1/openapi.json", auth=False)
    assert reply.status == 200
    assert reply.body["openapi"] == "3.1.0"
    assert "/v1/endpoints/{endpoint_id}/events/{event_id}" in reply.body["paths"]
