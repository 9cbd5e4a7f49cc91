"""Failure accounting stays cheap at a million attempts: the hour buckets written by
the outcome hook give exactly the counts a scan of the attempts table gives, and
the window query reads a handful of index pages where the scan reads the table."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.engine.health import HealthMonitor
from dispatcher.model import DeliveryStatus
from dispatcher.store.deliveries import Outcome
from dispatcher.store.health import window_start
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant

ATTEMPTS = 1_000_000
ENDPOINTS = 20
SPAN = timedelta(days=10)
STEP = SPAN / ATTEMPTS
BATCH = 5000  # about what one worker writes per outcome statement
WINDOW = 7 * 86400
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def is_failure(i: int) -> bool:
    return (i // ENDPOINTS * 7919) % 10 < 3  # 30% of each endpoint's; the same rule as _FILL


_FILL = """
INSERT INTO attempts (delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                      request_headers, response_status, failure_reason)
SELECT d.id, d.endpoint_id, 1, $2::timestamptz + i * $3::interval, 1, '{}',
       CASE WHEN (i / $6 * 7919) % 10 < 3 THEN 500 ELSE 200 END,
       CASE WHEN (i / $6 * 7919) % 10 < 3 THEN 'http_status' END
FROM generate_series(0::bigint, $1 - 1) AS i
JOIN unnest($4::bigint[], $5::uuid[]) WITH ORDINALITY AS d(id, endpoint_id, n)
  ON d.n = i % $6 + 1
"""

_WINDOW_FROM_BUCKETS = """
SELECT coalesce(sum(failures), 0) FROM endpoint_failure_buckets
WHERE endpoint_id = $1 AND bucket_start >= $2
"""

# What the buckets stand for: failed attempts in whole hours inside the window.
_WINDOW_FROM_ATTEMPTS = """
SELECT count(*) FROM attempts
WHERE endpoint_id = $1 AND failure_reason IS NOT NULL
  AND started_at >= date_trunc('hour', $2::timestamptz - interval '1 microsecond')
                    + interval '1 hour'
  AND started_at <= $3
"""

_WINDOW_FROM_BUCKETS_OF = """
SELECT coalesce(sum(b.failures), 0) FROM endpoint_failure_buckets b
WHERE b.endpoint_id = e.id AND b.bucket_start >= $1
"""

# Every endpoint's true counts in one scan of the attempts.
_COUNT_ATTEMPTS = """
SELECT endpoint_id,
       count(*) FILTER (WHERE failure_reason IS NOT NULL) AS total,
       count(*) FILTER (WHERE failure_reason IS NOT NULL AND started_at <= $2 AND started_at
                        >= date_trunc('hour', $1::timestamptz - interval '1 microsecond')
                           + interval '1 hour') AS in_window
FROM attempts GROUP BY endpoint_id
"""


async def _buffers(conn: asyncpg.Connection, sql: str, *args: Any) -> tuple[int, str]:
    """Shared buffers a query touches, and the plan's top node."""
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    root = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]

    def nodes(n: dict[str, Any]) -> list[dict[str, Any]]:
        return [n] + [m for c in n.get("Plans", []) for m in nodes(c)]

    touched = root.get("Shared Hit Blocks", 0) + root.get("Shared Read Blocks", 0)
    return touched, " / ".join(n["Node Type"] for n in nodes(root))


