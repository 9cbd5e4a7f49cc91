"""Approval callbacks: create one (an events row, its callbacks row and one delivery
to the callback endpoint, in one transaction), read and list them, record a
decision exactly once, fail the ones past their deadline (by a sweep, and when a
worker claims one too late to send it), and reopen a Failed one.

The decision lives in `callbacks.outcome`: NULL while undecided, then `ok`, `deny`
or `failed`. Every write of it is a conditional UPDATE (`outcome IS NULL`), so
whichever of two racing writers commits first decides, and the other changes
nothing. The delivery row follows the decision (Success for `ok`/`deny`, Failed
for `failed`), so nothing is sent once a callback is decided.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.model import CallbackStatus, DeliveryStatus, retries_left_shown
from dispatcher.signing import COBO, serialize_body
from dispatcher.store.events import event_body
from dispatcher.store.pool import Conn

NOTIFY_CHANNEL = "dispatcher_callbacks"  # payload: the id of a decided callback
OK = "ok"
DENY = "deny"
FAILED = "failed"


def callback_body(callback_id: UUID, type_: str, created_at: datetime, data: Any,
                  scheme: str) -> bytes:
    """What the callback endpoint receives: Cobo sends the `data` object itself (a
    Transaction); every other scheme gets the event envelope, `event_id` holding the
    callback id."""
    if scheme == COBO:
        return serialize_body(data)
    return event_body(callback_id, type_, created_at, data)


@dataclass(frozen=True)
class CallbackView:
    id: UUID
    tenant_id: UUID
    endpoint_id: UUID
    type: str
    data: Any
    outcome: str | None
    callback_failure: str | None
    decided_at: datetime | None
    deadline_at: datetime
    created_at: datetime
    delivery_id: int
    body: bytes
    delivery_status: DeliveryStatus
    attempts: int
    retries_left: int
    next_attempt_at: datetime
    leased: bool
    held_since: datetime | None
    delivery_failure: str | None

    @property
    def status(self) -> CallbackStatus:
        if self.outcome == OK:
            return CallbackStatus.APPROVED
        if self.outcome == DENY:
            return CallbackStatus.DENIED
        if self.outcome == FAILED:
            return CallbackStatus.FAILED
        return CallbackStatus.PENDING if self.attempts == 0 else CallbackStatus.RETRYING

    @property
    def decision(self) -> str | None:
        return self.outcome if self.outcome in (OK, DENY) else None

    @property
    def decided(self) -> bool:
        return self.outcome is not None

    @property
    def failure_reason(self) -> str | None:
        """Why it failed, or why the last attempt was not a decision."""
        if self.outcome in (OK, DENY):
            return None
        return self.callback_failure or self.delivery_failure

    @property
    def next_retry_at(self) -> datetime | None:
        if self.decided or self.leased or self.held_since is not None:
            return None
        return self.next_attempt_at


_SELECT = """
SELECT c.id, c.tenant_id, c.endpoint_id, c.type, c.data, c.outcome,
       c.failure_reason AS callback_failure, c.decided_at, c.deadline_at, c.created_at,
       d.id AS delivery_id, e.body, d.status AS delivery_status, d.attempts, d.retries_left,
       d.next_attempt_at, d.lease_owner IS NOT NULL AS leased, d.held_since,
       d.failure_reason AS delivery_failure
