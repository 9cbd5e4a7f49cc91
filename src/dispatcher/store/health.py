"""Endpoint health in SQL: failure counters (hourly buckets plus a since-resume
total), warnings already sent, pause and resume with their held deliveries, and
per-endpoint thresholds. What happens to held deliveries afterwards (re-drive,
expiry) is in `holds.py`.

Every function that changes an endpoint bumps its `version`, so delivery workers
reload their cached copy. Pause and resume lock the endpoint row first, as does
the failure accounting, so they serialize per endpoint and never deadlock on
each other (several endpoints are always locked in id order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.model import EndpointState
from dispatcher.store.pool import Conn

BUCKET = timedelta(hours=1)


def bucket_start(when: datetime) -> datetime:
    """The hour bucket a failure at `when` is counted in."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime, window_seconds: float) -> datetime:
    """Buckets starting at or after this lie wholly inside the window ending at `now`.
    The window is counted in whole hours: the partly expired oldest hour no longer
    counts, so a pause never rests on failures older than the window."""
    return now - timedelta(seconds=window_seconds)


@dataclass(frozen=True, slots=True)
class StateChange:
    """What pause_endpoint / resume_endpoint did."""

    endpoint_id: UUID
    tenant_id: UUID
    state: EndpointState
    state_reason: str | None
    state_changed_at: datetime | None
    version: int
    changed: bool  # False when the endpoint already was in that state
    deliveries: int  # held now (pause) or waiting to be re-driven (resume)


@dataclass(frozen=True, slots=True)
class FailureCounts:
    """One endpoint's counters right after a batch of failures was added."""

    endpoint_id: UUID
    tenant_id: UUID
    url: str
    state: EndpointState
    failures_in_window: int
    failures_since_resume: int
    window_threshold: int | None  # per-endpoint override, None: use config
    total_threshold: int | None
    warned: frozenset[tuple[str, int]]  # (threshold, percentage) already sent and live


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    endpoint_id: UUID
    tenant_id: UUID
    url: str
    state: EndpointState
    state_reason: str | None
    state_changed_at: datetime | None
    failures_in_window: int
    failures_since_resume: int
    window_threshold: int | None
    total_threshold: int | None
    held: int
    redrive_pending: bool
    # When the endpoint's TLS client certificate expires (None without one).
    client_certificate_not_after: datetime | None = None


# -- failure accounting ---------------------------------------------------------------

# Lock the endpoints of a batch in id order before touching their counters, so two
# workers' batches wait for each other instead of deadlocking, and the sums below
# see every batch committed before ours.
_LOCK_ENDPOINTS = """
SELECT id FROM endpoints WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
"""

# One statement per batch: add the hour buckets and the since-resume counts, and
# return the counters. The window sum reads the snapshot from before this statement's
# own upsert, so the batch's in-window failures ($5) are added to it.
_ADD_FAILURES = """
WITH f AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int[])
        AS f(endpoint_id, bucket_start, failures)
), up AS (
    INSERT INTO endpoint_failure_buckets AS b (endpoint_id, bucket_start, failures)
    SELECT endpoint_id, bucket_start, failures FROM f
    ON CONFLICT (endpoint_id, bucket_start) DO UPDATE SET failures = b.failures + EXCLUDED.failures
), per AS (
    SELECT * FROM unnest($4::uuid[], $5::int[], $6::int[]) AS p(endpoint_id, in_window, total)
), upd AS (
    UPDATE endpoints e SET failures_since_resume = e.failures_since_resume + per.total
    FROM per WHERE e.id = per.endpoint_id
    RETURNING e.id, e.tenant_id, e.url, e.state, e.failures_since_resume,
              e.pause_window_threshold, e.pause_total_threshold, per.in_window
)
SELECT upd.*,
       upd.in_window + coalesce((SELECT sum(b.failures) FROM endpoint_failure_buckets b
                                 WHERE b.endpoint_id = upd.id AND b.bucket_start >= $7), 0)
           AS failures_in_window,
       ARRAY(SELECT w.threshold || ':' || w.percentage FROM endpoint_health_warnings w
             WHERE w.endpoint_id = upd.id AND (w.threshold = 'total' OR w.sent_at >= $7))
           AS warned
FROM upd
"""


