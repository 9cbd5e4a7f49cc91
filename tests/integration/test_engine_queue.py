"""The queue under load: isolation between endpoints, exactly-once across processes,
crash safety with kill -9, and the claim query's plan at a million rows."""

from __future__ import annotations

import asyncio
import re
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from dispatcher.clock import SystemClock
from dispatcher.config import Config
from dispatcher.model import DeliveryStatus
from dispatcher.secretbox import load_secret_box
from dispatcher.store import deliveries
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Receiver, Reply


async def _publish_many(h: EngineHarness, tenant: UUID, count: int, type_: str = "block") -> None:
    for start in range(0, count, 500):
        n = min(500, count - start)
        await h.publish(tenant, *[(type_, {"n": start + i}) for i in range(n)])


@pytest.mark.parametrize(("dead_slots", "concurrency"), [(10, 100), (20, 20)])
async def test_dead_endpoint_does_not_delay_a_healthy_one(
    db_url: str, make_config: Callable[..., Config], make_receiver: Callable[[], Any],
    dead_slots: int, concurrency: int,
) -> None:
    """Also when the dead endpoint's max_in_flight is the process's whole concurrency:
    one endpoint never holds more than half of it."""
    config = make_config(delivery__max_concurrency=str(concurrency))
    held = min(dead_slots, concurrency // 2)
    dead: Receiver = await make_receiver()
    healthy: Receiver = await make_receiver()
    dead.reply_with(then=Reply(delay=5))  # every request times out
    async with EngineHarness(db_url, config, SystemClock()) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, dead.url, event_types=["dead"],
                            timeout_seconds=2, max_in_flight=dead_slots)
        await make_endpoint(h.pool, h.box, tenant, healthy.url, event_types=["ok"])
        await _publish_many(h, tenant, 2000, "dead")  # a backlog far beyond its slots
        await h.start_worker()
        await dead.wait_for(held)  # the dead endpoint's slots are all taken now
        latencies = []
        for i in range(40):
            t0 = time.monotonic()
            await h.publish(tenant, ("ok", {"i": i}))
            await healthy.wait_for(i + 1, timeout=5)
            latencies.append(healthy.requests[i].at - t0)
            await asyncio.sleep(0.02)
        # Never more than its slots at once at the dead endpoint.
        assert len(dead.requests) <= held + held * 2
    p95 = statistics.quantiles(latencies, n=20)[-1]
    assert p95 < 0.25, f"healthy endpoint p95 latency {p95:.3f}s while another hangs"


async def _received_ids(receiver: Receiver) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in receiver.requests)


async def test_two_processes_deliver_each_event_exactly_once(
    db_url: str, config: Config, receiver: Receiver, daemon_factory: Callable[..., Any]
) -> None:
    async with EngineHarness(db_url, config, SystemClock()) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, receiver.url, max_in_flight=50)
        env = {"DISPATCHER_DELIVERY__CLAIM_BATCH_SIZE": "100",
               "DISPATCHER_DELIVERY__POLL_INTERVAL_SECONDS": "0.2"}
        await daemon_factory(**env)
        await daemon_factory(**env)
        await _publish_many(h, tenant, 5000)
        await receiver.wait_for(5000, timeout=60)
        await h.wait_status([DeliveryStatus.SUCCESS], 5000)
        await asyncio.sleep(0.5)  # anything sent twice would arrive now
        attempts = await h.pool.fetchval("SELECT count(*) FROM attempts")
    ids = await _received_ids(receiver)
    assert len(ids) == 5000
    assert max(ids.values()) == 1
    assert len(receiver.requests) == 5000
    assert attempts == 5000


async def test_kill_9_mid_burst_loses_nothing(
    db_url: str, config: Config, receiver: Receiver, daemon_factory: Callable[..., Any]
) -> None:
    receiver.reply_with(then=Reply(delay=0.002))
    env = {"DISPATCHER_DELIVERY__LEASE_SECONDS": "5"}
    async with EngineHarness(db_url, config, SystemClock()) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, receiver.url, max_in_flight=100)
        await _publish_many(h, tenant, 10_000)
        daemon = await daemon_factory(**env)
        await receiver.wait_for(2000, timeout=60)
        daemon.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(daemon.proc.wait)
        # What the dead process held: sent or about to be, outcome not written.
        in_flight = await h.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL AND status < 2")
        assert in_flight > 0, "the kill should land mid-burst"
        received_at_kill = len(receiver.requests)
        assert received_at_kill < 10_000
        await daemon_factory(**env)
        await h.wait_status([DeliveryStatus.SUCCESS], 10_000, timeout=90)
    ids = await _received_ids(receiver)
    assert len(ids) == 10_000  # every event delivered
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates <= in_flight


