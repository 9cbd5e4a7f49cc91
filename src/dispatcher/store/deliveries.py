"""The delivery queue: claim due rows with a lease, write a batch of outcomes in one
statement, release what was not sent, and make deliveries due again on request.

A claim moves `next_attempt_at` to the lease expiry, so in-flight rows leave the due
range of `deliveries_due` and come back by themselves if their worker dies. Every
time comparison takes `now` from the caller's clock, so schedules are testable.

Ordering keys: of the unfinished deliveries of one endpoint sharing a key, only the
first (the head) is ever due; the rest wait at 'infinity' (`key_waiting`) and the
head's successor is promoted when the head finishes. Publishing a keyed event and
promoting a key both take the key's advisory lock first, so a row published while
its predecessor finishes is never left waiting.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from dispatcher.model import DeliveryStatus
from dispatcher.store.pool import Conn

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class ClaimedDelivery:
    id: int
    event_id: UUID
    endpoint_id: UUID
    endpoint_version: int
    attempts: int
    retries_left: int
    body: bytes
    ordering_key: str | None = None
    created_at: datetime | None = None
    # A callback's deadline: read by the worker after the claim (the claim stays
    # one statement on the queue alone); None for events.
    deadline_at: datetime | None = None
    rate_limited_attempts: int = 0  # so far; see Outcome.rate_limited
    trace_context: str | None = None  # the publish's, when tracing is on (telemetry.py)


# Endpoints in a rate-limit backoff are read once per claim (a handful of rows from
# a partial index). A keyed row is claimed only if no earlier delivery of its key is
# unfinished and no other one is in flight: the waiting rows are out of the due
# range anyway, this makes "one at a time" hold whatever path made a row due.
#
# Two lanes read the same index from both ends: the oldest due rows ($1 of them),
# and ($6 of them) the newest first attempts, rows due since they were published
# (retries and rows put back for later are not: they would bury a new event). A
# backlog (one tenant's burst, a receiver catching up) is drained oldest first
# while what was just published still goes out at once. $7 bounds the newest lane
# to rows published since then (a worker full of backlog takes only new events).
_DUE = """
    SELECT c.id, c.event_id FROM deliveries c
    WHERE c.status < 2 AND c.next_attempt_at <= $3 AND c.endpoint_id <> ALL($5::uuid[])
      AND c.endpoint_id <> ALL(ARRAY(
          SELECT ep.id FROM endpoints ep WHERE ep.rate_limited_until > $3))
      AND (c.ordering_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM deliveries p
          WHERE p.endpoint_id = c.endpoint_id AND p.ordering_key = c.ordering_key
            AND p.status < 2 AND p.id <> c.id
            AND (p.id < c.id OR p.lease_owner IS NOT NULL)))
"""

# Settings for the connections that claim. Right after a burst the statistics still
# describe a nearly empty queue; sure that few rows are due, the planner answered the
# newest-first lane with a bitmap scan of every due row and a sort (seen in a drain:
# 45,000 rows read to claim 35, and a claim 60% slower than with one lane). Without
# bitmap scans, the plans left walk `deliveries_due` in order and stop at the limit.
CLAIM_SETTINGS = {"enable_bitmapscan": "off"}

# Bodies are read once per event of a claim, not once per row: a fan-out of one large
# event to many endpoints claims one copy of it. The claim also stops at $8 bytes of
# distinct bodies (always at least the first event, however large): the rows of later
# events are locked for the statement but not leased, and stay due.
# `picked` numbers the rows the lanes locked in claim order (oldest lane, then newest,
# as the append returns them; a row may be in both). `grouped` finds each event's
# first row and its carrier (the lowest id: the one row that returns the body);
# `sized` sums the body sizes in order of the events' first rows, so every row of an
# event gets the sum up to and including its event. Only sorts of the claimed rows
# and index lookups: no row estimate can turn it into a join of every claimed row
# with every other. A body's size comes from its TOAST header (octet_length does not
# detoast it).
_CLAIM = f"""
WITH oldest AS (
    {_DUE}
    ORDER BY c.next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), newest AS (
    {_DUE}
      AND c.status = 0 AND c.next_attempt_at = c.created_at AND c.next_attempt_at >= $7
    ORDER BY c.next_attempt_at DESC
    LIMIT $6
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, event_id, row_number() OVER () AS ord
    FROM (SELECT * FROM oldest UNION ALL SELECT * FROM newest) lanes
), grouped AS (
    SELECT id, event_id, ord, min(ord) OVER w AS first, min(id) OVER w AS carrier
    FROM picked WINDOW w AS (PARTITION BY event_id)
), sized AS (
    SELECT id, first, carrier, sum(size) OVER (ORDER BY first) AS upto
    FROM (SELECT id, first, carrier,
                 CASE WHEN ord = first THEN (SELECT octet_length(e.body) FROM events e
                                             WHERE e.id = g.event_id) END AS size
          FROM grouped g) g
)
UPDATE deliveries d
SET lease_owner = $2, next_attempt_at = $4
FROM sized s
WHERE d.id = s.id AND (s.upto <= $8 OR s.first = 1)
RETURNING d.id, d.event_id, d.endpoint_id, d.attempts, d.retries_left, d.ordering_key,
          d.created_at, d.rate_limited_attempts,
          CASE WHEN d.id = s.carrier
               THEN (SELECT body FROM events e WHERE e.id = d.event_id) END AS body,
          (SELECT version FROM endpoints ep WHERE ep.id = d.endpoint_id) AS endpoint_version
