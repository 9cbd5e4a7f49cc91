"""Maintenance jobs on a real database under a FakeClock: one daemon at a time per
job (advisory lock), lease reaper, retention in batches, gauges, and the scheduler
started and stopped with the application."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from dispatcher import maintenance as maintenance_module
from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.daemon import build_app
from dispatcher.maintenance import MAINTENANCE, Maintenance
from dispatcher.metrics import REGISTRY
from dispatcher.store import deliveries as queue
from dispatcher.store.console_sessions import end_session, open_session
from dispatcher.store.health import pause_endpoint, resume_endpoint
from dispatcher.store.pool import Conn, create_pool
from dispatcher.web.context import COMPONENTS
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant

TYPE = "wallets.transaction.created"


@pytest.fixture
async def pools(db_url: str, config: Config) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two pools on one database: two daemons as far as PostgreSQL can tell."""
    cfg = dataclasses.replace(config.database, pool_min_size=1)
    made = [await create_pool(db_url, cfg), await create_pool(db_url, cfg)]
    yield made
    for p in made:
        await p.close()


async def test_two_schedulers_never_run_one_job_at_the_same_time(
    pools: list[asyncpg.Pool], config: Config
) -> None:
    clock = FakeClock()
    runs: list[tuple[str, float, float]] = []
    active = 0
    most = 0

    def probe(who: str) -> maintenance_module.Job:
        async def job(conn: Conn, now: datetime) -> str:
            nonlocal active, most
            start = time.monotonic()
            active += 1
            most = max(most, active)
            await conn.execute("SELECT pg_sleep(0.12)")
            active -= 1
            runs.append((who, start, time.monotonic()))
            return who
        return job

    skipped = 0
    daemons = []
    for who, p in zip("ab", pools, strict=True):
        m = Maintenance(p, config, clock)
        m.jobs.clear()  # only the probe
        m.add_job("probe", 0.05, probe(who))
        run = m.run

        async def counting(name: str, run: Any = run) -> Any:
            nonlocal skipped
            result = await run(name)
            skipped += result is None
            return result

        m.run = counting  # type: ignore[method-assign]
        daemons.append(m)
    for m in daemons:
        m.start()
    await asyncio.sleep(2.5)
    for m in daemons:
        await m.stop()

    assert most == 1
    assert len(runs) >= 8
    assert skipped >= 4  # the two schedulers did try at the same time
    ordered = sorted(runs, key=lambda r: r[1])
    for (_, _, end), (_, start, _) in itertools.pairwise(ordered):
        assert start >= end, "two runs of one job overlapped"


async def test_a_job_taken_by_one_daemon_is_skipped_by_the_other(
    pools: list[asyncpg.Pool], config: Config
) -> None:
    clock = FakeClock()
    a, b = (Maintenance(p, config, clock) for p in pools)

    async def slow(conn: Conn, now: datetime) -> str:
        await conn.execute("SELECT pg_sleep(0.3)")
        return "done"

    for m in (a, b):
        m.add_job("slow", 60, slow)
    results = await asyncio.gather(a.run("slow"), b.run("slow"))
    assert sorted(results, key=lambda r: r is None) == ["done", None]
    # Different jobs do not exclude each other, and the lock is released after a run.
    assert await asyncio.gather(a.run("slow"), b.reap_leases()) == ["done", 0]
    assert await b.run("slow") == "done"


async def test_jobs_that_come_due_together_share_two_connections(
    pools: list[asyncpg.Pool], config: Config
) -> None:
    """All jobs fire at once at start-up and every interval: they must not take the
    pool's connections from requests (nor grow it by cold ones)."""
    m = Maintenance(pools[0], config, FakeClock())
    m.jobs.clear()
    active = most = 0

    async def job(conn: Conn, now: datetime) -> str:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await conn.execute("SELECT pg_sleep(0.05)")
        active -= 1
        return "done"

    for k in range(8):
        m.add_job(f"job{k}", 60, job)
    assert await asyncio.gather(*(m.run(name) for name in m.jobs)) == ["done"] * 8
    assert most == maintenance_module.CONNECTIONS
    assert pools[0].get_size() <= maintenance_module.CONNECTIONS


