"""Pause thresholds and warnings under a FakeClock, driven through the outcome hook
exactly as the worker calls it (inside the transaction that records a batch).

The failing endpoint subscribes to one business type only; a second endpoint of the
tenant subscribes to the operational events, so what the tenant is told is visible
as deliveries to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from structlog.testing import capture_logs

from dispatcher import metrics
from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.engine.health import HealthMonitor
from dispatcher.model import DeliveryStatus
from dispatcher.store.deliveries import Outcome
from dispatcher.store.health import (
    StateChange,
    endpoint_health,
    pause_endpoint,
    resume_endpoint,
    set_pause_thresholds,
)
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant

DAY = 86400.0
TYPE = "wallets.transaction.created"
OPS = ["endpoint.paused", "endpoint.failing"]


@dataclass
class Setup:
    h: EngineHarness
    clock: FakeClock
    monitor: HealthMonitor
    tenant: UUID
    endpoint: UUID
    ops: UUID

    async def fail(self, n: int = 1, at: datetime | None = None, endpoint: UUID | None = None,
                   ) -> None:
        """`n` failed attempts started at `at` (default now), written as one batch."""
        when = at or self.clock.now()
        batch = [failed(endpoint or self.endpoint, when) for _ in range(n)]
        async with self.h.pool.acquire() as conn, conn.transaction():
            await self.monitor.record(conn, batch, self.clock.now())

    async def resume(self) -> StateChange:
        async with self.h.pool.acquire() as conn:
            return await resume_endpoint(conn, self.endpoint, self.clock.now(),
                                         tenant_id=self.tenant)

    async def pause(self, reason: str) -> StateChange:
        async with self.h.pool.acquire() as conn:
            return await pause_endpoint(conn, self.endpoint, reason, self.clock.now(),
                                        tenant_id=self.tenant)

    async def state(self, endpoint: UUID | None = None) -> str:
        state: str = await self.h.pool.fetchval(
            "SELECT state FROM endpoints WHERE id = $1", endpoint or self.endpoint)
        return state

    async def told(self) -> list[tuple[str, dict[str, Any]]]:
        """Operational events delivered to the ops endpoint, oldest first."""
        rows = await self.h.pool.fetch(
            """SELECT e.type, e.body FROM deliveries d JOIN events e ON e.id = d.event_id
               WHERE d.endpoint_id = $1 ORDER BY d.id""", self.ops)
        return [(r["type"], json.loads(r["body"])["data"]) for r in rows]


def failed(endpoint_id: UUID, at: datetime) -> Outcome:
    return Outcome(
        delivery_id=0, endpoint_id=endpoint_id, attempt_number=1,
        status=DeliveryStatus.RETRYING, retries_left=1, next_attempt_at=at, started_at=at,
        duration_ms=1.0, request_headers="{}", response_status=500, response_headers=None,
        response_body=None, failure_reason="http_status",
    )


@pytest.fixture
async def s(db_url: str, config: Config) -> AsyncIterator[Setup]:
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        endpoint, _ = await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/hook",
                                          event_types=[TYPE])
        ops, _ = await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/ops",
                                     event_types=OPS)
        yield Setup(h, clock, HealthMonitor(config), tenant, endpoint, ops)


async def test_99_failures_in_7_days_do_not_pause_and_the_100th_does(s: Setup) -> None:
    (before,) = await s.h.publish(s.tenant, (TYPE, {"n": 1}))
    step = 6.9 * DAY / 98
    for i in range(99):
        await s.fail()
        assert await s.state() == "active", f"paused after {i + 1} failures"
        if i < 98:
            s.clock.advance(step)
    assert s.clock.now() - datetime(2026, 1, 1, tzinfo=s.clock.now().tzinfo) < timedelta(days=7)

    pauses = metrics.ENDPOINT_PAUSES._value.get()
    with capture_logs() as logs:
        await s.fail()
    assert await s.state() == "paused"
    assert metrics.ENDPOINT_PAUSES._value.get() == pauses + 1
    (line,) = [e for e in logs if e["event"] == "endpoint.paused"]
    assert line["endpoint_id"] == str(s.endpoint)
    assert line["failures_in_window"] == 100
    assert line["threshold"] == "window"

    row = await s.h.pool.fetchrow("SELECT * FROM endpoints WHERE id = $1", s.endpoint)
    assert row["state_changed_at"] == s.clock.now()
    assert "100 failed attempts within 7 days (threshold 100)" in row["state_reason"]
    assert s.clock.now().isoformat() in row["state_reason"]

    # Its pending delivery is held with its retry budget untouched; new events are
    # accepted and held too.
    (after,) = await s.h.publish(s.tenant, (TYPE, {"n": 2}))
    assert after.deliveries == [(s.endpoint, DeliveryStatus.PENDING)]
    for event in (before, after):
        d = await s.h.pool.fetchrow(
            "SELECT *, isfinite(next_attempt_at) AS due FROM deliveries "
            "WHERE event_id = $1 AND endpoint_id = $2", event.id, s.endpoint)
        assert d["held_since"] is not None and not d["due"]
        assert d["retries_left"] == 7 and d["attempts"] == 0

    told = await s.told()
    assert [t for t, _ in told] == ["endpoint.failing"] * 3 + ["endpoint.paused"]
    paused = told[-1][1]
    assert paused["endpoint_id"] == str(s.endpoint)
    assert paused["failures_in_window"] == 100 and paused["window_threshold"] == 100
    assert paused["failures_since_resume"] == 100 and paused["total_threshold"] == 500
    assert paused["threshold"] == "window"


async def test_the_window_forgets_old_failures_and_500_since_resume_pause(s: Setup) -> None:
    # 10 failures, then a resume: they count for nothing afterwards.
    await s.fail(10)
    await s.resume()
    s.clock.advance(3600)

    # 100 failures spread evenly over 8 days never put 100 in one 7-day window...
    step = 8 * DAY / 100
    for i in range(100):
        await s.fail()
        assert await s.state() == "active", f"paused after {i + 1} failures"
        s.clock.advance(step)
    health = await endpoint_health(s.h.pool, s.endpoint, s.clock.now(), 7 * DAY)
    assert health.failures_since_resume == 100
    assert 80 <= health.failures_in_window < 100

    # ... and at the same pace the 500th since the resume pauses it.
    for i in range(399):
        await s.fail()
        assert await s.state() == "active", f"paused after {101 + i} failures"
        s.clock.advance(step)
    await s.fail()
    assert await s.state() == "paused"
    row = await s.h.pool.fetchrow("SELECT state_reason FROM endpoints WHERE id = $1",
                                  s.endpoint)
    assert "500 since the last resume (threshold 500)" in row["state_reason"]
    paused = [d for t, d in await s.told() if t == "endpoint.paused"]
    assert len(paused) == 1 and paused[0]["threshold"] == "total"
    assert paused[0]["failures_since_resume"] == 500


async def test_successes_do_not_reset_the_count(s: Setup) -> None:
    ok = failed(s.endpoint, s.clock.now())
    ok.failure_reason, ok.status, ok.response_status = None, DeliveryStatus.SUCCESS, 200
    await s.fail(99)
    async with s.h.pool.acquire() as conn, conn.transaction():
        await s.monitor.record(conn, [ok] * 50, s.clock.now())
    assert await s.state() == "active"
    await s.fail()
    assert await s.state() == "paused"


async def test_warnings_fire_once_each_at_50_70_90_percent(s: Setup, config: Config) -> None:
    for i in range(99):
        await s.fail()
        s.clock.advance(60)
        if i == 60:  # a restarted daemon (a new monitor) does not repeat what was sent
            s.monitor = HealthMonitor(config)
    told = await s.told()
    assert [(t, d["threshold"], d["percentage"], d["failures"], d["limit"]) for t, d in told] \
        == [("endpoint.failing", "window", 50, 50, 100),
            ("endpoint.failing", "window", 70, 70, 100),
            ("endpoint.failing", "window", 90, 90, 100)]
    assert told[0][1]["endpoint_id"] == str(s.endpoint)
    assert told[0][1]["window_seconds"] == 7 * DAY
    assert await s.state() == "active"


async def test_a_batch_jumping_several_levels_sends_one_warning(s: Setup) -> None:
    await s.fail(75)
    told = await s.told()
    assert [(d["threshold"], d["percentage"]) for _, d in told] == [("window", 70)]
    await s.fail(5)
    assert len(await s.told()) == 1  # 80: nothing new
    await s.fail(10)
    assert [(d["threshold"], d["percentage"]) for _, d in await s.told()] == \
        [("window", 70), ("window", 90)]


async def test_window_warnings_come_again_in_a_later_window(s: Setup) -> None:
    await s.fail(50)
    assert len(await s.told()) == 1
    s.clock.advance(8 * DAY)  # the 50 failures and their warning are out of the window
    await s.fail(49)
    assert len(await s.told()) == 1
    await s.fail(1)
    assert [d["percentage"] for _, d in await s.told()] == [50, 50]


async def test_total_threshold_warnings_and_per_endpoint_thresholds(s: Setup) -> None:
    await set_pause_thresholds(s.h.pool, s.endpoint, s.clock.now(), window_threshold=1000,
                               total_threshold=10)
    for _ in range(9):
        await s.fail()
        s.clock.advance(DAY)  # never many in one window
    assert await s.state() == "active"
    assert [(d["threshold"], d["percentage"], d["limit"]) for _, d in await s.told()] == \
        [("total", 50, 10), ("total", 70, 10), ("total", 90, 10)]
    await s.fail()
    assert await s.state() == "paused"


async def test_resume_resets_counters_and_warnings(s: Setup) -> None:
    await s.fail(100)
    assert await s.state() == "paused"
    change = await s.resume()
    assert change.changed and change.state == "active"
    health = await endpoint_health(s.h.pool, s.endpoint, s.clock.now(), 7 * DAY)
    assert (health.failures_in_window, health.failures_since_resume) == (0, 0)
    before = len(await s.told())
    await s.fail(99)
    assert await s.state() == "active"
    assert len(await s.told()) == before + 1  # the 90% warning again, once
    await s.fail()
    assert await s.state() == "paused"


async def test_failures_of_a_paused_endpoint_count_but_change_nothing(s: Setup) -> None:
    await s.pause("manual")
    version = await s.h.pool.fetchval("SELECT version FROM endpoints WHERE id = $1",
                                      s.endpoint)
    await s.fail(150)
    row = await s.h.pool.fetchrow("SELECT * FROM endpoints WHERE id = $1", s.endpoint)
    assert row["state"] == "paused" and row["state_reason"] == "manual"
    assert row["version"] == version and row["failures_since_resume"] == 150
    assert await s.told() == []


async def test_one_batch_with_many_endpoints_runs_a_fixed_number_of_statements(
    s: Setup, db_url: str
) -> None:
    """Accounting costs two statements per batch with failures, none without."""
    others = [(await make_endpoint(s.h.pool, s.h.box, s.tenant, f"http://127.0.0.1:9/{i}",
                                   event_types=[TYPE]))[0] for i in range(20)]
    batch = [failed(e, s.clock.now()) for e in others for _ in range(25)]
    conn = await asyncpg.connect(db_url)
    try:
        seen: list[str] = []
        conn.add_query_logger(lambda q: seen.append(q.query))
        async with conn.transaction():
            await s.monitor.record(conn, batch, s.clock.now())
        ok = failed(s.endpoint, s.clock.now())
        ok.failure_reason = None
        async with conn.transaction():
            await s.monitor.record(conn, [ok] * 500, s.clock.now())
    finally:
        await conn.close()
    assert len([q for q in seen if "endpoint" in q]) == 2
    counts = await s.h.pool.fetch(
        "SELECT endpoint_id, sum(failures) AS n FROM endpoint_failure_buckets "
        "GROUP BY endpoint_id")
    assert {r["endpoint_id"]: r["n"] for r in counts} == {e: 25 for e in others}
