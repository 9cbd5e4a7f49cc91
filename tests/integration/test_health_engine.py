"""Endpoint health end to end: a real worker with the health hook installed, real
receivers, real PostgreSQL, a FakeClock. Pausing on failures, telling the owner,
re-driving held deliveries exactly once at a bounded rate, 410 Gone, and the hold
limit followed by a manual retry."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.engine.health import install
from dispatcher.maintenance import Maintenance
from dispatcher.model import DeliveryStatus
from dispatcher.store.deliveries import retry_delivery
from dispatcher.store.health import pause_endpoint, resume_endpoint, set_pause_thresholds
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Receiver, Reply

TYPE = "wallets.transaction.created"
OPS = ["endpoint.paused", "endpoint.failing"]
DAY = 86400.0


@dataclass
class Env:
    h: EngineHarness
    clock: FakeClock
    m: Maintenance

    async def state(self, endpoint: object) -> str:
        state: str = await self.h.pool.fetchval("SELECT state FROM endpoints WHERE id = $1",
                                                endpoint)
        return state

    async def wait_state(self, endpoint: object, state: str, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while await self.state(endpoint) != state:
                await asyncio.sleep(0.02)

    async def count(self, sql: str, *args: object) -> int:
        n: int = await self.h.pool.fetchval(sql, *args)
        return n

    async def quiet(self, receiver: Receiver, seconds: float = 0.3, advance: float = DAY,
                    ) -> int:
        """Move the clock on (a day) and give the worker time: nothing more may arrive."""
        before = len(receiver.requests)
        self.h.advance(advance)
        await asyncio.sleep(seconds)
        assert len(receiver.requests) == before
        return before


@pytest.fixture
async def env(db_url: str, make_config: Callable[..., Config]) -> AsyncIterator[Env]:
    config = make_config(health__resume_rate_per_second="5")
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        worker = await h.start_worker()
        install(worker, config)
        yield Env(h, clock, Maintenance(h.pool, config, clock))


def webhook_ids(receiver: Receiver) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in receiver.requests)


async def test_a_failing_receiver_is_paused_its_owner_told_and_resume_redrives_once(
    env: Env, make_receiver: Callable[[], object]
) -> None:
    hook: Receiver = await make_receiver()  # type: ignore[assignment]
    ops: Receiver = await make_receiver()  # type: ignore[assignment]
    hook.reply_with(then=Reply(status=500))
    h = env.h
    tenant = await make_tenant(h.pool)
    endpoint, _ = await make_endpoint(h.pool, h.box, tenant, hook.url, retry_policy="okx",
                                      max_in_flight=1, event_types=[TYPE])
    await make_endpoint(h.pool, h.box, tenant, ops.url, event_types=OPS)
    await set_pause_thresholds(h.pool, endpoint, env.clock.now(), window_threshold=5,
                               total_threshold=None)

    first = await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(5)])
    await env.wait_state(endpoint, "paused")
    assert len(hook.requests) == 5
    # The owner hears of it on the endpoint subscribed to operational events.
    # (Warnings at 50/70/90% come first, on their own path: wait for the pause.)
    for _ in range(200):
        told = [json.loads(r.body) for r in ops.requests]
        if any(t["type"] == "endpoint.paused" for t in told):
            break
        await asyncio.sleep(0.05)
    paused = [t for t in told if t["type"] == "endpoint.paused"]
    assert len(paused) == 1, told
    assert paused[0]["data"]["endpoint_id"] == str(endpoint)
    assert paused[0]["data"]["failures_in_window"] == 5
    assert {t["type"] for t in told} <= {"endpoint.paused", "endpoint.failing"}

    # Nothing more is attempted: neither the retries nor new events, which are held.
    later = await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(5, 8)])
    await env.quiet(hook)
    held = await env.count("SELECT count(*) FROM deliveries WHERE endpoint_id = $1 "
                           "AND held_since IS NOT NULL AND status < 2", endpoint)
    assert held == 8
    assert await env.count("SELECT min(retries_left) FROM deliveries WHERE endpoint_id = $1",
                           endpoint) == 6  # one retry spent by the attempt, none by the hold

    # The receiver recovers; resume re-drives each held delivery exactly once.
    hook.reply_with(then=Reply(status=200))
    async with h.pool.acquire() as conn:
        change = await resume_endpoint(conn, endpoint, env.clock.now(), tenant_id=tenant)
    assert change.deliveries == 8
    sent_before = len(hook.requests)
    for _ in range(3):  # 5 per second: two chunks and an empty one that ends the re-drive
        await env.m.redrive()
        env.h.advance(1)
    await hook.wait_for(sent_before + 8)
    await h.wait_status([DeliveryStatus.SUCCESS], 8 + len(told))
    await env.quiet(hook)
    redriven = Counter(r.headers["webhook-id"] for r in hook.requests[sent_before:])
    assert set(redriven) == {str(e.id) for e in first + later}
    assert set(redriven.values()) == {1}
    assert await env.count("SELECT count(*) FROM endpoints WHERE redrive_from IS NOT NULL") == 0


async def test_redrive_is_paced_at_the_configured_rate(env: Env, receiver: Receiver) -> None:
    h = env.h
    tenant = await make_tenant(h.pool)
    endpoint, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url)
    async with h.pool.acquire() as conn:
        await pause_endpoint(conn, endpoint, "manual", env.clock.now())
    events = await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(12)])
    async with h.pool.acquire() as conn:
        await resume_endpoint(conn, endpoint, env.clock.now())

    assert await env.m.redrive() == 5  # one second's worth at 5 per second
    assert await env.m.redrive() == 0  # however often it runs, on however many daemons
    await receiver.wait_for(5)
    await env.quiet(receiver, advance=0.9)  # nothing more within that second
    env.h.advance(0.1)
    assert await env.m.redrive() == 5
    await receiver.wait_for(10)
    env.h.advance(1)
    assert await env.m.redrive() == 2
    env.h.advance(1)
    assert await env.m.redrive() == 0
    await receiver.wait_for(12)
    await h.wait_status([DeliveryStatus.SUCCESS], 12)
    await env.quiet(receiver)
    assert webhook_ids(receiver) == Counter({str(e.id): 1 for e in events})


async def test_a_receiver_answering_410_disables_its_endpoint_after_one_attempt(
    env: Env, receiver: Receiver
) -> None:
    h = env.h
    tenant = await make_tenant(h.pool)
    endpoint, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url, retry_policy="okx")
    receiver.reply_with(Reply(status=500), then=Reply(status=410))
    (waiting,) = await h.publish(tenant, (TYPE, {"n": 0}))  # fails once, retries in 1 min
    await h.wait_attempts(1)
    (gone,) = await h.publish(tenant, (TYPE, {"n": 1}))
    await env.wait_state(endpoint, "disabled")
    assert len(receiver.requests) == 2  # the failure, then the one 410
    assert receiver.requests[-1].headers["webhook-id"] == str(gone.id)
    reason = await h.pool.fetchval("SELECT state_reason FROM endpoints WHERE id = $1", endpoint)
    assert "410" in reason

    more = await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(2, 5)])
    await env.quiet(receiver)  # the retry that was due and the new events: none is sent
    # Held, not dropped, and the hold limit does not fail them while it is disabled.
    env.clock.advance(4 * DAY)
    assert await env.m.expire_holds() == {}
    assert await env.count("SELECT count(*) FROM deliveries WHERE held_since IS NOT NULL "
                           "AND status < 2") == 5

    # Re-enabled, every held delivery goes out once.
    receiver.reply_with(then=Reply(status=200))
    async with h.pool.acquire() as conn:
        await resume_endpoint(conn, endpoint, env.clock.now())
    await env.m.redrive()
    env.h.advance(1)
    await receiver.wait_for(7)
    await h.wait_status([DeliveryStatus.SUCCESS], 5)
    await env.quiet(receiver)
    ids = webhook_ids(receiver)
    assert ids[str(waiting.id)] == 2 and ids[str(gone.id)] == 2
    assert all(ids[str(e.id)] == 1 for e in more)


async def test_a_delivery_held_past_the_limit_fails_and_a_retry_sends_it(
    env: Env, receiver: Receiver
) -> None:
    h = env.h
    tenant = await make_tenant(h.pool)
    endpoint, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url)
    async with h.pool.acquire() as conn:
        await pause_endpoint(conn, endpoint, "manual", env.clock.now())
    (event,) = await h.publish(tenant, (TYPE, {"n": 1}))

    env.clock.advance(3 * DAY - 1)
    assert await env.m.expire_holds() == {}
    env.clock.advance(2)
    assert await env.m.expire_holds() == {endpoint: 1}
    row = await h.pool.fetchrow("SELECT * FROM deliveries WHERE event_id = $1", event.id)
    assert row["status"] == DeliveryStatus.FAILED
    assert row["failure_reason"] == "endpoint_paused"
    assert row["retries_left"] == 7 and row["attempts"] == 0
    assert receiver.requests == []

    async with h.pool.acquire() as conn:
        await resume_endpoint(conn, endpoint, env.clock.now())
        assert await env.m.redrive() == 0  # it is not held any more: nothing re-driven
        assert await retry_delivery(conn, endpoint, event.id, env.clock.now()) is None
    env.h.advance(0)
    await receiver.wait_for(1)
    await h.wait_status([DeliveryStatus.SUCCESS], 1)
    assert receiver.requests[0].headers["webhook-id"] == str(event.id)
