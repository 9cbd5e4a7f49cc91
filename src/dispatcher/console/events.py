"""Event pages: search (type, status, time range, endpoint) newest first with cursor
paging, each row with its status at every endpoint; one event with its payload and
every attempt at every endpoint; retry. Filters are checked by the API's own
parsers, rows read by the API's store queries and shaped by its views."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.api.context import CATALOGUE, POOL, TENANT
from dispatcher.api.lookup import parse_statuses, retry_event_at
from dispatcher.api.pagination import (
    as_int,
    as_time,
    as_uuid,
    cursor_part,
    decode_cursor,
    encode_cursor,
    page_limit,
)
from dispatcher.api.request import ms_to_datetime, path_uuid, query_list, query_str
from dispatcher.api.views import attempt_json, event_json
from dispatcher.console.access import FORM
from dispatcher.console.endpoints import endpoint_rows, form_time
from dispatcher.console.render import render
from dispatcher.errors import NotFound, ValidationError
from dispatcher.store import lookup

MAX_ATTEMPTS_SHOWN = 100
FILTERS = ("type", "status", "endpoint", "since", "until")


def _filters(request: web.Request) -> dict[str, str]:
    return {k: request.query[k] for k in FILTERS if request.query.get(k, "").strip()}


def _endpoint_filter(request: web.Request) -> UUID | None:
    raw = query_str(request, "endpoint")
    if not raw:
        return None
    try:
        return UUID(raw)
    except ValueError as exc:
        raise ValidationError("endpoint must be an endpoint id", field="endpoint") from exc


async def _rows(request: web.Request) -> tuple[list[dict[str, Any]], str | None]:
    tenant_id = request[TENANT]
    limit = page_limit(request)
    types = query_list(request, "type")
    statuses = parse_statuses(query_list(request, "status"), "status")
    endpoint_id = _endpoint_filter(request)
    since_ms = form_time(dict(request.query), "since")
    until_ms = form_time(dict(request.query), "until")
    since = None if since_ms is None else ms_to_datetime(since_ms, "since")
    until = None if until_ms is None else ms_to_datetime(until_ms, "until")
    if since and until and since > until:
        raise ValidationError("since must not be after until", field="since")
    async with request.app[POOL].acquire() as conn:
        if endpoint_id is not None:
            if await lookup.endpoint_url(conn, tenant_id, endpoint_id) is None:
                raise NotFound(f"endpoint {endpoint_id} not found", field="endpoint")
            cursor = decode_cursor(request, "endpoint-events")
            before = None if cursor is None else cursor_part(cursor, 0, as_int)
            found = await lookup.endpoint_events(
                conn, tenant_id, endpoint_id, statuses=statuses, types=types, since=since,
                until=until, before=before, limit=limit + 1)
            more = len(found) > limit
            found = found[:limit]
            next_cursor = encode_cursor("endpoint-events", [found[-1].delivery_id]) \
                if more else None
            events = [lookup.EventView(d.event_id, d.type, d.created_at, d.body) for d in found]
        else:
            cursor = decode_cursor(request, "events")
            after = None if cursor is None else (cursor_part(cursor, 0, as_time),
                                                 cursor_part(cursor, 1, as_uuid))
            events = await lookup.list_events(conn, tenant_id, types=types, since=since,
                                              until=until, before=after, limit=limit + 1,
                                              statuses=statuses)
            more = len(events) > limit
            events = events[:limit]
            next_cursor = encode_cursor("events", [events[-1].created_at.isoformat(),
                                                   str(events[-1].id)]) if more else None
        deliveries = await lookup.deliveries_of_events(conn, tenant_id, [ev.id for ev in events])
        rows = [event_json(ev, deliveries[ev.id]) for ev in events]
    return rows, next_cursor


async def events_page(request: web.Request) -> web.StreamResponse:
    filters = _filters(request)
    try:
        rows, next_cursor = await _rows(request)
        status, message = 200, ""
    except (ValidationError, NotFound) as exc:
        rows, next_cursor, status, message = [], None, exc.status, exc.message
    endpoints = await endpoint_rows(request)
    catalogue = request.app[CATALOGUE]
    return render(request, "events.html", status=status, rows=rows, next_cursor=next_cursor,
                  filters=filters, message=message, endpoints=endpoints,
                  statuses=("Pending", "Retrying", "Success", "Failed"),
                  catalogue=sorted(catalogue))


async def _event(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The event and, per endpoint, its delivery with every attempt (oldest first)."""
    tenant_id = request[TENANT]
    event_id = path_uuid(request, "event_id")
    async with request.app[POOL].acquire() as conn:
        event = await lookup.get_event(conn, tenant_id, event_id)
        if event is None:
            raise NotFound(f"event {event_id} not found", field="event_id")
        deliveries = await lookup.event_deliveries(conn, tenant_id, event_id)
        per_endpoint = []
        for d, shown in zip(deliveries, event_json(event, deliveries)["deliveries"],
                            strict=True):
            attempts = await lookup.attempt_logs(conn, d.delivery_id, after=None,
                                                 limit=MAX_ATTEMPTS_SHOWN)
            per_endpoint.append({**shown, "attempt_logs": [attempt_json(a, d.sent_body)
                                                           for a in attempts]})
    return event_json(event), per_endpoint


async def event_page(request: web.Request, *, status: int = 200,
                     message: str = "") -> web.StreamResponse:
    event, deliveries = await _event(request)
    if not message and request.query.get("done") == "retried":
        message = "Retry queued: one attempt is being made now."
    return render(request, "event.html", status=status, event=event, deliveries=deliveries,
                  message=message)


async def retry(request: web.Request) -> web.StreamResponse:
    event_id = path_uuid(request, "event_id")
    try:
        endpoint_id = UUID(request[FORM].get("endpoint_id", ""))
    except ValueError as exc:
        raise NotFound("endpoint not found", field="endpoint_id") from exc
    await retry_event_at(request, endpoint_id, event_id)
    raise web.HTTPFound(f"/console/events/{event_id}?done=retried")
