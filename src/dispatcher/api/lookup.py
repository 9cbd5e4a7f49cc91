"""Event-status lookup (shaped like Cobo's `GET /webhooks/endpoints/{endpoint_id}/
events/{event_id}`), an endpoint's events filtered and paginated, an event with one
status per endpoint, per-attempt logs, and retries (one event, or a bulk replay)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.api.context import CLOCK, POOL, TENANT
from dispatcher.api.pagination import (
    as_int,
    as_time,
    as_uuid,
    cursor_part,
    decode_cursor,
    encode_cursor,
    page,
    page_limit,
)
from dispatcher.api.request import (
    Fields,
    ms_to_datetime,
    path_uuid,
    query_list,
    query_ms,
    read_json,
)
from dispatcher.api.spec import CURSOR, LIMIT, SINCE, TYPE_FILTER, UNTIL, Param, Route
from dispatcher.api.views import attempt_json, event_json, event_status_json
from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.model import DeliveryStatus
from dispatcher.store import lookup
from dispatcher.store.deliveries import RetryRefused, bulk_retry, retry_delivery
from dispatcher.store.pool import Conn

STATUS_LABELS = [s.label for s in DeliveryStatus]
RETRYABLE = (DeliveryStatus.RETRYING, DeliveryStatus.FAILED)
_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


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


def _time_range(request: web.Request) -> tuple[datetime | None, datetime | None]:
    since, until = query_ms(request, "since"), query_ms(request, "until")
    if since and until and since > until:
        raise ValidationError("since must not be after until", field="since")
    return since, until


def _event_not_found(event_id: UUID) -> NotFound:
    return NotFound(f"event {event_id} not found", field="event_id")


def _use_callback_retry() -> Conflict:
    # A callback's delivery follows its decision: only the callback may be retried.
    return Conflict("this is a callback endpoint: retry a Failed callback with "
                    "POST /v1/callbacks/{id}/retry", field="endpoint_id",
                    code="callback_endpoint")


async def _endpoint_url(conn: Conn, tenant_id: UUID, endpoint_id: UUID) -> str:
    url = await lookup.endpoint_url(conn, tenant_id, endpoint_id)
    if url is None:
        raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")
    return url


async def _delivery(
    conn: Conn, tenant_id: UUID, endpoint_id: UUID, event_id: UUID
) -> lookup.DeliveryView:
    found = await lookup.endpoint_event(conn, tenant_id, endpoint_id, event_id)
    if found is None:
        await _endpoint_url(conn, tenant_id, endpoint_id)  # which of the two is unknown
        raise _event_not_found(event_id)
    return found


async def get_endpoint_event(request: web.Request) -> web.Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    event_id = path_uuid(request, "event_id")
    async with request.app[POOL].acquire() as conn:
        found = await _delivery(conn, request[TENANT], endpoint_id, event_id)
    return web.json_response(event_status_json(found))


async def list_endpoint_events(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    endpoint_id = path_uuid(request, "endpoint_id")
    limit = page_limit(request)
    statuses = parse_statuses(query_list(request, "status"), "status")
    types = query_list(request, "type")
    since, until = _time_range(request)
    cursor = decode_cursor(request, "endpoint-events")
    before = None if cursor is None else cursor_part(cursor, 0, as_int)
    async with request.app[POOL].acquire() as conn:
        await _endpoint_url(conn, tenant_id, endpoint_id)
        found = await lookup.endpoint_events(
            conn, tenant_id, endpoint_id, statuses=statuses, types=types, since=since,
            until=until, before=before, limit=limit + 1,
        )
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        next_cursor = encode_cursor("endpoint-events", [found[-1].delivery_id])
    return web.json_response(page([event_status_json(d) for d in found], next_cursor))


async def get_event(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    event_id = path_uuid(request, "event_id")
    async with request.app[POOL].acquire() as conn:
        event = await lookup.get_event(conn, tenant_id, event_id)
        if event is None:
            raise _event_not_found(event_id)
        deliveries = await lookup.event_deliveries(conn, tenant_id, event_id)
    return web.json_response(event_json(event, deliveries))


async def list_events(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    limit = page_limit(request)
    types = query_list(request, "type")
    since, until = _time_range(request)
    cursor = decode_cursor(request, "events")
    before = None
    if cursor is not None:
        before = (cursor_part(cursor, 0, as_time), cursor_part(cursor, 1, as_uuid))
    async with request.app[POOL].acquire() as conn:
        found = await lookup.list_events(conn, tenant_id, types=types, since=since,
                                         until=until, before=before, limit=limit + 1)
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        next_cursor = encode_cursor("events", [found[-1].created_at.isoformat(),
                                               str(found[-1].id)])
    return web.json_response(page([event_json(e) for e in found], next_cursor))


async def get_attempt_logs(request: web.Request) -> web.Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    event_id = path_uuid(request, "event_id")
    limit = page_limit(request)
    cursor = decode_cursor(request, "attempts")
    after = None if cursor is None else cursor_part(cursor, 0, as_int)
    async with request.app[POOL].acquire() as conn:
        found = await _delivery(conn, request[TENANT], endpoint_id, event_id)
        attempts = await lookup.attempt_logs(conn, found.delivery_id, after=after,
                                             limit=limit + 1)
    next_cursor = None
    if len(attempts) > limit:
        attempts = attempts[:limit]
        next_cursor = encode_cursor("attempts", [attempts[-1].id])
    return web.json_response(page([attempt_json(a, found.sent_body) for a in attempts],
                                  next_cursor))


async def retry_event(request: web.Request) -> web.Response:
    return await retry_event_at(request, path_uuid(request, "endpoint_id"),
                                path_uuid(request, "event_id"))


async def retry_event_at(request: web.Request, endpoint_id: UUID, event_id: UUID) -> web.Response:
    now = request.app[CLOCK].now()
    async with request.app[POOL].acquire() as conn:
        found = await _delivery(conn, request[TENANT], endpoint_id, event_id)
        if found.kind == "callback":
            raise _use_callback_retry()
        if found.status not in RETRYABLE:
            raise Conflict(f"only Retrying or Failed events can be retried; this one is "
                           f"{found.status.label}", field="status")
        refused = await retry_delivery(conn, endpoint_id, event_id, now)
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
    return web.json_response({"retried": True}, status=201)


async def retry_many(request: web.Request) -> web.Response:
    return await retry_many_from(request, await read_json(request, required=False))


async def retry_many_from(request: web.Request, body: Any) -> web.Response:
    """Bulk replay from an already decoded body (`{}`: the defaults)."""
    tenant_id = request[TENANT]
    endpoint_id = path_uuid(request, "endpoint_id")
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
    now = request.app[CLOCK].now()
    async with request.app[POOL].acquire() as conn:
        await _endpoint_url(conn, tenant_id, endpoint_id)
        if await lookup.endpoint_kind(conn, endpoint_id) == "callback":
            raise _use_callback_retry()
        queued = await bulk_retry(conn, endpoint_id, statuses, since or _FAR_PAST,
                                  until or _FAR_FUTURE, now)
    return web.json_response({"queued": queued}, status=202)


TAG = "Event status"
STATUS_FILTER = Param("status", {"type": "string"},
                      "Only these statuses: Pending, Retrying, Success, Failed "
                      "(comma-separated or repeated).")

ROUTES = [
    Route("GET", "/v1/events", list_events, "listEvents", "List published events", TAG,
          response="EventPage", params=(LIMIT, CURSOR, TYPE_FILTER, SINCE, UNTIL),
          description="Newest first."),
    Route("GET", "/v1/events/{event_id}", get_event, "getEvent",
          "An event with its status at every endpoint", TAG, response="EventWithDeliveries"),
    Route("GET", "/v1/endpoints/{endpoint_id}/events", list_endpoint_events,
          "listEndpointEvents", "An endpoint's events with their status", TAG,
          response="EventStatusPage",
          params=(LIMIT, CURSOR, STATUS_FILTER, TYPE_FILTER, SINCE, UNTIL),
          description="Newest first, filtered by status, type and creation time."),
    Route("GET", "/v1/endpoints/{endpoint_id}/events/{event_id}", get_endpoint_event,
          "getEndpointEvent", "An event's status at one endpoint", TAG,
          response="EventStatus",
          description="Shaped like Cobo's webhook event record: `event_id`, `url`, "
                      "`created_timestamp`, `type`, `data`, `status`, `next_retry_timestamp`, "
                      "`retries_left`."),
    Route("GET", "/v1/endpoints/{endpoint_id}/events/{event_id}/logs", get_attempt_logs,
          "getAttemptLogs", "Every attempt to deliver an event to an endpoint", TAG,
          response="AttemptPage", params=(LIMIT, CURSOR),
          description="Oldest first: request headers and body, response status, headers "
                      "and body (capped), duration and failure reason."),
    Route("POST", "/v1/endpoints/{endpoint_id}/events/{event_id}/retry", retry_event,
          "retryEvent", "Retry an event now", TAG, ok=201, response="Retried", errors=(409,),
          description="Only for `Retrying` or `Failed` events (409 otherwise): one attempt is "
                      "made now."),
    Route("POST", "/v1/endpoints/{endpoint_id}/retry", retry_many, "retryEvents",
          "Replay an endpoint's Retrying/Failed events", TAG, ok=202, response="RetryQueued",
          body="BulkRetry", body_required=False,
          description="Every event of the endpoint with one of the statuses (default Failed) "
                      "created in [since, until) is attempted again now; answers the count."),
]