async def test_reaper_frees_expired_leases_only(db_url: str, config: Config) -> None:
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/hook")
        await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(5)])
        now = clock.now()
        async with h.pool.acquire() as conn:
            dead = await queue.claim_due(conn, uuid.uuid4(), 3, now, now + timedelta(seconds=60))
            live = await queue.claim_due(conn, uuid.uuid4(), 2, now,
                                         now + timedelta(seconds=600))
        m = Maintenance(h.pool, config, clock)
        assert await m.reap_leases() == 0
        clock.advance(61)
        assert await m.reap_leases() == 3
        rows = {r["id"]: r["lease_owner"] for r in await h.pool.fetch(
            "SELECT id, lease_owner FROM deliveries")}
        assert all(rows[d.id] is None for d in dead)
        assert all(rows[d.id] is not None for d in live)
        assert await m.reap_leases() == 0


async def test_retention_drops_old_attempts_and_finished_events_in_batches(
    db_url: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance_module, "BATCH", 4)
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        endpoint, _ = await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/hook")
        old_done = await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(6)])
        (old_open,) = await h.publish(tenant, (TYPE, {"open": True}))
        await h.pool.execute(
            "UPDATE deliveries SET status = 2 WHERE event_id = ANY($1::uuid[])",
            [e.id for e in old_done])
        await h.pool.execute(
            """INSERT INTO attempts (delivery_id, endpoint_id, attempt_number, started_at,
                                     duration_ms, request_headers)
               SELECT id, endpoint_id, 1, $1, 1, '{}' FROM deliveries""", clock.now())
        await h.pool.execute(
            """INSERT INTO endpoint_failure_buckets VALUES ($1, $2, 3), ($1, $3, 4)""",
            endpoint, clock.now(), clock.now() + timedelta(days=30))
        clock.advance(days=30)
        (recent,) = await h.publish(tenant, (TYPE, {"new": True}))
        await h.pool.execute("UPDATE deliveries SET status = 2 WHERE event_id = $1", recent.id)
        await h.pool.execute(
            """INSERT INTO attempts (delivery_id, endpoint_id, attempt_number, started_at,
                                     duration_ms, request_headers)
               SELECT id, endpoint_id, 1, $1, 1, '{}' FROM deliveries WHERE event_id = $2""",
            clock.now(), recent.id)
        clock.advance(days=1)

        result = await Maintenance(h.pool, config, clock).retention()
        assert result is not None
        assert result.attempts == 7  # two batches of 4 and less, all older than 30 days
        assert result.events == 6  # the unfinished one stays, however old
        assert result.buckets == 1
        left = {r["id"] for r in await h.pool.fetch("SELECT id FROM events")}
        assert left == {old_open.id, recent.id}
        assert await h.pool.fetchval("SELECT count(*) FROM attempts") == 1
        assert await h.pool.fetchval("SELECT count(*) FROM deliveries") == 2


async def test_console_sessions_finished_over_a_day_ago_are_deleted_in_batches(
    db_url: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance_module, "BATCH", 2)
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        start = clock.now()
        async with h.pool.acquire() as conn:

            async def session(hours: float) -> uuid.UUID:
                return await open_session(conn, None, tenant, clock.now(),
                                          clock.now() + timedelta(hours=hours))

            expired = [await session(1) for _ in range(3)]  # expire at start + 1 h
            ended = await session(12)
            await end_session(conn, ended, start + timedelta(minutes=30))
            open_ = await session(48)  # open until start + 48 h
            clock.advance(hours=2)
            ended_late = await session(12)
            await end_session(conn, ended_late, clock.now())  # ended at start + 2 h
        m = Maintenance(h.pool, config, clock)

        clock.set(start + timedelta(hours=24, minutes=20))  # nothing finished a day ago yet
        assert await m.drop_finished_sessions() == 0
        clock.set(start + timedelta(hours=25, minutes=1))
        assert await m.drop_finished_sessions() == 4  # two batches of 2
        left = {r["id"] for r in await h.pool.fetch("SELECT id FROM console_sessions")}
        assert left == {open_, ended_late}
        assert not set(expired) & left
        clock.set(start + timedelta(hours=26, minutes=1))
        assert await m.drop_finished_sessions() == 1
        clock.set(start + timedelta(hours=72, minutes=1))
        assert await m.drop_finished_sessions() == 1
        assert await h.pool.fetchval("SELECT count(*) FROM console_sessions") == 0


