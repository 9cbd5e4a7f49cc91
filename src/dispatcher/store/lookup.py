"""Read side for "what happened to event X?": one delivery's status (shaped like
Cobo's event-status API), an endpoint's deliveries filtered and paginated, an event
with one status per endpoint, per-attempt logs, and the gauges /metrics shows.
Every query is scoped to the tenant."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.model import DeliveryStatus, retries_left_shown
from dispatcher.signing import COBO
from dispatcher.store.events import cobo_envelope
from dispatcher.store.pool import Conn


@dataclass(frozen=True)
class DeliveryView:
    delivery_id: int
    event_id: UUID
    endpoint_id: UUID
    url: str
    type: str
    created_at: datetime
    body: bytes
    status: DeliveryStatus
    attempts: int
    retries_left: int
    next_attempt_at: datetime
    leased: bool
    held_since: datetime | None
    last_attempt_at: datetime | None
    failure_reason: str | None
    ordering_key: str | None = None
    blocked_by: UUID | None = None
    signing_scheme: str = ""
    kind: str = "webhook"

    @property
    def data(self) -> Any:
        """The event's `data`; a cobo callback's body is the data itself."""
        parsed = json.loads(self.body)
        if self.kind == "callback" and not (
                isinstance(parsed, dict) and parsed.get("event_id") == str(self.event_id)):
            return parsed
        return parsed["data"]

    @property
    def sent_body(self) -> bytes:
        """The body as sent: a cobo webhook endpoint gets its URL in the envelope."""
        if self.signing_scheme == COBO and self.kind == "webhook":
            return cobo_envelope(self.body, self.url)
        return self.body

    @property
    def next_retry_at(self) -> datetime | None:
        """When the next attempt is scheduled: None when finished, in flight, held or
        waiting for an earlier delivery of its ordering key."""
        if (self.status >= DeliveryStatus.SUCCESS or self.leased or self.held_since is not None
                or self.blocked_by is not None):
            return None
        return self.next_attempt_at


@dataclass(frozen=True)
class EventView:
    id: UUID
    type: str
    created_at: datetime
    body: bytes


@dataclass(frozen=True)
class AttemptView:
    id: int
    attempt_number: int
    started_at: datetime
    duration_ms: float
    request_headers: Any
    response_status: int | None
    response_headers: Any
    response_body: str | None
    failure_reason: str | None
    error_detail: str | None


def event_data(body: bytes) -> Any:
    """The `data` of a stored event body (the envelope is serialized once at publish).
    A cobo callback's body has no envelope: it is the data itself."""
    parsed = json.loads(body)
    if isinstance(parsed, dict) and "event_id" in parsed and "data" in parsed:
        return parsed["data"]
    return parsed


_DELIVERY = """
SELECT d.id AS delivery_id, d.event_id, d.endpoint_id, ep.url, e.type, e.created_at, e.body,
       d.status, d.attempts, d.retries_left, d.next_attempt_at,
       d.lease_owner IS NOT NULL AS leased, d.held_since, d.last_attempt_at, d.failure_reason,
       d.ordering_key,
       CASE WHEN d.ordering_key IS NOT NULL AND d.status < 2 THEN
           (SELECT p.event_id FROM deliveries p
            WHERE p.endpoint_id = d.endpoint_id AND p.ordering_key = d.ordering_key
              AND p.status < 2 AND p.id < d.id
            ORDER BY p.id LIMIT 1) END AS blocked_by,
       ep.signing_scheme, ep.kind
FROM deliveries d
JOIN events e ON e.id = d.event_id
JOIN endpoints ep ON ep.id = d.endpoint_id
"""


def _delivery(row: asyncpg.Record) -> DeliveryView:
    values = dict(row)
    values["status"] = status = DeliveryStatus(values["status"])
    values["retries_left"] = retries_left_shown(status, values["retries_left"],
                                                values["failure_reason"])
    return DeliveryView(**values)


async def endpoint_url(conn: Conn, tenant_id: UUID, endpoint_id: UUID) -> str | None:
    """The endpoint's URL if the tenant owns it, else None."""
    url: str | None = await conn.fetchval(
        "SELECT url FROM endpoints WHERE id = $1 AND tenant_id = $2", endpoint_id, tenant_id
    )
    return url