async def add_failures(
    conn: Conn, failures: Mapping[tuple[UUID, datetime], int], now: datetime,
    window_seconds: float,
) -> list[FailureCounts]:
    """Add failed attempts counted by (endpoint, hour bucket); returns the counters of
    every endpoint that still exists. Two statements, whatever the batch size. Run it
    inside the transaction that records the attempts."""
    if not failures:
        return []
    since = window_start(now, window_seconds)
    ids = sorted({eid for eid, _ in failures})
    existing = {r["id"] for r in await conn.fetch(_LOCK_ENDPOINTS, ids)}
    keys = sorted(k for k in failures if k[0] in existing)
    if not keys:
        return []
    in_window: dict[UUID, int] = {}
    total: dict[UUID, int] = {}
    for eid, start in keys:
        n = failures[(eid, start)]
        total[eid] = total.get(eid, 0) + n
        if start >= since:
            in_window[eid] = in_window.get(eid, 0) + n
    per = sorted(total)
    rows = await conn.fetch(
        _ADD_FAILURES,
        [k[0] for k in keys], [k[1] for k in keys], [failures[k] for k in keys],
        per, [in_window.get(e, 0) for e in per], [total[e] for e in per], since,
    )
    return [
        FailureCounts(
            endpoint_id=r["id"], tenant_id=r["tenant_id"], url=r["url"],
            state=EndpointState(r["state"]),
            failures_in_window=int(r["failures_in_window"]),
            failures_since_resume=r["failures_since_resume"],
            window_threshold=r["pause_window_threshold"],
            total_threshold=r["pause_total_threshold"],
            warned=frozenset(_warning_key(w) for w in r["warned"]),
        )
        for r in rows
    ]


def _warning_key(text: str) -> tuple[str, int]:
    threshold, _, percentage = text.partition(":")
    return threshold, int(percentage)


# A warning row is (re)written only if it was never sent, or it is a 'window'
# warning older than the window; RETURNING names exactly the ones to send now.
_CLAIM_WARNINGS = """
INSERT INTO endpoint_health_warnings AS w (endpoint_id, threshold, percentage, failures, sent_at)
SELECT $1, t, p, n, $5 FROM unnest($2::text[], $3::smallint[], $4::int[]) AS x(t, p, n)
ON CONFLICT (endpoint_id, threshold, percentage) DO UPDATE
    SET failures = EXCLUDED.failures, sent_at = EXCLUDED.sent_at
    WHERE w.threshold = 'window' AND w.sent_at < $6
RETURNING threshold, percentage
"""


async def claim_warnings(
    conn: Conn, endpoint_id: UUID, levels: Sequence[tuple[str, int, int]], now: datetime,
    window_seconds: float,
) -> set[tuple[str, int]]:
    """Record warnings (threshold, percentage, failures) as sent; returns those not
    already sent in this window (or since the resume, for 'total')."""
    if not levels:
        return set()
    rows = await conn.fetch(
        _CLAIM_WARNINGS, endpoint_id, [t for t, _, _ in levels], [p for _, p, _ in levels],
        [n for _, _, n in levels], now, window_start(now, window_seconds),
    )
    return {(r["threshold"], r["percentage"]) for r in rows}


# -- pause and resume -----------------------------------------------------------------

_LOCK_ONE = """
SELECT id, tenant_id, state FROM endpoints
WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)
FOR NO KEY UPDATE
"""

_SET_PAUSED = """
UPDATE endpoints
SET state = 'paused', state_reason = $2, state_changed_at = $3, redrive_from = NULL,
    version = version + 1, updated_at = $3
WHERE id = $1
RETURNING id, tenant_id, state, state_reason, state_changed_at, version
"""