"""

# With tracing on: the publish's trace context too, read with the body (once per event).
_CLAIM_TRACED = _CLAIM.replace(
    "          (SELECT version FROM endpoints",
    "          CASE WHEN d.id = s.carrier THEN (SELECT trace_context FROM events e\n"
    "                                           WHERE e.id = d.event_id) END AS trace_context,\n"
    "          (SELECT version FROM endpoints")
assert _CLAIM_TRACED != _CLAIM

# The bytes of distinct event bodies one claim takes at most (delivery.claim_max_bytes).
DEFAULT_CLAIM_MAX_BYTES = 64 * 1024 * 1024


async def claim_due(
    conn: Conn,
    owner: UUID,
    limit: int,
    now: datetime,
    lease_until: datetime,
    skip_endpoints: Sequence[UUID] = (),
    newest: int = 0,
    newest_since: datetime | None = None,
    max_bytes: int = DEFAULT_CLAIM_MAX_BYTES,
    traced: bool = False,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries: `newest` of them newest due first, the
    rest oldest due first; skipping rows other workers hold and endpoints this
    worker has no room for; and no more events than fit in `max_bytes` of bodies
    (the first one always). The deliveries of one event share one body object."""
    newest = min(newest, limit)
    rows = await conn.fetch(_CLAIM_TRACED if traced else _CLAIM, limit - newest, owner, now,
                            lease_until, list(skip_endpoints), newest, newest_since or _EPOCH,
                            max_bytes)
    bodies: dict[UUID, bytes] = {r["event_id"]: r["body"] for r in rows
                                 if r["body"] is not None}
    traces: dict[UUID, str] = {}
    if traced:
        traces = {r["event_id"]: r["trace_context"] for r in rows if r["trace_context"]}
    missing = {r["event_id"] for r in rows} - bodies.keys()
    if missing:  # not expected (one row of every event has it): read them once
        for r in await conn.fetch("SELECT id, body FROM events WHERE id = ANY($1::uuid[])",
                                  list(missing)):
            bodies[r["id"]] = r["body"]
    return [
        ClaimedDelivery(r["id"], r["event_id"], r["endpoint_id"], r["endpoint_version"],
                        r["attempts"], r["retries_left"], bodies[r["event_id"]],
                        r["ordering_key"], r["created_at"],
                        rate_limited_attempts=r["rate_limited_attempts"],
                        trace_context=traces.get(r["event_id"]))
        for r in rows
    ]


async def warm_claim(conn: Conn) -> None:
    """Run the claim once on a new connection (see pool.create_pool): a limit of 0
    at the epoch leases nothing."""
    await claim_due(conn, UUID(int=0), 0, _EPOCH, _EPOCH)


# Give rows back without an attempt: due again at $3 (now for a shutdown, a little
# later for an endpoint with no free slot). Held rows stay held.
_RELEASE = """
UPDATE deliveries
SET lease_owner = NULL,
    next_attempt_at = CASE WHEN held_since IS NULL THEN $3 ELSE 'infinity'::timestamptz END
WHERE id = ANY($1::bigint[]) AND lease_owner = $2
"""