async def test_gauges_report_queue_depth_oldest_due_statuses_and_states(
    db_url: str, config: Config
) -> None:
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/a")
        paused, _ = await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/b")
        await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(3)])
        async with h.pool.acquire() as conn:
            await pause_endpoint(conn, paused, "manual", clock.now())
        await h.pool.execute(
            "UPDATE deliveries SET status = 2 WHERE id = (SELECT min(id) FROM deliveries)")
        clock.advance(90)
        await Maintenance(h.pool, config, clock).gauges()

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert sample("dispatcher_queue_depth") == 2  # 3 for the active endpoint, 1 done
    assert sample("dispatcher_oldest_due_age_seconds") == 90
    assert sample("dispatcher_deliveries", status="Pending") == 5
    assert sample("dispatcher_deliveries", status="Success") == 1
    assert sample("dispatcher_deliveries", status="Failed") == 0
    assert sample("dispatcher_endpoints", state="active") == 1
    assert sample("dispatcher_endpoints", state="paused") == 1
    assert sample("dispatcher_endpoints", state="disabled") == 0


async def test_the_app_runs_maintenance_and_the_scheduler_redrives_a_resumed_endpoint(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    config = make_config(health__resume_rate_per_second="100")
    clock = FakeClock()
    app = build_app(config, db_url, clock, role="all")
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        m = app[COMPONENTS][MAINTENANCE]
        assert isinstance(m, Maintenance)
        assert set(m.jobs) == {"reap_leases", "expire_holds", "redrive", "retention", "gauges",
                               "remove_abandoned_listeners", "ordering_keys",
                               "expire_callbacks", "console_sessions"}
        async with EngineHarness(db_url, config, clock) as h:
            tenant = await make_tenant(h.pool)
            endpoint, _ = await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/a",
                                              event_types=[TYPE])
            async with h.pool.acquire() as conn:
                await pause_endpoint(conn, endpoint, "manual", clock.now())
            await h.publish(tenant, *[(TYPE, {"n": i}) for i in range(3)])
            async with h.pool.acquire() as conn:
                await resume_endpoint(conn, endpoint, clock.now())
            async with asyncio.timeout(5):
                while await h.pool.fetchval(
                        "SELECT count(*) FROM deliveries WHERE held_since IS NOT NULL"):
                    await asyncio.sleep(0.05)
            assert await h.pool.fetchval(
                "SELECT redrive_from FROM endpoints WHERE id = $1", endpoint) is None
    finally:
        await runner.cleanup()
    assert m._scheduler is None


async def test_a_run_due_while_its_job_runs_is_coalesced_into_one_right_after(
    pools: list[asyncpg.Pool], config: Config
) -> None:
    """A slow run of expire_callbacks must not push the next one a whole interval out
    (APScheduler dropped such runs: "maximum number of running instances reached")."""
    m = Maintenance(pools[0], config, FakeClock())
    m.jobs.clear()
    release = asyncio.Event()
    started: list[float] = []

    async def job(conn: Conn, now: datetime) -> int:
        started.append(time.monotonic())
        if len(started) == 1:
            await release.wait()
        return len(started)

    m.add_job("slow", 3600, job)
    first = asyncio.create_task(m.run("slow"))
    await asyncio.sleep(0.1)
    assert [await m.run("slow") for _ in range(3)] == [None] * 3  # due three times meanwhile
    ended = time.monotonic()
    release.set()
    assert await first == 2  # the three became one run, started at once
    assert len(started) == 2 and started[1] - ended < 0.5
    assert await m.run("slow") == 3  # and then runs as before


async def test_urgent_jobs_do_not_wait_for_the_shared_connections(
    pools: list[asyncpg.Pool], config: Config
) -> None:
    m = Maintenance(pools[0], config, FakeClock())
    m.jobs.clear()
    release = asyncio.Event()

    async def long(conn: Conn, now: datetime) -> str:
        await release.wait()  # retention, say, holding both shared connections
        return "long"

    async def deadline(conn: Conn, now: datetime) -> str:
        return "on time"

    m.add_job("long1", 3600, long)
    m.add_job("long2", 3600, long)
    m.add_job("expire_callbacks", 1, deadline, urgent=True)
    busy = [asyncio.create_task(m.run(n)) for n in ("long1", "long2")]
    await asyncio.sleep(0.1)
    try:
        assert await asyncio.wait_for(m.run("expire_callbacks"), 2) == "on time"
    finally:
        release.set()
        assert await asyncio.gather(*busy) == ["long", "long"]
