"""Callback pages: the list (status, type, time range) newest first with cursor
paging and each decision; one callback with its data, decision, deadline and every
attempt; retry of a Failed one. Filters, reads and the retry are the operations the
API calls (operations/callbacks.py), so the console applies exactly its rules."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatcher.console.endpoints import endpoint_rows, form_time
from dispatcher.console.render import render
from dispatcher.errors import Conflict, ValidationError
from dispatcher.model import CallbackStatus
from dispatcher.operations import callbacks as ops
from dispatcher.operations.fields import ms_to_datetime
from dispatcher.operations.pages import PageQuery
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import page_query, path_uuid, query_list
from dispatcher.web.views import attempt_json, callback_json

MAX_ATTEMPTS_SHOWN = 100
FILTERS = ("type", "status", "since", "until")
STATUSES = tuple(str(s) for s in CallbackStatus)


def _filters(request: web.Request) -> dict[str, str]:
    return {k: request.query[k] for k in FILTERS if request.query.get(k, "").strip()}


async def _rows(request: web.Request) -> tuple[list[dict[str, Any]], str | None]:
    query = dict(request.query)
    since_ms, until_ms = form_time(query, "since"), form_time(query, "until")
    where = ops.CallbackFilter(
        types=query_list(request, "type"),
        statuses=ops.parse_callback_statuses(query_list(request, "status")),
        since=None if since_ms is None else ms_to_datetime(since_ms, "since"),
        until=None if until_ms is None else ms_to_datetime(until_ms, "until"))
    found = await ops.list_callbacks(services(request.app), request[CALLER],
                                     page_query(request), where)
    return [callback_json(c) for c in found.items], found.next_cursor


async def callbacks_page(request: web.Request) -> web.StreamResponse:
    filters = _filters(request)
    try:
        rows, next_cursor = await _rows(request)
        status, message = 200, ""
    except ValidationError as exc:
        rows, next_cursor, status, message = [], None, exc.status, exc.message
    urls = {ep["id"]: ep["url"] for ep in await endpoint_rows(request)}
    return render(request, "callbacks.html", status=status, rows=rows, urls=urls,
                  next_cursor=next_cursor, filters=filters, message=message,
                  statuses=STATUSES)


async def _callback(request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """The callback as the API shows it, every attempt (oldest first), and whether
    the API would retry it now."""
    svc, caller = services(request.app), request[CALLER]
    found, attempts = await ops.callback_logs(svc, caller, path_uuid(request, "callback_id"),
                                              PageQuery(MAX_ATTEMPTS_SHOWN))
    shown = {**callback_json(found), "url": await ops.callback_url(svc, caller, found)}
    retryable = ops.can_retry(found, svc.clock.now())
    return shown, [attempt_json(a, found.body) for a in attempts.items], retryable


async def callback_page(request: web.Request, *, status: int = 200,
                        message: str = "") -> web.StreamResponse:
    callback, attempts, retryable = await _callback(request)
    if not message and request.query.get("done") == "retried":
        message = "Retry queued: one attempt is being made now."
    return render(request, "callback.html", status=status, callback=callback,
                  attempts=attempts, retryable=retryable, message=message)


async def retry(request: web.Request) -> web.StreamResponse:
    try:
        await ops.retry_callback(services(request.app), request[CALLER],
                                 path_uuid(request, "callback_id"))
    except Conflict as exc:  # decided, not Failed, past its deadline, or being sent
        return await callback_page(request, status=exc.status, message=exc.message)
    callback_id = request.match_info["callback_id"]
    raise web.HTTPFound(f"/console/callbacks/{callback_id}?done=retried")