async def release(
    conn: Conn, ids: Sequence[int], owner: UUID, due_at: datetime
) -> None:
    if ids:
        await conn.execute(_RELEASE, list(ids), owner, due_at)


# Everything a worker process that died had leased: due at $2 (now) instead of when
# the lease runs out. Held rows stay held.
_RELEASE_OWNER = """
UPDATE deliveries
SET lease_owner = NULL,
    next_attempt_at = CASE WHEN held_since IS NULL THEN $2 ELSE 'infinity'::timestamptz END
WHERE lease_owner = $1 AND status < 2
"""


async def release_owner(conn: Conn, owner: UUID, due_at: datetime) -> int:
    """Give back every lease of `owner` and wake the claimers; returns the rows."""
    status = await conn.execute(_RELEASE_OWNER, owner, due_at)
    await conn.execute("SELECT pg_notify('dispatcher_deliveries', '')")
    return int(status.split()[-1])


# Rows whose endpoint was paused or disabled after they were claimed: no attempt.
# The state is read again here: if the endpoint was resumed since this worker's
# cached copy, the row is given back due now instead of held on an active endpoint.
_HOLD = """
UPDATE deliveries d
SET lease_owner = NULL,
    held_since = CASE WHEN ep.state = 'active' THEN d.held_since
                      ELSE coalesce(d.held_since, $3) END,
    next_attempt_at = CASE WHEN ep.state = 'active' AND d.held_since IS NULL THEN $3
                           ELSE 'infinity'::timestamptz END
FROM endpoints ep
WHERE d.id = ANY($1::bigint[]) AND d.lease_owner = $2 AND ep.id = d.endpoint_id
"""


async def hold(conn: Conn, ids: Sequence[int], owner: UUID, now: datetime) -> None:
    if ids:
        await conn.execute(_HOLD, list(ids), owner, now)


@dataclass(slots=True)
class Outcome:
    """One attempt and the delivery state it leads to."""

    delivery_id: int
    endpoint_id: UUID
    attempt_number: int
    status: DeliveryStatus
    retries_left: int
    next_attempt_at: datetime
    started_at: datetime
    duration_ms: float
    request_headers: str  # JSON
    response_status: int | None
    response_headers: str | None  # JSON
    response_body: str | None
    failure_reason: str | None
    error_detail: str | None = None
    ordering_key: str | None = None
    callback: bool = False  # an attempt at an approval callback
    decision: str | None = None  # callbacks: `ok` or `deny` when the answer was one
    rate_limited: bool = False  # a rate-limited attempt (one more in the delivery's count)


# The attempt is logged if its delivery still exists (an endpoint or event deleted
# while the request was on the wire takes the delivery and its log with it); the
# delivery state only changes if this worker still holds the lease. `live` locks the
# rows FOR KEY SHARE, so a concurrent delete either commits first (the row is
# skipped) or waits for this statement (and then removes the attempt with it): the
# foreign key can never fail. A delivery paused while in flight stays held.
_RECORD = """
WITH o AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::int[], $4::smallint[], $5::int[],
                         $6::timestamptz[], $7::timestamptz[], $8::float8[], $9::text[],
                         $10::int[], $11::text[], $12::text[], $13::text[], $14::text[],
                         $17::bool[])
        AS o(delivery_id, endpoint_id, attempt_number, status, retries_left, next_at,
             started_at, duration_ms, request_headers, response_status, response_headers,
             response_body, failure_reason, error_detail, rate_limited)
), live AS (
    SELECT d.id FROM deliveries d WHERE d.id = ANY($1::bigint[]) FOR KEY SHARE
), upd AS (
    UPDATE deliveries d
    SET status = o.status, attempts = o.attempt_number, retries_left = o.retries_left,
        next_attempt_at = CASE WHEN d.held_since IS NOT NULL AND o.status < 2
                               THEN 'infinity'::timestamptz ELSE o.next_at END,
        failure_reason = o.failure_reason, last_attempt_at = o.started_at,
        rate_limited_attempts = d.rate_limited_attempts + o.rate_limited::int,
        lease_owner = NULL, retry_pending = false, updated_at = $15
    FROM o
    WHERE d.id = o.delivery_id AND d.lease_owner = $16
)
INSERT INTO attempts (delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                      request_headers, response_status, response_headers, response_body,
                      failure_reason, error_detail)
SELECT o.delivery_id, o.endpoint_id, o.attempt_number, o.started_at, o.duration_ms,
       o.request_headers::jsonb, o.response_status, o.response_headers::jsonb,
       o.response_body, o.failure_reason, o.error_detail
FROM o JOIN live ON live.id = o.delivery_id
RETURNING delivery_id
"""