async def endpoint_kind(conn: Conn, endpoint_id: UUID) -> str | None:
    kind: str | None = await conn.fetchval("SELECT kind FROM endpoints WHERE id = $1",
                                           endpoint_id)
    return kind


async def endpoint_event(
    conn: Conn, tenant_id: UUID, endpoint_id: UUID, event_id: UUID
) -> DeliveryView | None:
    row = await conn.fetchrow(
        _DELIVERY + "WHERE d.endpoint_id = $1 AND d.event_id = $2 AND ep.tenant_id = $3",
        endpoint_id, event_id, tenant_id,
    )
    return None if row is None else _delivery(row)


async def endpoint_events(
    conn: Conn,
    tenant_id: UUID,
    endpoint_id: UUID,
    *,
    statuses: Sequence[DeliveryStatus] | None,
    types: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    before: int | None,
    limit: int,
) -> list[DeliveryView]:
    """The endpoint's deliveries, newest first, keyset-paginated on the delivery id
    (`before`); the time range [since, until) is on the event's creation time."""
    rows = await conn.fetch(
        _DELIVERY
        + """WHERE d.endpoint_id = $1 AND ep.tenant_id = $2
               AND ($3::smallint[] IS NULL OR d.status = ANY($3))
               AND ($4::text[] IS NULL OR e.type = ANY($4))
               AND ($5::timestamptz IS NULL OR e.created_at >= $5)
               AND ($6::timestamptz IS NULL OR e.created_at < $6)
               AND ($7::bigint IS NULL OR d.id < $7)
             ORDER BY d.id DESC LIMIT $8""",
        endpoint_id, tenant_id,
        None if statuses is None else [int(s) for s in statuses],
        None if types is None else list(types),
        since, until, before, limit,
    )
    return [_delivery(r) for r in rows]


async def get_event(conn: Conn, tenant_id: UUID, event_id: UUID) -> EventView | None:
    row = await conn.fetchrow(
        "SELECT id, type, created_at, body FROM events "
        "WHERE id = $1 AND tenant_id = $2 AND NOT callback",
        event_id, tenant_id,
    )
    return None if row is None else EventView(**dict(row))


async def event_deliveries(conn: Conn, tenant_id: UUID, event_id: UUID) -> list[DeliveryView]:
    rows = await conn.fetch(
        _DELIVERY + "WHERE d.event_id = $1 AND ep.tenant_id = $2 ORDER BY d.id",
        event_id, tenant_id,
    )
    return [_delivery(r) for r in rows]


async def deliveries_of_events(
    conn: Conn, tenant_id: UUID, event_ids: Sequence[UUID]
) -> dict[UUID, list[DeliveryView]]:
    """event_deliveries for many events in one query (a page of a list)."""
    rows = await conn.fetch(
        _DELIVERY + "WHERE d.event_id = ANY($1::uuid[]) AND ep.tenant_id = $2 ORDER BY d.id",
        list(event_ids), tenant_id,
    )
    out: dict[UUID, list[DeliveryView]] = {event_id: [] for event_id in event_ids}
    for row in rows:
        d = _delivery(row)
        out[d.event_id].append(d)
    return out


async def list_events(
    conn: Conn,
    tenant_id: UUID,
    *,
    types: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, UUID] | None,
    limit: int,
    statuses: Sequence[DeliveryStatus] | None = None,
) -> list[EventView]:
    """The tenant's events, newest first, keyset-paginated on (created_at, id); with
    `statuses`, only events with a delivery in one of them."""
    before_at, before_id = before if before else (None, None)
    rows = await conn.fetch(
        """SELECT id, type, created_at, body FROM events
           WHERE tenant_id = $1 AND NOT callback
             AND ($2::text[] IS NULL OR type = ANY($2))
             AND ($3::timestamptz IS NULL OR created_at >= $3)
             AND ($4::timestamptz IS NULL OR created_at < $4)
             AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
             AND ($8::smallint[] IS NULL OR EXISTS (
                   SELECT 1 FROM deliveries d
                   WHERE d.event_id = events.id AND d.status = ANY($8)))
           ORDER BY created_at DESC, id DESC LIMIT $7""",
        tenant_id, None if types is None else list(types), since, until, before_at, before_id,
        limit, None if statuses is None else [int(s) for s in statuses],
    )
    return [EventView(**dict(r)) for r in rows]


