"""Event pages: search (type, status, time range, endpoint) newest first with cursor
paging, each row with its status at every endpoint; one event with its payload and
every attempt at every endpoint; retry. All through operations/events.py, with the
API's filters and shapes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.console.access import FORM
from dispatcher.console.endpoints import endpoint_rows, form_time
from dispatcher.console.render import render
from dispatcher.errors import NotFound, ValidationError
from dispatcher.operations import events as ops
from dispatcher.operations.fields import ms_to_datetime
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import page_query, path_uuid, query_list, query_str
from dispatcher.web.views import attempt_json, event_json

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
    query = dict(request.query)
    since_ms, until_ms = form_time(query, "since"), form_time(query, "until")
    where = ops.EventFilter(
        types=query_list(request, "type"),
        statuses=ops.parse_statuses(query_list(request, "status"), "status"),
        since=None if since_ms is None else ms_to_datetime(since_ms, "since"),
        until=None if until_ms is None else ms_to_datetime(until_ms, "until"),
        endpoint_id=_endpoint_filter(request))
    try:
        found = await ops.search_events(services(request.app), request[CALLER],
                                        page_query(request), where)
    except NotFound as exc:
        if exc.field == "endpoint_id":  # the filter names an unknown endpoint
            raise NotFound(exc.message, field="endpoint") from None
        raise
    return [event_json(e.event, e.deliveries) for e in found.items], found.next_cursor


async def events_page(request: web.Request) -> web.StreamResponse:
    filters = _filters(request)
    try:
        rows, next_cursor = await _rows(request)
        status, message = 200, ""
    except (ValidationError, NotFound) as exc:
        rows, next_cursor, status, message = [], None, exc.status, exc.message
    endpoints = await endpoint_rows(request)
    catalogue = services(request.app).catalogue
    return render(request, "events.html", status=status, rows=rows, next_cursor=next_cursor,
                  filters=filters, message=message, endpoints=endpoints,
                  statuses=("Pending", "Retrying", "Success", "Failed"),
                  catalogue=sorted(catalogue))


async def _event(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The event and, per endpoint, its delivery with every attempt (oldest first)."""
    event, deliveries = await ops.event_attempts(services(request.app), request[CALLER],
                                                 path_uuid(request, "event_id"),
                                                 MAX_ATTEMPTS_SHOWN)
    shown = event_json(event, [d.delivery for d in deliveries])["deliveries"]
    per_endpoint = [{**row, "attempt_logs": [attempt_json(a, d.delivery.sent_body)
                                             for a in d.attempts]}
                    for row, d in zip(shown, deliveries, strict=True)]
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
    await ops.retry_event(services(request.app), request[CALLER], endpoint_id, event_id)
    raise web.HTTPFound(f"/console/events/{event_id}?done=retried")