async def warm_record(conn: Conn) -> None:
    """Run the outcome statement once on a new connection: no rows, nothing written."""
    await conn.fetch(_RECORD, *([] for _ in range(14)), _EPOCH, UUID(int=0), [])


async def record_outcomes(
    conn: Conn, outcomes: Sequence[Outcome], owner: UUID, now: datetime
) -> set[int]:
    """Write every attempt of a batch and the new delivery states in one statement;
    returns the ids of the deliveries written (those that still exist)."""
    if not outcomes:
        return set()
    cols: list[list[object]] = [[] for _ in range(15)]
    for o in outcomes:
        for col, value in zip(cols, (
            o.delivery_id, o.endpoint_id, o.attempt_number, int(o.status), o.retries_left,
            o.next_attempt_at, o.started_at, o.duration_ms, o.request_headers,
            o.response_status, o.response_headers, o.response_body, o.failure_reason,
            o.error_detail, o.rate_limited,
        ), strict=True):
            col.append(value)
    rows = await conn.fetch(_RECORD, *cols[:14], now, owner, cols[14])
    written = {r[0] for r in rows}
    finished = {(o.endpoint_id, o.ordering_key) for o in outcomes
                if o.ordering_key is not None and o.status >= DeliveryStatus.SUCCESS
                and o.delivery_id in written}
    if finished:
        await promote_heads(conn, sorted(finished), now)
    return written


# The key locks of a set of ordering keys, taken in one order by every caller.
_LOCK_KEYS = """
SELECT pg_advisory_xact_lock(k)
FROM (SELECT DISTINCT hashtextextended(key, 0) AS k FROM unnest($1::text[]) AS key ORDER BY 1) s
"""


async def lock_ordering_keys(conn: Conn, keys: Sequence[str]) -> None:
    """Serialize, until the transaction ends, with everyone publishing or promoting
    these keys (the same lock for a key on every endpoint: coarser, never wrong)."""
    if keys:
        await conn.execute(_LOCK_KEYS, sorted(set(keys)))


# The head of each key (its first unfinished delivery) stops waiting: due now, or
# still at 'infinity' while held.
_PROMOTE = """
WITH k AS (
    SELECT DISTINCT endpoint_id, ordering_key
    FROM unnest($1::uuid[], $2::text[]) AS k(endpoint_id, ordering_key)
), head AS (
    SELECT (SELECT d.id FROM deliveries d
            WHERE d.endpoint_id = k.endpoint_id AND d.ordering_key = k.ordering_key
              AND d.status < 2
            ORDER BY d.id LIMIT 1) AS id
    FROM k
)
UPDATE deliveries d
SET key_waiting = false,
    next_attempt_at = CASE WHEN d.held_since IS NULL THEN $3::timestamptz
                           ELSE 'infinity'::timestamptz END
FROM head
WHERE d.id = head.id AND d.key_waiting
"""


async def promote_heads(
    conn: Conn, keys: Sequence[tuple[UUID, str]], now: datetime
) -> int:
    """Let the next delivery of each (endpoint, key) go: call it in the transaction
    that finished the previous one. Returns how many rows became heads."""
    if not keys:
        return 0
    await lock_ordering_keys(conn, [k for _, k in keys])
    status = await conn.execute(_PROMOTE, [e for e, _ in keys], [k for _, k in keys], now)
    count = int(status.split()[-1])
    if count:
        await conn.execute("SELECT pg_notify('dispatcher_deliveries', '')")
    return count


# Waiting rows whose key has no unfinished delivery before them that is not waiting:
# their predecessor finished outside the delivery path (hold limit, a delete).
_ORPHANED_KEYS = """
SELECT DISTINCT w.endpoint_id, w.ordering_key FROM deliveries w
WHERE w.key_waiting AND w.status < 2
  AND NOT EXISTS (SELECT 1 FROM deliveries p
                  WHERE p.endpoint_id = w.endpoint_id AND p.ordering_key = w.ordering_key
                    AND p.status < 2 AND p.id < w.id AND NOT p.key_waiting)
LIMIT $1
"""