# Hold every unfinished delivery, leased ones too: their outcome write keeps them
# held. Rows another transaction is writing right now are skipped; they come back
# due, and the worker holds them at claim time (the endpoint's version changed).
# Rows still waiting for a re-drive from an earlier resume are held afresh.
_HOLD = """
UPDATE deliveries d SET held_since = $2, next_attempt_at = 'infinity', updated_at = $2
WHERE d.id = ANY(ARRAY(
    SELECT id FROM deliveries WHERE endpoint_id = $1 AND status < 2
    FOR UPDATE SKIP LOCKED))
"""


async def pause_endpoint(
    conn: Conn, endpoint_id: UUID, reason: str, now: datetime, tenant_id: UUID | None = None
) -> StateChange:
    """Pause an endpoint and hold its unfinished deliveries (retry budgets untouched;
    new events for it are stored held). Pausing a paused endpoint changes nothing.
    NotFound if it is not the tenant's; Conflict if it is disabled (resume it)."""
    async with conn.transaction():
        current = await conn.fetchrow(_LOCK_ONE, endpoint_id, tenant_id)
        if current is None:
            raise NotFound("no such endpoint", field="endpoint_id")
        if current["state"] == EndpointState.PAUSED:
            return await _unchanged(conn, endpoint_id)
        if current["state"] == EndpointState.DISABLED:
            raise Conflict("the endpoint is disabled; resume it to enable it again",
                           field="state")
        row = await conn.fetchrow(_SET_PAUSED, endpoint_id, reason, now)
        status = await conn.execute(_HOLD, endpoint_id, now)
        assert row is not None
    return _change(row, True, int(status.split()[-1]))


_SET_ACTIVE = """
UPDATE endpoints
SET state = 'active',
    state_reason = CASE WHEN state = 'active' THEN state_reason END,
    state_changed_at = CASE WHEN state = 'active' THEN state_changed_at ELSE $2 END,
    failures_since_resume = 0, redrive_from = $2, version = version + 1, updated_at = $2
WHERE id = $1
RETURNING id, tenant_id, state, state_reason, state_changed_at, version
"""

_HELD_COUNT = """
SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND held_since IS NOT NULL AND status < 2
"""


async def resume_endpoint(
    conn: Conn, endpoint_id: UUID, now: datetime, tenant_id: UUID | None = None
) -> StateChange:
    """Make a paused or disabled endpoint active again: counters and warnings reset,
    held deliveries re-driven gradually by the maintenance re-drive job (at
    health.resume_rate_per_second). On an active endpoint it resets the counters
    and re-drives any stray held delivery. NotFound if it is not the tenant's."""
    async with conn.transaction():
        current = await conn.fetchrow(_LOCK_ONE, endpoint_id, tenant_id)
        if current is None:
            raise NotFound("no such endpoint", field="endpoint_id")
        row = await conn.fetchrow(_SET_ACTIVE, endpoint_id, now)
        await conn.execute("DELETE FROM endpoint_failure_buckets WHERE endpoint_id = $1",
                           endpoint_id)
        await conn.execute("DELETE FROM endpoint_health_warnings WHERE endpoint_id = $1",
                           endpoint_id)
        held = await conn.fetchval(_HELD_COUNT, endpoint_id)
        assert row is not None
    return _change(row, current["state"] != EndpointState.ACTIVE, held)


async def _unchanged(conn: Conn, endpoint_id: UUID) -> StateChange:
    row = await conn.fetchrow(
        "SELECT id, tenant_id, state, state_reason, state_changed_at, version "
        "FROM endpoints WHERE id = $1", endpoint_id)
    assert row is not None
    return _change(row, False, await conn.fetchval(_HELD_COUNT, endpoint_id))


