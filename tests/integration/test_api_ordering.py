"""Ordering keys and backpressure through the HTTP API of a running daemon: publish
takes `ordering_key` (single and batch), the status lookup shows it and the event
blocking a waiting one, and endpoints show their adaptive limit."""

from __future__ import annotations

import json

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.receiver import Receiver, Reply

api_server, http, api, other = support.api_server, support.http, support.api, support.other


async def test_publish_takes_an_ordering_key_and_the_lookup_shows_who_blocks(
    api: Api, receiver: Receiver
) -> None:
    # The head (data 1) keeps failing: its key waits, the unkeyed event goes.
    receiver.script = lambda req, n: Reply(500) if json.loads(req.body)["data"] == 1 else Reply()
    ep = await api.create_endpoint(receiver.url, retry_policy="okx")
    assert ep["effective_max_in_flight"] == ep["max_in_flight"]
    assert ep["rate_limited_until_timestamp"] is None
    head = await api.post("/v1/events", {"type": "block", "data": 1, "ordering_key": "w-1"})
    assert head.status == 202, head
    batch = await api.post("/v1/events/batch", {"events": [
        {"type": "block", "data": 2, "ordering_key": "w-1"},
        {"type": "block", "data": 3},
    ]})
    assert batch.status == 202, batch
    second, unkeyed = batch.body["data"]
    await api.wait_for_status(ep["id"], unkeyed["id"], "Success")
    await api.wait_for_status(ep["id"], head.body["id"], "Retrying")
    waiting = (await api.get(f"/v1/endpoints/{ep['id']}/events/{second['id']}")).body
    assert waiting["ordering_key"] == "w-1"
    assert waiting["blocked_by"] == head.body["id"]
    assert waiting["status"] == "Pending" and waiting["next_retry_timestamp"] is None
    first = (await api.get(f"/v1/endpoints/{ep['id']}/events/{head.body['id']}")).body
    assert first["ordering_key"] == "w-1" and first["blocked_by"] is None
    event = (await api.get(f"/v1/events/{second['id']}")).body
    assert event["deliveries"][0]["blocked_by"] == head.body["id"]
    assert len(receiver.requests) == 2  # the head and the unkeyed event, never the second


async def test_a_bad_ordering_key_is_refused_and_nothing_is_stored(
    api: Api, receiver: Receiver
) -> None:
    await api.create_endpoint(receiver.url)
    for bad in ("", "k" * 201, 5, ["k"]):
        reply = await api.post("/v1/events", {"type": "block", "data": 1, "ordering_key": bad})
        assert reply.status == 422 and reply.error["field"] == "ordering_key", (bad, reply)
        reply = await api.post("/v1/events/batch", {"events": [
            {"type": "block", "data": 1, "ordering_key": "ok"},
            {"type": "block", "data": 1, "ordering_key": bad}]})
        assert reply.status == 422 and reply.error["field"] == "events[1].ordering_key", reply
    listed = await api.get("/v1/events")
    assert listed.body["data"] == []
    ok = await api.post("/v1/events", {"type": "block", "data": 1, "ordering_key": "k" * 200})
    assert ok.status == 202, ok