async def promote_orphaned_heads(conn: Conn, now: datetime, limit: int = 1000) -> int:
    """The maintenance sweep: promote the head of every key left waiting."""
    rows = await conn.fetch(_ORPHANED_KEYS, limit)
    if not rows:
        return 0
    async with conn.transaction():
        return await promote_heads(
            conn, [(r["endpoint_id"], r["ordering_key"]) for r in rows], now)


# Manual retry: one attempt now for a Retrying or Failed delivery. A Failed one
# goes back to Retrying with its retries used up, so a failure ends it Failed again.
# `retry_pending` stays set until that attempt is recorded, so concurrent retries of
# one delivery serialize on its row and only the first is acknowledged.
_RETRY_ONE = """
UPDATE deliveries d
SET status = 1, next_attempt_at = CASE WHEN ep.state = 'active' THEN $3
                                       ELSE 'infinity'::timestamptz END,
    held_since = CASE WHEN ep.state = 'active' THEN NULL ELSE coalesce(d.held_since, $3) END,
    lease_owner = NULL, retry_pending = true, updated_at = $3
FROM endpoints ep
WHERE d.endpoint_id = $1 AND d.event_id = $2 AND ep.id = d.endpoint_id
  AND d.status IN (1, 3) AND d.lease_owner IS NULL
  AND NOT (d.retry_pending AND d.status < 2)
RETURNING d.id
"""


class RetryRefused(enum.Enum):
    """Why retry_delivery scheduled nothing."""

    NOT_FOUND = "not_found"
    NOT_RETRYABLE = "not_retryable"  # Pending or Success
    IN_PROGRESS = "in_progress"  # an attempt is on the wire right now
    ALREADY_SCHEDULED = "already_scheduled"  # an earlier retry's attempt is still to come


async def retry_delivery(
    conn: Conn, endpoint_id: UUID, event_id: UUID, now: datetime
) -> RetryRefused | None:
    """Make one Retrying/Failed delivery due now (exactly one new attempt); None when
    done, else why not."""
    if await conn.fetchval(_RETRY_ONE, endpoint_id, event_id, now) is not None:
        await conn.execute("SELECT pg_notify('dispatcher_deliveries', '')")
        return None
    row = await conn.fetchrow(
        "SELECT status, lease_owner, retry_pending FROM deliveries "
        "WHERE endpoint_id = $1 AND event_id = $2", endpoint_id, event_id)
    if row is None:
        return RetryRefused.NOT_FOUND
    if row["status"] not in (DeliveryStatus.RETRYING, DeliveryStatus.FAILED):
        return RetryRefused.NOT_RETRYABLE
    if row["retry_pending"] and row["status"] < DeliveryStatus.SUCCESS:
        return RetryRefused.ALREADY_SCHEDULED
    return RetryRefused.IN_PROGRESS


_RETRY_MANY = """
WITH picked AS (
    SELECT d.id FROM deliveries d
    WHERE d.endpoint_id = $1 AND d.status = ANY($2::smallint[]) AND d.lease_owner IS NULL
      AND NOT (d.retry_pending AND d.status < 2)
      AND d.created_at >= $3 AND d.created_at < $4
    ORDER BY d.id
    LIMIT $6
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET status = 1, next_attempt_at = CASE WHEN ep.state = 'active' THEN $5
                                       ELSE 'infinity'::timestamptz END,
    held_since = CASE WHEN ep.state = 'active' THEN NULL ELSE coalesce(d.held_since, $5) END,
    retry_pending = true, updated_at = $5
FROM picked, endpoints ep
WHERE d.id = picked.id AND ep.id = d.endpoint_id
"""


async def bulk_retry(
    conn: Conn,
    endpoint_id: UUID,
    statuses: Sequence[DeliveryStatus],
    since: datetime,
    until: datetime,
    now: datetime,
    limit: int = 100_000,
) -> int:
    """Replay deliveries of one endpoint created in [since, until) with one of
    `statuses` (Retrying and/or Failed); returns how many were queued."""
    allowed = [int(s) for s in statuses if s in (DeliveryStatus.RETRYING, DeliveryStatus.FAILED)]
    result = await conn.execute(_RETRY_MANY, endpoint_id, allowed, since, until, now, limit)
    count = int(result.split()[-1])
    if count:
        await conn.execute("SELECT pg_notify('dispatcher_deliveries', '')")
    return count