def _change(row: asyncpg.Record, changed: bool, deliveries: int) -> StateChange:
    return StateChange(
        endpoint_id=row["id"], tenant_id=row["tenant_id"], state=EndpointState(row["state"]),
        state_reason=row["state_reason"], state_changed_at=row["state_changed_at"],
        version=row["version"], changed=changed, deliveries=deliveries,
    )


async def set_pause_thresholds(
    conn: Conn,
    endpoint_id: UUID,
    now: datetime,
    *,
    window_threshold: int | None,
    total_threshold: int | None,
    tenant_id: UUID | None = None,
) -> None:
    """Per-endpoint pause thresholds; None falls back to health.* in config."""
    for name, value in (("pause_window_threshold", window_threshold),
                        ("pause_total_threshold", total_threshold)):
        if value is not None and value < 1:
            raise ValidationError(f"{name} must be >= 1", field=name)
    status = await conn.execute(
        """UPDATE endpoints SET pause_window_threshold = $3, pause_total_threshold = $4,
                  version = version + 1, updated_at = $5
           WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)""",
        endpoint_id, tenant_id, window_threshold, total_threshold, now,
    )
    if status == "UPDATE 0":
        raise NotFound("no such endpoint", field="endpoint_id")


# -- reading ----------------------------------------------------------------------------

_LIST = """
SELECT e.id, e.tenant_id, e.url, e.state, e.state_reason, e.state_changed_at,
       e.failures_since_resume, e.pause_window_threshold, e.pause_total_threshold,
       e.redrive_from IS NOT NULL AS redrive_pending,
       coalesce((SELECT sum(b.failures) FROM endpoint_failure_buckets b
                 WHERE b.endpoint_id = e.id AND b.bucket_start >= $1), 0) AS failures_in_window,
       (SELECT count(*) FROM deliveries d
        WHERE d.endpoint_id = e.id AND d.held_since IS NOT NULL AND d.status < 2) AS held,
       e.tls #>> '{client_certificate,not_after}' AS client_certificate_not_after
FROM endpoints e
WHERE ($2::uuid IS NULL OR e.tenant_id = $2) AND ($3::text IS NULL OR e.state = $3)
  AND ($4::uuid IS NULL OR e.id = $4)
ORDER BY e.created_at, e.id
LIMIT $5
"""


async def list_endpoint_health(
    conn: Conn,
    now: datetime,
    window_seconds: float,
    *,
    tenant_id: UUID | None = None,
    state: EndpointState | None = None,
    endpoint_id: UUID | None = None,
    limit: int = 1000,
) -> list[EndpointHealth]:
    """Each endpoint's state, failure counters and held deliveries, oldest first."""
    rows = await conn.fetch(_LIST, window_start(now, window_seconds), tenant_id,
                            None if state is None else str(state), endpoint_id, limit)
    return [
        EndpointHealth(
            endpoint_id=r["id"], tenant_id=r["tenant_id"], url=r["url"],
            state=EndpointState(r["state"]), state_reason=r["state_reason"],
            state_changed_at=r["state_changed_at"],
            failures_in_window=int(r["failures_in_window"]),
            failures_since_resume=r["failures_since_resume"],
            window_threshold=r["pause_window_threshold"],
            total_threshold=r["pause_total_threshold"],
            held=r["held"], redrive_pending=r["redrive_pending"],
            client_certificate_not_after=_time(r["client_certificate_not_after"]),
        )
        for r in rows
    ]


def _time(text: str | None) -> datetime | None:
    """An RFC 3339 time stored in a jsonb view; None when absent or unreadable."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def endpoint_health(
    conn: Conn, endpoint_id: UUID, now: datetime, window_seconds: float,
    tenant_id: UUID | None = None,
) -> EndpointHealth:
    """One endpoint's health; NotFound if it is not the tenant's."""
    found = await list_endpoint_health(conn, now, window_seconds, tenant_id=tenant_id,
                                       endpoint_id=endpoint_id, limit=1)
    if not found:
        raise NotFound("no such endpoint", field="endpoint_id")
    return found[0]