FROM callbacks c
JOIN events e ON e.id = c.id
JOIN deliveries d ON d.event_id = c.id AND d.endpoint_id = c.endpoint_id
"""

# The status label as SQL, for the list's filter.
_STATUS_SQL = """CASE c.outcome WHEN 'ok' THEN 'Approved' WHEN 'deny' THEN 'Denied'
    WHEN 'failed' THEN 'Failed' ELSE CASE WHEN d.attempts = 0 THEN 'Pending'
    ELSE 'Retrying' END END"""


def _view(row: asyncpg.Record) -> CallbackView:
    values = dict(row)
    values["data"] = json.loads(values["data"])
    status = values["delivery_status"] = DeliveryStatus(values["delivery_status"])
    values["retries_left"] = retries_left_shown(status, values["retries_left"],
                                                values["delivery_failure"])
    return CallbackView(**values)


@dataclass(frozen=True)
class NewCallback:
    id: UUID
    tenant_id: UUID
    endpoint_id: UUID
    type: str
    data: dict[str, Any]
    body: bytes
    deadline_at: datetime
    idempotency_key: str | None
    retries: int
    trace_context: str | None = None  # the request's, when tracing is on


@dataclass(frozen=True)
class CallbackTarget:
    """What a new callback needs to know about its endpoint."""

    id: UUID
    url: str
    signing_scheme: str
    retry_policy: str
    state: str


_TARGETS = """
SELECT id, url, signing_scheme, retry_policy, state FROM endpoints
WHERE tenant_id = $1 AND kind = 'callback' AND ($2::uuid IS NULL OR id = $2)
  AND ($2::uuid IS NOT NULL OR state = 'active')
