"""Event bodies in a claim: read once per event and shared by its deliveries, and a
claim bounded by the bytes of the distinct bodies it takes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.engine.memory import HeapTrimmer
from dispatcher.retry import load_policies
from dispatcher.secretbox import load_secret_box
from dispatcher.store import deliveries
from dispatcher.store.events import NewEvent, publish_events
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Receiver

MIB = 1024 * 1024
LEASE = timedelta(seconds=60)


async def _fan_out(pool: asyncpg.Pool, config: Config, clock: FakeClock, endpoints: int,
                   events: list[dict[str, Any]]) -> list[UUID]:
    """`endpoints` endpoints subscribed to every event; each event published a second
    after the one before (so the claim's order is the publish order). Event ids."""
    tenant = await make_tenant(pool)
    box = load_secret_box(config)
    for i in range(endpoints):
        await make_endpoint(pool, box, tenant, f"https://example.com/{i}")
    ids = []
    for data in events:
        async with pool.acquire() as conn:
            (published,) = await publish_events(
                conn, tenant, [NewEvent("block", data)], policies=load_policies(config),
                now=clock.now(), idempotency_window=timedelta(days=1))
        ids.append(published.id)
        clock.advance(1)
    return ids


async def _claim(pool: asyncpg.Pool, clock: FakeClock, limit: int = 500,
                 **kwargs: Any) -> list[deliveries.ClaimedDelivery]:
    async with pool.acquire() as conn:
        return await deliveries.claim_due(conn, uuid.uuid4(), limit, clock.now(),
                                          clock.now() + LEASE, **kwargs)


async def test_the_deliveries_of_one_event_share_one_body(
    pool: asyncpg.Pool, config: Config
) -> None:
    clock = FakeClock()
    first, second = await _fan_out(pool, config, clock, 40,
                                   [{"blob": "a" * 100_000}, {"blob": "b" * 100_000}])
    rows = await _claim(pool, clock)
    assert len(rows) == 80
    stored = {r["id"]: r["body"] for r in await pool.fetch("SELECT id, body FROM events")}
    by_event: dict[UUID, list[deliveries.ClaimedDelivery]] = {first: [], second: []}
    for row in rows:
        by_event[row.event_id].append(row)
    for event_id, claimed in by_event.items():
        assert len(claimed) == 40
        assert claimed[0].body == stored[event_id]
        # One bytes object for all 40, not 40 copies of it.
        assert all(r.body is claimed[0].body for r in claimed)
    assert by_event[first][0].body is not by_event[second][0].body


async def test_the_claim_statement_returns_each_body_once(
    pool: asyncpg.Pool, config: Config
) -> None:
    """Also when both lanes take the same rows (fewer due than the claim's limit)."""
    clock = FakeClock()
    await _fan_out(pool, config, clock, 30, [{"n": 1}, {"n": 2}, {"n": 3}])
    rows = await pool.fetch(deliveries._CLAIM, 450, uuid.uuid4(), clock.now(),
                            clock.now() + LEASE, [], 50, datetime(1970, 1, 1, tzinfo=UTC),
                            deliveries.DEFAULT_CLAIM_MAX_BYTES)
    assert len(rows) == 90
    assert len({r["id"] for r in rows}) == 90
    with_body = [r for r in rows if r["body"] is not None]
    assert sorted(r["event_id"] for r in with_body) == sorted({r["event_id"] for r in rows})


async def test_claim_max_bytes_bounds_the_events_a_claim_leases(
    pool: asyncpg.Pool, config: Config
) -> None:
    """Three events of just under 1 MiB each to 5 endpoints, a cap of 2 MiB: the claim
    leases the 10 deliveries of the first two events; the third's stay due."""
    clock = FakeClock()
    blob = "x" * (MIB - 1000)
    events = await _fan_out(pool, config, clock, 5,
                            [{"n": i, "blob": blob} for i in range(3)])
    sizes = await pool.fetch("SELECT id, octet_length(body) AS n FROM events")
    assert all(MIB - 1000 < r["n"] < MIB for r in sizes)
    rows = await _claim(pool, clock, max_bytes=2 * MIB)
    assert len(rows) == 10
    assert {r.event_id for r in rows} == set(events[:2])
    due = await pool.fetch(
        "SELECT event_id, lease_owner, next_attempt_at FROM deliveries WHERE event_id = $1",
        events[2])
    assert len(due) == 5
    assert all(r["lease_owner"] is None and r["next_attempt_at"] <= clock.now() for r in due)
    # The next claim takes them.
    rest = await _claim(pool, clock, max_bytes=2 * MIB)
    assert {r.event_id for r in rest} == {events[2]} and len(rest) == 5


async def test_a_claim_takes_the_first_event_whatever_its_size(
    pool: asyncpg.Pool, config: Config
) -> None:
    clock = FakeClock()
    events = await _fan_out(pool, config, clock, 3, [{"n": 1}, {"n": 2}])
    rows = await _claim(pool, clock, max_bytes=1)
    assert {r.event_id for r in rows} == {events[0]} and len(rows) == 3
    # The newest lane's first event goes the same way when it is the whole claim.
    rows = await _claim(pool, clock, newest=10, max_bytes=1)
    assert {r.event_id for r in rows} == {events[1]} and len(rows) == 3


async def test_a_worker_with_a_small_claim_max_bytes_delivers_everything(
    db_url: str, make_config: Callable[..., Config], receiver: Receiver
) -> None:
    """One event per claim (a cap below any body): every delivery still arrives."""
    config = make_config(delivery__claim_max_bytes="1")
    async with EngineHarness(db_url, config) as h:
        tenant = await make_tenant(h.pool)
        for i in range(3):
            await make_endpoint(h.pool, h.box, tenant, f"{receiver.url}/{i}")
        published = await h.publish(tenant, *[("block", {"n": i}) for i in range(4)])
        await h.start_worker()
        await receiver.wait_for(12)
        assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
            str(e.id) for e in published for _ in range(3))


async def test_an_idle_worker_gives_the_heap_back_after_its_claims(
    db_url: str, make_config: Callable[..., Config], receiver: Receiver
) -> None:
    config = make_config(delivery__poll_interval_seconds="0.05")
    trims: list[int] = []
    async with EngineHarness(db_url, config) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, receiver.url)
        worker = await h.start_worker()

        def trim(pad: int) -> int:
            trims.append(pad)
            return 1

        worker._claimer.heap = HeapTrimmer(after_bytes=1000, trim=trim)
        await h.publish(tenant, *[("block", {"blob": "x" * 600}) for _ in range(2)])
        await receiver.wait_for(2)
        async with asyncio.timeout(5):
            while not trims:
                await asyncio.sleep(0.02)
        assert trims == [0]
