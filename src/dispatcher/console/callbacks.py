"""Callback pages: the list (status, type, time range) newest first with cursor
paging and each decision; one callback with its data, decision, deadline and every
attempt; retry of a Failed one. Filters, reads and the retry go through the API's
own functions (api/callbacks.py), so the console applies exactly its rules."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatcher.api import callbacks as api_callbacks
from dispatcher.api.context import CLOCK, POOL, TENANT
from dispatcher.api.request import ms_to_datetime, path_uuid
from dispatcher.api.views import attempt_json
from dispatcher.console.endpoints import answer, endpoint_rows, form_time
from dispatcher.console.render import render
from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.model import CallbackStatus
from dispatcher.store import callbacks as store
from dispatcher.store import lookup

MAX_ATTEMPTS_SHOWN = 100
FILTERS = ("type", "status", "since", "until")
STATUSES = tuple(str(s) for s in CallbackStatus)


def _filters(request: web.Request) -> dict[str, str]:
    return {k: request.query[k] for k in FILTERS if request.query.get(k, "").strip()}


async def _rows(request: web.Request) -> tuple[list[dict[str, Any]], str | None]:
    query = dict(request.query)
    since_ms, until_ms = form_time(query, "since"), form_time(query, "until")
    since = None if since_ms is None else ms_to_datetime(since_ms, "since")
    until = None if until_ms is None else ms_to_datetime(until_ms, "until")
    found, next_cursor = await api_callbacks.find_callbacks(request, since, until)
    return [api_callbacks.callback_json(c) for c in found], next_cursor


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
    callback_id = path_uuid(request, "callback_id")
    async with request.app[POOL].acquire() as conn:
        found = await store.get_callback(conn, request[TENANT], callback_id)
        if found is None:
            raise NotFound(f"callback {callback_id} not found", field="callback_id")
        attempts = await lookup.attempt_logs(conn, found.delivery_id, after=None,
                                             limit=MAX_ATTEMPTS_SHOWN)
        url = await lookup.endpoint_url(conn, request[TENANT], found.endpoint_id)
    shown = {**api_callbacks.callback_json(found), "url": url}
    retryable = api_callbacks.can_retry(found, request.app[CLOCK].now())
    return shown, [attempt_json(a, found.body) for a in attempts], retryable


async def callback_page(request: web.Request, *, status: int = 200,
                        message: str = "") -> web.StreamResponse:
    callback, attempts, retryable = await _callback(request)
    if not message and request.query.get("done") == "retried":
        message = "Retry queued: one attempt is being made now."
    return render(request, "callback.html", status=status, callback=callback,
                  attempts=attempts, retryable=retryable, message=message)


async def retry(request: web.Request) -> web.StreamResponse:
    try:
        answer(await api_callbacks.retry_callback(request))
    except Conflict as exc:  # decided, not Failed, past its deadline, or being sent
        return await callback_page(request, status=exc.status, message=exc.message)
    callback_id = request.match_info["callback_id"]
    raise web.HTTPFound(f"/console/callbacks/{callback_id}?done=retried")
