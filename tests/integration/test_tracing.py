"""OpenTelemetry tracing end to end, against a local OTLP/HTTP collector (an aiohttp
app decoding the protobuf with opentelemetry-proto): a publish that continues an
incoming `traceparent`, through an API-only daemon, a failing first attempt in one
worker and the successful retry in another, is one trace with the right parents,
attributes and no secret; the receiver saw the attempt span's `traceparent` (unless
its endpoint turned that off); with tracing off nothing of OpenTelemetry loads."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dispatcher.store.tenants import create_api_key
from tests.support.receiver import Receiver, Reply

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
PAYLOAD_MARK = "card-4242-4242-secret"


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Collector:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for rs in message.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(Span(
                        s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                        {a.key: _value(a.value) for a in s.attributes}, resource))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = Collector()
    await c.start()
    yield c
    assert c.runner is not None
    await c.runner.cleanup()


def traced(collector: Collector) -> dict[str, str]:
    """A daemon's settings: tracing on, exporting to `collector` every 100 ms."""
    return {"DISPATCHER_TELEMETRY__ENABLED": "true",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100", "DISPATCHER_SERVER__WORKERS": "1"}


async def tenant_key(db_url: str, tenant: str) -> str:
    conn = await asyncpg.connect(db_url)
    try:
        return await create_api_key(conn, tenant)
    finally:
        await conn.close()


async def _until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def test_publish_to_retry_in_another_worker_is_one_trace(
    collector: Collector, daemon_factory: Callable[..., Any], db_url: str,
    make_receiver: Callable[[], Any],
) -> None:
    env = {**traced(collector),
           "DISPATCHER_RETRY_POLICIES__QUICK": '{kind = "fixed", delays = [1.0]}'}
    api_daemon = await daemon_factory(**env, DISPATCHER_SERVER__ROLE="api")
    first = await daemon_factory(**env, DISPATCHER_SERVER__ROLE="worker")
    key = await tenant_key(db_url, "traced")
    receiver: Receiver = await make_receiver()
    quiet: Receiver = await make_receiver()
    receiver.reply_with(Reply(500), then=Reply(200))
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async def call(method: str, path: str, body: Any = None,
                       headers: dict[str, str] | None = None) -> Any:
            async with http.request(method, api_daemon.url + path, json=body,
                                    headers=headers) as resp:
                assert resp.status < 300, await resp.text()
                return await resp.json()

        ep = await call("POST", "/v1/endpoints", {"url": receiver.url, "retry_policy": "quick"})
        off = await call("POST", "/v1/endpoints", {"url": quiet.url,
                                                   "propagate_trace_context": False})
        assert off["propagate_trace_context"] is False
        event = await call("POST", "/v1/events",
                           {"type": "payment.order.updated", "data": {"card": PAYLOAD_MARK}},
                           {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"})
        await receiver.wait_for(1)
        status_path = f"/v1/endpoints/{ep['id']}/events/{event['id']}"

        async def status_is(wanted: str) -> bool:
            return (await call("GET", status_path))["status"] == wanted

        await _until(lambda: status_is("Retrying"))
        await first.stop()  # the retry is the other worker's
        await daemon_factory(**env, DISPATCHER_SERVER__ROLE="worker")
        await receiver.wait_for(2)
        await _until(lambda: status_is("Success"))
        await quiet.wait_for(1)

    def attempts() -> list[Span]:
        return [s for s in collector.spans if s.name == "webhook attempt"
                and s.attributes.get("dispatcher.endpoint_id") == ep["id"]
                and "dispatcher.status" in s.attributes]

    await _until(lambda: len(attempts()) == 2)
    ours = [s for s in collector.spans if s.trace_id == TRACE_ID]
    request = next(s for s in ours if s.name == "POST /v1/events")
    assert request.parent == CALLER_SPAN
    assert request.attributes["http.response.status_code"] == 202
    publish = next(s for s in ours if s.name == "publish")
    assert publish.parent == request.span_id
    assert publish.attributes["dispatcher.event_id"] == event["id"]
    one, two = sorted(attempts(), key=lambda s: s.attributes["dispatcher.attempt"])
    for span in (one, two):
        assert span.trace_id == TRACE_ID and span.parent == publish.span_id
        assert span.resource["dispatcher.role"] == "worker"
    assert one.resource["process.pid"] != two.resource["process.pid"]
    assert one.attributes["dispatcher.status"] == "Retrying"
    assert one.attributes["dispatcher.failure_reason"] == "http_status"
    assert one.attributes["http.response.status_code"] == 500
    assert two.attributes["dispatcher.status"] == "Success"
    assert two.attributes["http.response.status_code"] == 200
    assert one.attributes["dispatcher.queue_wait_ms"] >= 0
    queued = [s for s in ours if s.name == "webhook queued"]
    assert queued and all(s.parent == publish.span_id for s in queued)

    sent = [r.headers.get("traceparent") for r in receiver.requests]
    assert sent == [f"00-{TRACE_ID}-{one.span_id}-01", f"00-{TRACE_ID}-{two.span_id}-01"]
    assert "traceparent" not in quiet.requests[0].headers

    text = json.dumps([[s.attributes, s.resource] for s in collector.spans], default=str)
    secret = ep.get("secret") or ""
    for value in (PAYLOAD_MARK, key, secret, receiver.requests[0].headers["webhook-signature"]):
        assert value and value not in text


def test_with_tracing_off_opentelemetry_is_never_imported(tmp_path: Any) -> None:
    code = ("import sys\n"
            "from dispatcher.config import load_config\n"
            "from dispatcher.daemon import build_app\n"
            "build_app(load_config(environ={}), 'postgresql://unused')\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={"DISPATCHER_DATA_DIR": str(tmp_path),
                                           "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_an_unsampled_caller_is_respected_and_records_nothing(
    collector: Collector, daemon_factory: Callable[..., Any], db_url: str,
    receiver: Receiver,
) -> None:
    daemon = await daemon_factory(**traced(collector))
    key = await tenant_key(db_url, "unsampled")
    unsampled = f"00-{TRACE_ID}-{CALLER_SPAN}-00"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.post(daemon.url + "/v1/endpoints", json={"url": receiver.url}) as r:
            assert r.status == 201
        async with http.post(daemon.url + "/v1/events", headers={"traceparent": unsampled},
                             json={"type": "payment.order.updated", "data": {}}) as r:
            assert r.status == 202
        async with http.get(daemon.url + "/v1/endpoints") as r:  # sampled: a new trace
            assert r.status == 200
    [request] = await receiver.wait_for(1)
    sent = request.headers["traceparent"]  # the caller's trace, still not sampled
    assert sent.startswith(f"00-{TRACE_ID}-") and not int(sent[-2:], 16) & 1
    await _until(lambda: any(s.name == "GET /v1/endpoints" for s in collector.spans))
    await daemon.stop()
    assert not [s for s in collector.spans if s.trace_id == TRACE_ID]


async def test_a_callback_attempt_is_a_span_of_the_request_that_asked(
    collector: Collector, daemon_factory: Callable[..., Any], db_url: str,
    receiver: Receiver,
) -> None:
    receiver.reply_with(then=Reply(200, body=b"ok"))
    daemon = await daemon_factory(**traced(collector))
    key = await tenant_key(db_url, "callbacks")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.post(daemon.url + "/v1/endpoints",
                             json={"url": receiver.url, "kind": "callback"}) as r:
            assert r.status == 201
        async with http.post(daemon.url + "/v1/callbacks",
                             headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
                             json={"type": "withdrawal.approve", "data": {"amount": "10"}}) as r:
            assert r.status == 202, await r.text()
    [request] = await receiver.wait_for(1)

    def attempt() -> Span | None:
        return next((s for s in collector.spans if s.name == "callback attempt"), None)

    span = await _until(attempt)
    asked = next(s for s in collector.spans if s.name == "POST /v1/callbacks")
    assert span.trace_id == TRACE_ID and span.parent == asked.span_id
    assert asked.parent == CALLER_SPAN
    assert span.attributes["dispatcher.kind"] == "callback"
    assert request.headers["traceparent"] == f"00-{TRACE_ID}-{span.span_id}-01"