ORDER BY created_at LIMIT 2
"""


async def callback_targets(
    conn: Conn, tenant_id: UUID, endpoint_id: UUID | None
) -> list[CallbackTarget]:
    """The named callback endpoint of the tenant, or (none named) up to two of its
    active callback endpoints."""
    rows = await conn.fetch(_TARGETS, tenant_id, endpoint_id)
    return [CallbackTarget(**dict(r)) for r in rows]


async def find_by_key(conn: Conn, tenant_id: UUID, key: str) -> UUID | None:
    found: UUID | None = await conn.fetchval(
        "SELECT id FROM callbacks WHERE tenant_id = $1 AND idempotency_key = $2", tenant_id, key)
    return found


async def forget_key(conn: Conn, callback_id: UUID) -> None:
    await conn.execute("UPDATE callbacks SET idempotency_key = NULL WHERE id = $1", callback_id)


_CREATE = """
WITH ev AS (
    INSERT INTO events (id, tenant_id, type, body, created_at, callback, trace_context)
    VALUES ($1, $2, $3, $4, $5, true, $11)
), cb AS (
    INSERT INTO callbacks (id, tenant_id, endpoint_id, type, data, deadline_at, created_at,
                           idempotency_key)
    VALUES ($1, $2, $6, $3, $7::json, $8, $5, $9)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
INSERT INTO deliveries (event_id, endpoint_id, status, retries_left, next_attempt_at,
                        held_since, created_at, updated_at)
SELECT $1, ep.id, 0, $10,
       CASE WHEN ep.state = 'active' THEN $5 ELSE 'infinity'::timestamptz END,
       CASE WHEN ep.state = 'active' THEN NULL ELSE $5 END, $5, $5
FROM endpoints ep, cb WHERE ep.id = $6
RETURNING id
"""


async def create_callback(conn: Conn, new: NewCallback, now: datetime) -> bool:
    """Store the callback and its delivery (held if the endpoint is paused); False
    when its idempotency key was taken meanwhile (nothing is stored then). Call
    inside a transaction."""
    delivery_id = await conn.fetchval(
        _CREATE, new.id, new.tenant_id, new.type, new.body, now, new.endpoint_id,
        json.dumps(new.data), new.deadline_at, new.idempotency_key, new.retries,
        new.trace_context,
    )
    if delivery_id is None:
        # The events row went in without its callback: take it out again.
        await conn.execute("DELETE FROM events WHERE id = $1", new.id)
        return False
    return True


async def get_callback(conn: Conn, tenant_id: UUID, callback_id: UUID) -> CallbackView | None:
    row = await conn.fetchrow(_SELECT + "WHERE c.id = $1 AND c.tenant_id = $2",
                              callback_id, tenant_id)
    return None if row is None else _view(row)


async def list_callbacks(
    conn: Conn,
    tenant_id: UUID,
    *,
    statuses: Sequence[CallbackStatus] | None,
    types: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, UUID] | None,
    limit: int,
) -> list[CallbackView]:
    """The tenant's callbacks, newest first, keyset-paginated on (created_at, id)."""
    before_at, before_id = before if before else (None, None)
    rows = await conn.fetch(
        _SELECT + f"""WHERE c.tenant_id = $1
              AND ($2::text[] IS NULL OR {_STATUS_SQL} = ANY($2))
              AND ($3::text[] IS NULL OR c.type = ANY($3))
              AND ($4::timestamptz IS NULL OR c.created_at >= $4)
              AND ($5::timestamptz IS NULL OR c.created_at < $5)
              AND ($6::timestamptz IS NULL OR (c.created_at, c.id) < ($6, $7::uuid))
            ORDER BY c.created_at DESC, c.id DESC LIMIT $8""",
        tenant_id, None if statuses is None else [str(s) for s in statuses],
        None if types is None else list(types), since, until, before_at, before_id, limit,
    )
    return [_view(r) for r in rows]


@dataclass(frozen=True)
class Decided:
    """A callback that has just been decided (or failed)."""

    id: UUID
    tenant_id: UUID
    endpoint_id: UUID
    type: str
    outcome: str
    failure_reason: str | None
    decided_at: datetime


@dataclass(frozen=True)
class Answer:
    """One attempt at a callback delivery, as the engine classified it."""

    delivery_id: int
    decision: str | None  # ok, deny, or None (not a decision)
    delivery_status: DeliveryStatus  # what the retry schedule made of the attempt
    next_attempt_at: datetime
    failure_reason: str | None


# Only an undecided callback changes, and only to a final state: a decision that
# arrived before the deadline, or Failed (retries exhausted, or the deadline passed,
# or the next attempt would come at or after it, when nothing is sent any more).
# Rows of other events do not join.
_DECIDE = """
WITH a AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::timestamptz[],
                         $5::text[]) AS a(delivery_id, decision, status, next_at, reason)
), c AS (
    SELECT cb.id, a.* FROM a
    JOIN deliveries d ON d.id = a.delivery_id
    JOIN callbacks cb ON cb.id = d.event_id
)
UPDATE callbacks cb
SET outcome = CASE WHEN $6 <= cb.deadline_at AND c.decision IS NOT NULL THEN c.decision
                   ELSE 'failed' END,
    failure_reason = CASE
        WHEN $6 <= cb.deadline_at AND c.decision IS NOT NULL THEN NULL
        WHEN $6 > cb.deadline_at OR c.status < 2 THEN 'deadline_expired'
        ELSE c.reason END,
    decided_at = $6
FROM c
WHERE cb.id = c.id AND cb.outcome IS NULL
  AND ($6 > cb.deadline_at OR c.decision IS NOT NULL OR c.status = 3
       OR c.next_at >= cb.deadline_at)
RETURNING cb.id, cb.tenant_id, cb.endpoint_id, cb.type, cb.outcome, cb.failure_reason,
          cb.decided_at
"""

# The delivery of a decided callback is finished, whatever the attempt just
# recorded said (a late answer of a lost lease, or one after the decision).
_SETTLE = """
UPDATE deliveries d
SET status = CASE WHEN cb.outcome = 'failed' THEN 3 ELSE 2 END,
    failure_reason = CASE WHEN cb.outcome = 'failed' THEN cb.failure_reason
                          ELSE NULL END,
    next_attempt_at = $2, held_since = NULL, retry_pending = false
FROM callbacks cb
WHERE d.id = ANY($1::bigint[]) AND cb.id = d.event_id AND cb.outcome IS NOT NULL
  AND d.status <> CASE WHEN cb.outcome = 'failed' THEN 3 ELSE 2 END
"""


async def record_answers(conn: Conn, answers: Sequence[Answer], now: datetime) -> list[Decided]:
    """Decide the callbacks these attempts answered (once: an already decided one
    keeps its decision), and settle their deliveries. Call inside the transaction
    that recorded the attempts."""
    if not answers:
        return []
    ids = [a.delivery_id for a in answers]
    rows = await conn.fetch(
        _DECIDE, ids, [a.decision for a in answers], [int(a.delivery_status) for a in answers],
        [a.next_attempt_at for a in answers], [a.failure_reason for a in answers], now,
    )
    return await _settle(conn, ids, rows, now)


# Callbacks whose delivery a worker claimed at or after the deadline (an attempt then
# could never be answered in time): failed as the sweep fails them, unless decided
# meanwhile.
_EXPIRE_CLAIMED = """
UPDATE callbacks cb
SET outcome = 'failed', failure_reason = 'deadline_expired', decided_at = $2
FROM deliveries d
WHERE d.id = ANY($1::bigint[]) AND cb.id = d.event_id AND cb.endpoint_id = d.endpoint_id
  AND cb.outcome IS NULL AND cb.deadline_at <= $2
RETURNING cb.id, cb.tenant_id, cb.endpoint_id, cb.type, cb.outcome, cb.failure_reason,
          cb.decided_at
"""


async def expire_claimed(conn: Conn, delivery_ids: Sequence[int], now: datetime) -> list[Decided]:
    """Fail the undecided callbacks of these deliveries, claimed but not sent because
    their deadline had passed, and settle the deliveries (no attempt is logged: none
    was made). Call inside a transaction; the caller gives back the leases."""
    if not delivery_ids:
        return []
    ids = list(delivery_ids)
    rows = await conn.fetch(_EXPIRE_CLAIMED, ids, now)
    return await _settle(conn, ids, rows, now)


async def _settle(conn: Conn, delivery_ids: list[int], decided_rows: Sequence[asyncpg.Record],
                  now: datetime) -> list[Decided]:
    """Finish the deliveries of decided callbacks and wake whoever waits on the ones
    decided just now."""
    await conn.execute(_SETTLE, delivery_ids, now)
    decided = [Decided(**dict(r)) for r in decided_rows]
    await notify(conn, [d.id for d in decided])
    return decided


async def deadlines(conn: Conn, callback_ids: Sequence[UUID]) -> dict[UUID, datetime]:
    """The deadline of each of these callbacks (by id, which is also the event id)."""
    rows = await conn.fetch("SELECT id, deadline_at FROM callbacks WHERE id = ANY($1::uuid[])",
                            list(callback_ids))
    return {r["id"]: r["deadline_at"] for r in rows}


_EXPIRE = """
WITH x AS (
    UPDATE callbacks SET outcome = 'failed', failure_reason = 'deadline_expired',
                         decided_at = $1
    WHERE id IN (SELECT id FROM callbacks WHERE outcome IS NULL AND deadline_at < $1
                 ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING id, tenant_id, endpoint_id, type, outcome, failure_reason, decided_at
), d AS (
    UPDATE deliveries d
    SET status = 3, failure_reason = 'deadline_expired', next_attempt_at = $1,
        held_since = NULL, retry_pending = false
    FROM x WHERE d.event_id = x.id AND d.endpoint_id = x.endpoint_id AND d.status < 2
)
SELECT * FROM x
"""


async def expire_overdue(conn: Conn, now: datetime, limit: int = 1000) -> list[Decided]:
    """Fail (fail closed) undecided callbacks whose deadline has passed, held or not.
    Call inside a transaction."""
    rows = await conn.fetch(_EXPIRE, now, limit)
    decided = [Decided(**dict(r)) for r in rows]
    await notify(conn, [d.id for d in decided])
    return decided


async def notify(conn: Conn, callback_ids: Sequence[UUID]) -> None:
    """Tell every process waiting on these callbacks (delivered on commit)."""
    if callback_ids:
        await conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', i) FROM unnest($1::text[]) i",
                           [str(i) for i in callback_ids])


class ReopenRefused(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


_REOPEN = """
UPDATE callbacks SET outcome = NULL, failure_reason = NULL, decided_at = NULL
WHERE id = $1 AND tenant_id = $2 AND outcome = 'failed' AND deadline_at > $3
RETURNING endpoint_id
"""


async def reopen(conn: Conn, tenant_id: UUID, callback_id: UUID, now: datetime) -> UUID | None:
    """A Failed callback whose deadline has not passed becomes undecided again;
    returns its endpoint, or None when it is not such a callback. Call inside a
    transaction, with the delivery's retry."""
    endpoint_id: UUID | None = await conn.fetchval(_REOPEN, callback_id, tenant_id, now)
    return endpoint_id
