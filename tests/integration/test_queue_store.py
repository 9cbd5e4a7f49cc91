"""The queue's SQL on its own: claims, holds and releases against real rows."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.retry import load_policies
from dispatcher.secretbox import load_secret_box
from dispatcher.store import deliveries
from dispatcher.store.events import NewEvent, publish_events
from tests.support.factories import make_endpoint, make_tenant


async def _one_claimed(pool: asyncpg.Pool, config: Config, clock: FakeClock) -> tuple[
        uuid.UUID, uuid.UUID, deliveries.ClaimedDelivery]:
    tenant = await make_tenant(pool)
    endpoint, _ = await make_endpoint(pool, load_secret_box(config), tenant,
                                      "http://127.0.0.1:9/")
    async with pool.acquire() as conn:
        await publish_events(conn, tenant, [NewEvent("block", {})],
                             policies=load_policies(config), now=clock.now(),
                             idempotency_window=timedelta(days=1))
    owner = uuid.uuid4()
    (row,) = await deliveries.claim_due(pool, owner, 10, clock.now(),  # type: ignore[arg-type]
                                        clock.now() + timedelta(seconds=60))
    return endpoint, owner, row


async def test_hold_holds_rows_of_a_paused_endpoint(pool: asyncpg.Pool, config: Config) -> None:
    clock = FakeClock()
    endpoint, owner, row = await _one_claimed(pool, config, clock)
    await pool.execute("UPDATE endpoints SET state = 'paused' WHERE id = $1", endpoint)
    await deliveries.hold(pool, [row.id], owner, clock.now())  # type: ignore[arg-type]
    got = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", row.id)
    assert got is not None
    assert got["held_since"] == clock.now() and got["lease_owner"] is None
    assert got["next_attempt_at"] == await pool.fetchval("SELECT 'infinity'::timestamptz")


async def test_hold_gives_back_due_now_if_the_endpoint_was_resumed(
    pool: asyncpg.Pool, config: Config
) -> None:
    """A worker's cached copy said paused, but the endpoint is active again."""
    clock = FakeClock()
    _, owner, row = await _one_claimed(pool, config, clock)
    await deliveries.hold(pool, [row.id], owner, clock.now())  # type: ignore[arg-type]
    got = await pool.fetchrow("SELECT * FROM deliveries WHERE id = $1", row.id)
    assert got is not None
    assert got["held_since"] is None and got["lease_owner"] is None
    assert got["next_attempt_at"] == clock.now()


async def test_claim_skips_rows_leased_by_another_worker(
    pool: asyncpg.Pool, config: Config
) -> None:
    clock = FakeClock()
    _, _, row = await _one_claimed(pool, config, clock)
    again = await deliveries.claim_due(pool, uuid.uuid4(), 10, clock.now(),  # type: ignore[arg-type]
                                       clock.now() + timedelta(seconds=60))
    assert again == []
    clock.advance(61)  # the lease ran out: claimable again, by anyone
    again = await deliveries.claim_due(pool, uuid.uuid4(), 10, clock.now(),  # type: ignore[arg-type]
                                       clock.now() + timedelta(seconds=60))
    assert [r.id for r in again] == [row.id]


async def test_publish_fans_out_to_subscribers_except_excluded(
    pool: asyncpg.Pool, config: Config
) -> None:
    box = load_secret_box(config)
    tenant = await make_tenant(pool)
    everything, _ = await make_endpoint(pool, box, tenant, "https://a.example.com/")
    only_blocks, _ = await make_endpoint(pool, box, tenant, "https://b.example.com/",
                                         event_types=["block"])
    excluded, _ = await make_endpoint(pool, box, tenant, "https://c.example.com/")
    other_tenant = await make_tenant(pool, "other")
    await make_endpoint(pool, box, other_tenant, "https://d.example.com/")
    async with pool.acquire() as conn:
        block, tx = await publish_events(
            conn, tenant, [NewEvent("block", {}), NewEvent("transaction", {})],
            policies=load_policies(config), now=FakeClock().now(),
            idempotency_window=timedelta(days=1), exclude_endpoints=[excluded])
    assert {e for e, _ in block.deliveries} == {everything, only_blocks}
    assert {e for e, _ in tx.deliveries} == {everything}