async def test_claim_uses_the_partial_index_at_a_million_rows(
    pool: asyncpg.Pool, config: Config
) -> None:
    box = load_secret_box(config)
    tenant = await make_tenant(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO endpoints (tenant_id, url, retry_policy)
               SELECT $1, 'https://example.com/' || g, 'standard'
               FROM generate_series(1, 1000) g""", tenant)
        await make_endpoint(conn, box, tenant, "https://example.com/x")
        await conn.execute(
            """INSERT INTO events (id, tenant_id, type, body, created_at)
               SELECT gen_random_uuid(), $1, 'block', '{}'::bytea, now()
               FROM generate_series(1, 1000)""", tenant)
        # 1,000,000 deliveries: mostly finished history, a few due, some in the future.
        await conn.execute(
            """INSERT INTO deliveries (event_id, endpoint_id, status, retries_left,
                                       next_attempt_at, created_at, updated_at)
               SELECT ev.id, ep.id,
                      CASE WHEN random() < 0.995 THEN 2 ELSE (random() * 1)::int END,
                      3, now() + (random() * 7200 - 60) * interval '1 second', now(), now()
               FROM events ev CROSS JOIN (SELECT id FROM endpoints LIMIT 1000) ep""")
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1_000_000
        # Ordering keys on a tenth of them, and a few endpoints in a rate-limit backoff.
        await conn.execute("UPDATE deliveries SET ordering_key = 'k' || (id % 1000) "
                           "WHERE id % 10 = 0")
        await conn.execute("UPDATE endpoints SET rate_limited_until = now() + interval '1 hour'"
                           " WHERE id IN (SELECT id FROM endpoints LIMIT 20)")
        await conn.execute("VACUUM ANALYZE deliveries")
        await conn.execute("ANALYZE")
        # As the daemon claims (CLAIM_SETTINGS), and with the server's defaults.
        plans = [await _claim_plan(conn, deliveries.CLAIM_SETTINGS), await _claim_plan(conn, {})]
    for plan in plans:
        assert "deliveries_due" in plan, plan
        assert "deliveries_ordering" in plan, plan  # the key check reads its own index
        assert "Seq Scan on deliveries" not in plan, plan


async def _claim_plan(conn: asyncpg.Connection, settings: dict[str, str]) -> str:
    now = SystemClock().now()
    async with conn.transaction():
        for name, value in settings.items():
            await conn.execute(f"SET LOCAL {name} = {value}")
        rows = await conn.fetch("EXPLAIN " + deliveries._CLAIM, 230, UUID(int=1), now, now,
                                [], 23, datetime(1970, 1, 1, tzinfo=UTC),
                                deliveries.DEFAULT_CLAIM_MAX_BYTES)
    return "\n".join(r[0] for r in rows)


async def test_the_claim_walks_the_due_index_with_statistics_from_an_empty_queue(
    pool: asyncpg.Pool, config: Config
) -> None:
    """A burst lands in a queue analysed while empty: both lanes still read the due
    index in order and stop at their limit (no sort of every due row)."""
    tenant = await make_tenant(pool)
    async with pool.acquire() as conn:
        endpoint, _ = await make_endpoint(conn, load_secret_box(config), tenant,
                                       "https://example.com/x")
        await conn.execute("VACUUM ANALYZE deliveries")
        await conn.execute(
            """WITH ev AS (
                   INSERT INTO events (id, tenant_id, type, body, created_at)
                   SELECT gen_random_uuid(), $1, 'x', '{}'::bytea,
                          now() - interval '1 minute' + g * interval '1 ms'
                   FROM generate_series(1, 50000) g RETURNING id, created_at)
               INSERT INTO deliveries (event_id, endpoint_id, retries_left, next_attempt_at,
                                       created_at, updated_at)
               SELECT id, $2, 7, created_at, created_at, created_at FROM ev""",
            tenant, endpoint)
        plan = await _claim_plan(conn, deliveries.CLAIM_SETTINGS)
        default_plan = await _claim_plan(conn, {})
    assert plan.count("using deliveries_due") == 2, plan
    assert "Index Scan Backward using deliveries_due" in plan, plan
    assert not _DUE_ROW_SORT.search(plan), plan
    # What the settings are for: without them this plan sorts every due row.
    assert _DUE_ROW_SORT.search(default_plan), default_plan
    # The only sorts are of the rows already claimed (at most the claim's limit), to
    # sum the body sizes of their events.
    keys = sorted(line.strip() for line in plan.splitlines() if "Sort Key:" in line)
    assert keys == ["Sort Key: g.first", "Sort Key: picked.event_id"], plan


# A sort of the due rows themselves (what walking the due index in order avoids).
_DUE_ROW_SORT = re.compile(r"Sort Key: c(_\d+)?\.next_attempt_at")


async def test_sigterm_finishes_in_flight_and_gives_back_the_rest(
    db_url: str, config: Config, receiver: Receiver, daemon_factory: Callable[..., Any]
) -> None:
    receiver.reply_with(then=Reply(delay=1.0))
    async with EngineHarness(db_url, config, SystemClock()) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, receiver.url, max_in_flight=5)
        await _publish_many(h, tenant, 200)
        daemon = await daemon_factory(DISPATCHER_SERVER__GRACE_PERIOD_SECONDS="5")
        await receiver.wait_for(5)
        assert await daemon.stop(signal.SIGTERM) == 0
        sent = len(receiver.requests)
        leased = await h.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")
        done = await h.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 2")
        # Given back due now, or (rows deferred for the saturated endpoint) within
        # the 2 s deferral; never parked until a lease expires.
        due_soon = await h.pool.fetchval(
            "SELECT count(*) FROM deliveries"
            " WHERE status < 2 AND next_attempt_at <= now() + interval '2 seconds'")
    assert leased == 0  # nothing left leased to a process that is gone
    assert done == sent  # every request that went out finished and was recorded
    assert due_soon == 200 - sent
