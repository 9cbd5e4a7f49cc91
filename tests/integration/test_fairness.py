"""Fairness across tenants: one tenant's backlog of 100,000 deliveries to slow
receivers does not hold back another tenant's new events (a real daemon, real
receivers); and the limits that keep one call from making such a backlog."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatcher.clock import SystemClock
from dispatcher.config import Config
from dispatcher.store.events import NewEvent
from dispatcher.store.tenants import create_api_key
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Receiver, Reply

BACKLOG_ENDPOINTS = 200
BACKLOG_EVENTS = 500  # x 200 endpoints = 100,000 deliveries


async def test_a_tenants_backlog_does_not_delay_another_tenants_new_events(
    db_url: str, config: Config, daemon_factory: Callable[..., Any]
) -> None:
    busy, quick = Receiver(), Receiver()
    await busy.start()
    await quick.start()
    busy.reply_with(then=Reply(delay=2.0))  # slow: the backlog drains at ~50/s/process
    latencies: list[float] = []
    try:
        async with EngineHarness(db_url, config, SystemClock()) as h:
            flood = await make_tenant(h.pool, "flood")
            other = await make_tenant(h.pool, "other")
            for _ in range(BACKLOG_ENDPOINTS):
                await make_endpoint(h.pool, h.box, flood, busy.url, timeout_seconds=10)
            await make_endpoint(h.pool, h.box, other, quick.url)
            await h.publish(flood, *[NewEvent("block", {"n": i}) for i in range(BACKLOG_EVENTS)])
            assert await h.pool.fetchval("SELECT count(*) FROM deliveries") == 100_000
            await daemon_factory()
            await busy.wait_for(200, timeout=30)  # the backlog is being worked on
            for i in range(100):
                started = time.monotonic()
                await h.publish(other, NewEvent("block", {"i": i}))
                await quick.wait_for(i + 1, timeout=10)
                latencies.append(quick.requests[i].at - started)
                await asyncio.sleep(0.01)
            left = await h.pool.fetchval("SELECT count(*) FROM deliveries WHERE status < 2")
    finally:
        await busy.stop()
        await quick.stop()
    p99 = statistics.quantiles(latencies, n=100)[-1]
    assert left > 90_000  # the backlog was still there throughout
    assert p99 < 1.0, f"p99 {p99:.3f}s, median {statistics.median(latencies):.3f}s"


async def test_endpoints_per_tenant_and_deliveries_per_publish_are_limited(
    db_url: str, daemon_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """Through the API of a daemon with small limits: each refusal names its limit,
    and nothing is stored."""
    daemon = await daemon_factory(DISPATCHER_SERVER__MAX_ENDPOINTS_PER_TENANT="3",
                                  DISPATCHER_SERVER__MAX_DELIVERIES_PER_PUBLISH="5",
                                  DISPATCHER_SERVER__MAX_EVENT_TYPES_PER_TENANT="4",
                                  DISPATCHER_DELIVERY__ENABLED="false")
    conn = await asyncpg.connect(db_url)
    try:
        key = await create_api_key(conn, "limited")
    finally:
        await conn.close()
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(daemon.url, headers=headers) as http:

        async def post(path: str, body: Any) -> tuple[int, Any]:
            async with http.post(path, json=body) as resp:
                return resp.status, await resp.json()

        for _ in range(3):
            status, _ = await post("/v1/endpoints", {"url": receiver.url})
            assert status == 201
        status, body = await post("/v1/endpoints", {"url": receiver.url})
        assert status == 422, body
        assert body["error"]["code"] == "endpoint_limit_reached"
        assert "server.max_endpoints_per_tenant" in body["error"]["message"]
        # 3 endpoints: one event makes 3 deliveries, a batch of two makes 6 > 5.
        status, _ = await post("/v1/events", {"type": "block", "data": 1})
        assert status == 202
        status, body = await post("/v1/events/batch", {"events": [
            {"type": "block", "data": 2}, {"type": "block", "data": 3}]})
        assert status == 413, body
        assert body["error"]["code"] == "delivery_limit_reached"
        assert "server.max_deliveries_per_publish" in body["error"]["message"]
        assert "6 deliveries" in body["error"]["message"]
        # The same with idempotency keys (a transaction) and with ordering keys (the
        # keyed statement): refused, and nothing of either is stored.
        for extra in ({"idempotency_key": "k"}, {"ordering_key": "o"}):
            status, body = await post("/v1/events/batch", {"events": [
                {"type": "block", "data": 4, **extra}, {"type": "block", "data": 5}]})
            assert status == 413, body
            assert body["error"]["code"] == "delivery_limit_reached"
        async with http.get("/v1/events") as resp:
            assert [e["data"] for e in (await resp.json())["data"]] == [1]
        async with http.get("/v1/endpoints") as resp:
            assert len((await resp.json())["data"]) == 3
        # Event types: 8 racing creates under a limit of 4 make exactly 4.
        made = await asyncio.gather(*(post("/v1/event-types", {"name": f"limited.{i}"})
                                      for i in range(8)))
        assert sorted(status for status, _ in made) == [201] * 4 + [422] * 4
        refused = next(body for status, body in made if status == 422)
        assert refused["error"]["code"] == "event_type_limit_reached"
        assert "server.max_event_types_per_tenant" in refused["error"]["message"]


async def test_listeners_count_toward_the_endpoint_limit(
    db_url: str, daemon_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """`GET /v1/listen` creates an endpoint: it is refused at the limit like any other
    create, before the websocket upgrade, and leaves nothing behind."""
    daemon = await daemon_factory(DISPATCHER_SERVER__MAX_ENDPOINTS_PER_TENANT="3",
                                  DISPATCHER_DELIVERY__ENABLED="false")
    conn = await asyncpg.connect(db_url)
    try:
        key = await create_api_key(conn, "listening")
    finally:
        await conn.close()
    headers = {"Authorization": f"Bearer {key}"}
    listen = "/v1/listen?forward_to=http://127.0.0.1:9/hook"
    async with aiohttp.ClientSession(daemon.url, headers=headers) as http:
        for _ in range(2):
            async with http.post("/v1/endpoints", json={"url": receiver.url}) as resp:
                assert resp.status == 201
        async with http.ws_connect(listen) as ws:  # the third endpoint: allowed
            ready = await ws.receive_json(timeout=10)
            assert ready["type"] == "ready"
            for _ in range(3):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with http.ws_connect(listen):
                        pass
                assert refused.value.status == 422
            async with http.get(listen, headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                                 "Sec-WebSocket-Version": "13",
                                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
                                ) as resp:
                body = await resp.json()
                assert resp.status == 422 and body["error"]["code"] == "endpoint_limit_reached"
                assert "server.max_endpoints_per_tenant" in body["error"]["message"]
            async with http.get("/v1/endpoints") as resp:
                assert len((await resp.json())["data"]) == 3


async def test_the_delivery_limit_is_counted_when_a_tenant_has_more_endpoints_than_allowed(
    db_url: str, daemon_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """Endpoints made before the limit was lowered still exist: one event fanning out
    to 5 of them is 5 deliveries, over a per-publish limit of 4, whatever the endpoint
    limit says the most could be."""
    daemon = await daemon_factory(DISPATCHER_SERVER__MAX_ENDPOINTS_PER_TENANT="3",
                                  DISPATCHER_SERVER__MAX_DELIVERIES_PER_PUBLISH="4",
                                  DISPATCHER_DELIVERY__ENABLED="false")
    conn = await asyncpg.connect(db_url)
    try:
        key = await create_api_key(conn, "grandfathered")
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(daemon.url, headers=headers) as http:
            for _ in range(3):
                async with http.post("/v1/endpoints", json={"url": receiver.url}) as resp:
                    assert resp.status == 201
            columns = ", ".join(r["column_name"] for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'endpoints' AND column_name <> 'id'"))
            await conn.execute(f"INSERT INTO endpoints ({columns}) SELECT {columns}"
                               " FROM endpoints LIMIT 2")  # as if made under a higher limit
            async with http.post("/v1/events", json={"type": "block", "data": 1}) as resp:
                body = await resp.json()
                assert resp.status == 413, body
                assert body["error"]["code"] == "delivery_limit_reached"
                assert "5 deliveries" in body["error"]["message"]
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
    finally:
        await conn.close()
