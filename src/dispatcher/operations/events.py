"""Event status: an event with its status at every endpoint, lists (the tenant's
events, an endpoint's events) filtered and paged, every attempt, and retries (one
event at one endpoint, or a bulk replay of an endpoint's Retrying/Failed events)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.model import DeliveryStatus
from dispatcher.operations import audit
from dispatcher.operations.fields import Fields, ms_to_datetime
from dispatcher.operations.pages import (
    Page,
    PageQuery,
    after_time_and_id,
    as_int,
    cursor_part,
    cut,
    decode_cursor,
    time_and_id,
)
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.store import lookup
from dispatcher.store.deliveries import RetryRefused, bulk_retry, retry_delivery
from dispatcher.store.lookup import AttemptView, DeliveryView, EventView
from dispatcher.store.pool import Conn

STATUS_LABELS = [s.label for s in DeliveryStatus]
RETRYABLE = (DeliveryStatus.RETRYING, DeliveryStatus.FAILED)
_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class EventFilter:
    """What a list keeps: types, statuses, created in [since, until], and (for the
    tenant's events) those with a delivery to one endpoint."""

    types: list[str] | None = None
    statuses: list[DeliveryStatus] | None = None
    since: datetime | None = None
    until: datetime | None = None
    endpoint_id: UUID | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ValidationError("since must not be after until", field="since")


@dataclass(frozen=True)
class EventWithDeliveries:
    event: EventView
    deliveries: list[DeliveryView]


@dataclass(frozen=True)
class DeliveryAttempts:
    delivery: DeliveryView
    attempts: list[AttemptView]


def parse_statuses(values: list[str] | None, field: str) -> list[DeliveryStatus] | None:
    if values is None:
        return None
    out = []
    for v in values:
        if v.capitalize() not in STATUS_LABELS:
            raise ValidationError(f"{field} must be one of {', '.join(STATUS_LABELS)}",
                                  field=field)
        out.append(DeliveryStatus.from_label(v))
    return out


def event_not_found(event_id: UUID) -> NotFound:
    return NotFound(f"event {event_id} not found", field="event_id")


def _use_callback_retry() -> Conflict:
    # A callback's delivery follows its decision: only the callback may be retried.
    return Conflict("this is a callback endpoint: retry a Failed callback with "
                    "POST /v1/callbacks/{id}/retry", field="endpoint_id",
                    code="callback_endpoint")


async def _known_endpoint(conn: Conn, tenant_id: UUID, endpoint_id: UUID,
                          field: str = "endpoint_id") -> None:
    if await lookup.endpoint_url(conn, tenant_id, endpoint_id) is None:
        raise NotFound(f"endpoint {endpoint_id} not found", field=field)


async def _delivery(
    conn: Conn, tenant_id: UUID, endpoint_id: UUID, event_id: UUID
) -> DeliveryView:
    found = await lookup.endpoint_event(conn, tenant_id, endpoint_id, event_id)
    if found is None:
        await _known_endpoint(conn, tenant_id, endpoint_id)  # which of the two is unknown
        raise event_not_found(event_id)
    return found


async def endpoint_event(svc: Services, caller: Caller, endpoint_id: UUID,
                         event_id: UUID) -> DeliveryView:
    async with svc.pool.acquire() as conn:
        return await _delivery(conn, caller.tenant, endpoint_id, event_id)


async def endpoint_events(svc: Services, caller: Caller, endpoint_id: UUID, page: PageQuery,
                          where: EventFilter) -> Page[DeliveryView]:
    """An endpoint's events newest first, each with its status there."""
    cursor = decode_cursor(page.cursor, "endpoint-events")
    before = None if cursor is None else cursor_part(cursor, 0, as_int)
    async with svc.pool.acquire() as conn:
        await _known_endpoint(conn, caller.tenant, endpoint_id)
        found = await lookup.endpoint_events(
            conn, caller.tenant, endpoint_id, statuses=where.statuses, types=where.types,
            since=where.since, until=where.until, before=before, limit=page.limit + 1)
    return cut(found, page.limit, "endpoint-events", lambda d: [d.delivery_id])


async def get_event(svc: Services, caller: Caller, event_id: UUID) -> EventWithDeliveries:
    async with svc.pool.acquire() as conn:
        event = await lookup.get_event(conn, caller.tenant, event_id)
        if event is None:
            raise event_not_found(event_id)
        deliveries = await lookup.event_deliveries(conn, caller.tenant, event_id)
    return EventWithDeliveries(event, deliveries)


async def list_events(svc: Services, caller: Caller, page: PageQuery,
                      where: EventFilter) -> Page[EventView]:
    """The tenant's events newest first."""
    before = after_time_and_id(decode_cursor(page.cursor, "events"))
    async with svc.pool.acquire() as conn:
        found = await lookup.list_events(conn, caller.tenant, types=where.types,
                                         since=where.since, until=where.until, before=before,
                                         limit=page.limit + 1, statuses=where.statuses)
    return cut(found, page.limit, "events", lambda e: time_and_id(e.created_at, e.id))


async def search_events(svc: Services, caller: Caller, page: PageQuery,
                        where: EventFilter) -> Page[EventWithDeliveries]:
    """The tenant's events newest first, each with its status at every endpoint;
    with `where.endpoint_id`, only the events delivered to that endpoint."""
    if where.endpoint_id is None:
        events = await list_events(svc, caller, page, where)
    else:
        at_endpoint = await endpoint_events(svc, caller, where.endpoint_id, page, where)
        events = Page([EventView(d.event_id, d.type, d.created_at, d.body)
                       for d in at_endpoint.items], at_endpoint.next_cursor)
    async with svc.pool.acquire() as conn:
        deliveries = await lookup.deliveries_of_events(conn, caller.tenant,
                                                       [ev.id for ev in events.items])
    return Page([EventWithDeliveries(ev, deliveries[ev.id]) for ev in events.items],
                events.next_cursor)


async def attempt_logs(svc: Services, caller: Caller, endpoint_id: UUID, event_id: UUID,
                       page: PageQuery) -> tuple[DeliveryView, Page[AttemptView]]:
    """Every attempt at one endpoint, oldest first, with the delivery they belong to
    (its body is every attempt's request body)."""
    cursor = decode_cursor(page.cursor, "attempts")
    after = None if cursor is None else cursor_part(cursor, 0, as_int)
    async with svc.pool.acquire() as conn:
        found = await _delivery(conn, caller.tenant, endpoint_id, event_id)
        attempts = await lookup.attempt_logs(conn, found.delivery_id, after=after,
                                             limit=page.limit + 1)
    return found, cut(attempts, page.limit, "attempts", lambda a: [a.id])


async def event_attempts(svc: Services, caller: Caller, event_id: UUID,
                         most: int) -> tuple[EventView, list[DeliveryAttempts]]:
    """An event and, per endpoint, its delivery with up to `most` attempts."""
    found = await get_event(svc, caller, event_id)
    out = []
    async with svc.pool.acquire() as conn:
        for d in found.deliveries:
            attempts = await lookup.attempt_logs(conn, d.delivery_id, after=None, limit=most)
            out.append(DeliveryAttempts(d, attempts))
    return found.event, out


async def retry_event(svc: Services, caller: Caller, endpoint_id: UUID,
                      event_id: UUID) -> None:
    """One attempt now, for a Retrying or Failed event (409 otherwise)."""
    caller.may_write()
    async with svc.pool.acquire() as conn, conn.transaction():
        found = await _delivery(conn, caller.tenant, endpoint_id, event_id)
        if found.kind == "callback":
            raise _use_callback_retry()
        if found.status not in RETRYABLE:
            raise Conflict(f"only Retrying or Failed events can be retried; this one is "
                           f"{found.status.label}", field="status")
        refused = await retry_delivery(conn, endpoint_id, event_id, svc.clock.now())
        if refused is None:
            await audit.record(svc, conn, caller, "event.retry", "event", event_id, {
                "endpoint_id": str(endpoint_id),
                "status": {"old": found.status.label, "new": "Retrying"}})
    if refused is RetryRefused.ALREADY_SCHEDULED:
        raise Conflict("a retry of this event is already scheduled and has not been "
                       "attempted yet", field="status", code="retry_already_scheduled")
    if refused is RetryRefused.NOT_FOUND:
        raise NotFound("no such event at this endpoint", field="event_id")
    if refused is RetryRefused.NOT_RETRYABLE:
        raise Conflict("the event's status changed meanwhile; only Retrying or Failed "
                       "events can be retried", field="status")
    if refused is not None:
        raise Conflict("the event is being delivered right now; try again shortly",
                       field="status", code="delivery_in_progress")


async def replay(svc: Services, caller: Caller, endpoint_id: UUID, body: Any) -> int:
    """Bulk replay of an endpoint's events by status (default Failed) created in
    [since, until); the number queued."""
    caller.may_write()
    f = Fields(body)
    f.reject_unknown(("status", "since", "until"))
    raw_status = f.data.get("status", [DeliveryStatus.FAILED.label])
    if isinstance(raw_status, str):
        raw_status = [raw_status]
    if not isinstance(raw_status, list) or not raw_status or not all(
        isinstance(s, str) and s.capitalize() in ("Retrying", "Failed") for s in raw_status
    ):
        f.fail("status", 'must be "Retrying", "Failed" or a list of them')
    statuses = [DeliveryStatus.from_label(s) for s in raw_status]
    since = ms_to_datetime(f.data["since"], "since") if f.data.get("since") is not None else None
    until = ms_to_datetime(f.data["until"], "until") if f.data.get("until") is not None else None
    if since and until and since > until:
        f.fail("since", "must not be after until")
    async with svc.pool.acquire() as conn, conn.transaction():
        await _known_endpoint(conn, caller.tenant, endpoint_id)
        if await lookup.endpoint_kind(conn, endpoint_id) == "callback":
            raise _use_callback_retry()
        queued = await bulk_retry(conn, endpoint_id, statuses, since or _FAR_PAST,
                                  until or _FAR_FUTURE, svc.clock.now())
        await audit.record(svc, conn, caller, "endpoint.replay", "endpoint", endpoint_id, {
            "status": [s.label for s in statuses], "since": f.data.get("since"),
            "until": f.data.get("until"), "queued": queued})
    return queued