@pytest.mark.slow
async def test_counters_match_a_scan_of_a_million_attempts_at_a_fraction_of_the_cost(
    db_url: str, config: Config
) -> None:
    clock = FakeClock(T0)
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        endpoints = [
            (await make_endpoint(h.pool, h.box, tenant, f"http://127.0.0.1:9/{n}"))[0]
            for n in range(ENDPOINTS)
        ]
        # Thresholds out of reach: this test is about counting, not pausing.
        await h.pool.execute("UPDATE endpoints SET pause_window_threshold = 1000000000, "
                             "pause_total_threshold = 1000000000")
        await h.publish(tenant, ("wallets.transaction.created", {}))
        deliveries = {r["endpoint_id"]: r["id"] for r in await h.pool.fetch(
            "SELECT endpoint_id, id FROM deliveries")}

        started = time.perf_counter()
        await h.pool.execute(_FILL, ATTEMPTS, T0, STEP, [deliveries[e] for e in endpoints],
                             endpoints, ENDPOINTS)
        await h.pool.execute("ANALYZE attempts")
        filled = time.perf_counter() - started

        # The same attempts through the hook, in worker-sized batches, in time order.
        monitor = HealthMonitor(config)
        success = _outcome(endpoints[0], T0, failed=False)
        hook_seconds: list[float] = []
        for first in range(0, ATTEMPTS, BATCH):
            batch = [
                _outcome(endpoints[i % ENDPOINTS], T0 + i * STEP) if is_failure(i) else success
                for i in range(first, min(first + BATCH, ATTEMPTS))
            ]
            now = T0 + (first + len(batch)) * STEP
            t = time.perf_counter()
            async with h.pool.acquire() as conn, conn.transaction():
                await monitor.record(conn, batch, now)
            hook_seconds.append(time.perf_counter() - t)
        now = T0 + SPAN
        since = window_start(now, WINDOW)

        async with h.pool.acquire() as conn:
            counters = {r["id"]: r for r in await conn.fetch(
                f"""SELECT e.id, e.failures_since_resume AS total, ({_WINDOW_FROM_BUCKETS_OF})
                        AS in_window
                    FROM endpoints e""", since)}
            scanned = {r["endpoint_id"]: r for r in await conn.fetch(_COUNT_ATTEMPTS, since, now)}
            for endpoint in endpoints:
                mine, truth = counters[endpoint], scanned[endpoint]
                assert (mine["total"], mine["in_window"]) == (truth["total"], truth["in_window"])
                assert 0.69 * 0.3 * ATTEMPTS / ENDPOINTS < mine["in_window"] < mine["total"]

            cheap, cheap_plan = await _buffers(conn, _WINDOW_FROM_BUCKETS, endpoints[0], since)
            scan, scan_plan = await _buffers(conn, _WINDOW_FROM_ATTEMPTS, endpoints[0], since,
                                             now)
            t = time.perf_counter()
            for _ in range(100):
                await conn.fetchval(_WINDOW_FROM_BUCKETS, endpoints[0], since)
            window_ms = (time.perf_counter() - t) * 10
        assert await h.pool.fetchval("SELECT count(*) FROM attempts") == ATTEMPTS
        buckets = await h.pool.fetchval("SELECT count(*) FROM endpoint_failure_buckets")

    # 169 hour rows per endpoint at most, read through the primary key.
    assert "Index" in cheap_plan and "Seq Scan" not in cheap_plan
    assert cheap <= 200, cheap_plan  # bounded by the hours in a window, not by attempts
    assert scan > 100 * cheap, scan_plan
    assert buckets == ENDPOINTS * 240
    # The hook costs two small statements per batch, whatever the table sizes: the
    # last batches are no slower than the first ones. (Fastest of 20, not the median:
    # on a busy machine the median measures the neighbours, the minimum the work.)
    first, last = min(hook_seconds[:20]), min(hook_seconds[-20:])
    assert last < 3 * first + 0.005, (first, last)
    print(f"\n1M attempts filled in {filled:.1f}s; hook fastest per {BATCH}-outcome batch "
          f"{first * 1000:.2f} ms first / {last * 1000:.2f} ms last; window query "
          f"{window_ms:.2f} ms, {cheap} buffers vs {scan} for a count over attempts")


def _outcome(endpoint_id: Any, at: datetime, failed: bool = True) -> Outcome:
    return Outcome(
        delivery_id=0, endpoint_id=endpoint_id, attempt_number=1,
        status=DeliveryStatus.RETRYING if failed else DeliveryStatus.SUCCESS, retries_left=0,
        next_attempt_at=at, started_at=at, duration_ms=1.0, request_headers="{}",
        response_status=500 if failed else 200, response_headers=None, response_body=None,
        failure_reason="http_status" if failed else None,
    )
