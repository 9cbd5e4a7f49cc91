"""Endpoint-wide backpressure in SQL: the rate-limit backoff every claim honours and
the adaptive in-flight limit (AIMD) every worker applies, both on the endpoint row
so that all processes and daemons share them.

Each changed endpoint is announced on the endpoints channel (without a version
bump: the settings a tenant made did not change), and every worker reads it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from dispatcher.store.pool import Conn


@dataclass(slots=True)
class Pressure:
    """What one batch of attempts said about one endpoint."""

    # Latest end of a Retry-After (already capped) among rate-limited answers.
    retry_after_until: datetime | None = None
    # Latest rate-limited answer without a Retry-After: a default backoff from then.
    limited_at: datetime | None = None
    # Latest start of an attempt that met congestion (429/503, timeout, connect error).
    congested_started: datetime | None = None
    successes: int = 0

    def merge(self, other: Pressure) -> None:
        self.retry_after_until = _latest(self.retry_after_until, other.retry_after_until)
        self.limited_at = _latest(self.limited_at, other.limited_at)
        self.congested_started = _latest(self.congested_started, other.congested_started)
        self.successes += other.successes


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


# Backoff without a Retry-After: the default, doubled (up to the cap) when the
# previous one ended less than its own length ago; a rate-limited answer during a
# backoff (sent before it began) keeps its length. The backoff only ever lengthens.
#
# AIMD: a congested attempt that started after the last decrease halves the limit
# (so one burst of answers halves it once); otherwise each run of `limit` successes
# adds one, up to max_in_flight, where the limit is stored as NULL.
_APPLY = """
WITH b AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[],
                         $4::timestamptz[], $5::int[])
        AS b(endpoint_id, retry_after_until, limited_at, congested_started, successes)
), cur AS (
    SELECT e.id, e.rate_limited_until AS prev_until,
           coalesce(e.rate_limit_seconds, $6) AS prev_secs,
           least(coalesce(e.effective_max_in_flight, e.max_in_flight), e.max_in_flight) AS lim,
           e.max_in_flight, e.concurrency_changed_at, e.concurrency_successes, b.*
    FROM endpoints e JOIN b ON b.endpoint_id = e.id
    ORDER BY e.id
    FOR NO KEY UPDATE OF e
), next AS (
    SELECT cur.*,
           CASE WHEN limited_at IS NULL THEN NULL
                WHEN prev_until IS NOT NULL AND limited_at < prev_until THEN prev_secs
                WHEN prev_until IS NOT NULL
                     AND limited_at < prev_until + make_interval(secs => prev_secs)
                    THEN least(prev_secs * 2, $7)
                ELSE $6::float8 END AS secs,
           congested_started IS NOT NULL
             AND (concurrency_changed_at IS NULL OR congested_started >= concurrency_changed_at)
             AS decrease
    FROM cur
), upd AS (
    UPDATE endpoints e
    SET rate_limited_until = greatest(
            n.prev_until, n.retry_after_until,
            n.limited_at + make_interval(secs => n.secs)),
        rate_limit_seconds = coalesce(n.secs, e.rate_limit_seconds),
        effective_max_in_flight = nullif(CASE
            WHEN n.decrease THEN greatest(1, n.lim / 2)
            WHEN n.lim < n.max_in_flight AND n.concurrency_successes + n.successes >= n.lim
                THEN n.lim + 1
            ELSE n.lim END, n.max_in_flight),
        concurrency_changed_at = CASE WHEN n.decrease THEN $8 ELSE e.concurrency_changed_at END,
        concurrency_successes = CASE
            WHEN n.decrease OR n.lim >= n.max_in_flight THEN 0
            WHEN n.concurrency_successes + n.successes >= n.lim THEN 0
            ELSE n.concurrency_successes + n.successes END
    FROM next n
    WHERE e.id = n.id
    RETURNING e.id,
        e.rate_limited_until IS DISTINCT FROM n.prev_until
        OR coalesce(e.effective_max_in_flight, e.max_in_flight) <> n.lim AS changed
)
SELECT id, pg_notify('dispatcher_endpoints', id::text) FROM upd WHERE changed
"""


async def apply_pressure(
    conn: Conn,
    pressure: Mapping[UUID, Pressure],
    now: datetime,
    default_backoff: float,
    backoff_cap: float,
) -> set[UUID]:
    """Record a batch's rate limits, congestion and successes on their endpoints;
    returns the endpoints whose backoff or limit changed (announced to every worker)."""
    if not pressure:
        return set()
    ids = sorted(pressure)
    rows = await conn.fetch(
        _APPLY, ids,
        [pressure[i].retry_after_until for i in ids], [pressure[i].limited_at for i in ids],
        [pressure[i].congested_started for i in ids], [pressure[i].successes for i in ids],
        default_backoff, backoff_cap, now,
    )
    return {r["id"] for r in rows}