async def attempt_logs(
    conn: Conn, delivery_id: int, *, after: int | None, limit: int
) -> list[AttemptView]:
    """The attempts of one delivery (whose ownership the caller checked), oldest first."""
    rows = await conn.fetch(
        """SELECT id, attempt_number, started_at, duration_ms, request_headers,
                  response_status, response_headers, response_body, failure_reason,
                  error_detail
           FROM attempts WHERE delivery_id = $1 AND ($2::bigint IS NULL OR id > $2)
           ORDER BY id LIMIT $3""",
        delivery_id, after, limit,
    )
    return [AttemptView(**dict(r)) for r in rows]


@dataclass(frozen=True)
class Gauges:
    deliveries_by_status: dict[DeliveryStatus, int]
    queue_depth: int
    oldest_due_seconds: float
    endpoints_by_state: dict[str, int]
    # Backpressure: endpoints in a rate-limit backoff, and below their max_in_flight.
    endpoints_throttled: dict[str, int] = field(default_factory=dict)
    # Seconds until the soonest client certificate of an endpoint expires (None: none).
    certificate_expires_in: float | None = None
    held: int = 0  # unfinished deliveries held by a paused or disabled endpoint


# One round trip. The two queue figures read only the partial due index; the
# per-status count is a full count, so the caller throttles and time-limits it.
_GAUGES = """
SELECT
  (SELECT coalesce(json_object_agg(status, n), '{}')
     FROM (SELECT status, count(*) AS n FROM deliveries GROUP BY status) s) AS by_status,
  (SELECT count(*) FROM deliveries WHERE status < 2 AND next_attempt_at <= $1) AS depth,
  (SELECT coalesce(extract(epoch FROM $1 - min(next_attempt_at)), 0)
     FROM deliveries WHERE status < 2 AND next_attempt_at <= $1) AS oldest,
  (SELECT coalesce(json_object_agg(state, n), '{}')
     FROM (SELECT state, count(*) AS n FROM endpoints GROUP BY state) s) AS by_state,
  (SELECT count(*) FROM endpoints WHERE rate_limited_until > $1) AS backing_off,
  (SELECT count(*) FROM endpoints WHERE effective_max_in_flight IS NOT NULL) AS reduced,
  (SELECT extract(epoch FROM min((tls->'client_certificate'->>'not_after')::timestamptz) - $1)
     FROM endpoints WHERE tls IS NOT NULL) AS cert_expires_in,
  (SELECT count(*) FROM deliveries WHERE status < 2 AND held_since IS NOT NULL) AS held
"""


async def read_gauges(conn: Conn, now: datetime, timeout_ms: int = 2000) -> Gauges:
    """Queue depth and oldest due age as of `now` (a leased row's due time is its
    lease expiry, so it does not count), deliveries by status, endpoints by state."""
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        row = await conn.fetchrow(_GAUGES, now)
    assert row is not None
    by_status = {s: 0 for s in DeliveryStatus}
    for key, n in row["by_status"].items():
        by_status[DeliveryStatus(int(key))] = int(n)
    return Gauges(by_status, int(row["depth"]), float(row["oldest"]),
                  {str(k): int(v) for k, v in row["by_state"].items()},
                  {"rate_limited": int(row["backing_off"]),
                   "concurrency_reduced": int(row["reduced"])},
                  None if row["cert_expires_in"] is None else float(row["cert_expires_in"]),
                  int(row["held"]))


async def attempts_since(conn: Conn, since: datetime) -> int:
    """Attempts started since `since`, by every process (the BRIN index on
    started_at keeps this to the table's last blocks)."""
    n: int = await conn.fetchval("SELECT count(*) FROM attempts WHERE started_at >= $1", since)
    return n
