"""Approval-callback routes over operations/callbacks.py: ask a tenant's callback
endpoint to approve an action (`POST /v1/callbacks`), read the decision (optionally
waiting for it with `?wait=S`), list callbacks, read every attempt, and retry a
Failed one before its deadline."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from dispatcher.api.callback_waiter import WAITER
from dispatcher.api.publish import IDEMPOTENCY, IDEMPOTENCY_HEADER
from dispatcher.api.spec import CURSOR, LIMIT, SINCE, TYPE_FILTER, UNTIL, Param, Route
from dispatcher.model import CALLBACK_DECIDED
from dispatcher.operations import callbacks as ops
from dispatcher.operations.publish import idempotency_key
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import (
    page_query,
    path_uuid,
    query_int,
    query_list,
    query_ms,
    read_json,
)
from dispatcher.web.views import attempt_json, callback_json, page_json

MAX_WAIT = 30
RECHECK_SECONDS = 1.0  # a waiting request re-reads at least this often
ACCEPTED_FIELDS = ("id", "type", "status", "endpoint_id", "created_timestamp",
                   "deadline_timestamp")


async def create_callback(request: web.Request) -> web.Response:
    key = idempotency_key(request.headers.get(IDEMPOTENCY_HEADER), IDEMPOTENCY_HEADER)
    created = await ops.create_callback(services(request.app), request[CALLER],
                                        await read_json(request), key)
    headers = {"Idempotent-Replayed": "true"} if created.replayed else None
    body = {k: v for k, v in callback_json(created.callback).items() if k in ACCEPTED_FIELDS}
    return web.json_response(body, status=202, headers=headers)


async def get_callback(request: web.Request) -> web.Response:
    svc, caller = services(request.app), request[CALLER]
    callback_id = path_uuid(request, "callback_id")
    wait = query_int(request, "wait", 0, 0, MAX_WAIT)
    if wait == 0:
        return web.json_response(callback_json(await ops.get_callback(svc, caller,
                                                                      callback_id)))
    waiter = request.app[WAITER]
    give_up = time.monotonic() + wait
    woken = waiter.watch(callback_id)
    try:
        await waiter.listening(min(wait, RECHECK_SECONDS))
        while True:
            woken.clear()
            found = await ops.get_callback(svc, caller, callback_id)  # no connection held
            left = give_up - time.monotonic()
            if found.status in CALLBACK_DECIDED or left <= 0:
                return web.json_response(callback_json(found))
            try:
                async with asyncio.timeout(min(left, RECHECK_SECONDS)):
                    await woken.wait()
            except TimeoutError:
                pass
    finally:
        waiter.unwatch(callback_id, woken)


async def list_callbacks(request: web.Request) -> web.Response:
    where = ops.CallbackFilter(
        types=query_list(request, "type"),
        statuses=ops.parse_callback_statuses(query_list(request, "status")),
        since=query_ms(request, "since"), until=query_ms(request, "until"))
    found = await ops.list_callbacks(services(request.app), request[CALLER],
                                     page_query(request), where)
    return web.json_response(page_json(found, callback_json))


async def get_callback_logs(request: web.Request) -> web.Response:
    callback, attempts = await ops.callback_logs(services(request.app), request[CALLER],
                                                 path_uuid(request, "callback_id"),
                                                 page_query(request))
    return web.json_response(page_json(attempts, lambda a: attempt_json(a, callback.body)))


async def retry_callback(request: web.Request) -> web.Response:
    await ops.retry_callback(services(request.app), request[CALLER],
                             path_uuid(request, "callback_id"))
    return web.json_response({"retried": True}, status=201)


TAG = "Callbacks"
WAIT = Param("wait", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
             "Answer as soon as the callback is decided, or after this many seconds.")
STATUS_FILTER = Param("status", {"type": "string"},
                      "Only these statuses: Pending, Retrying, Approved, Denied, Failed "
                      "(comma-separated or repeated).")

ROUTES = [
    Route("POST", "/v1/callbacks", create_callback, "createCallback",
          "Ask a callback endpoint to approve an action", TAG, ok=202,
          response="CallbackAccepted", body="CallbackCreate", params=(IDEMPOTENCY,),
          description="Sends `data` to the tenant's callback endpoint (the only active one "
                      "unless `endpoint_id` names it) and retries until it answers `ok` or "
                      "`deny`, its retries run out or `deadline_seconds` pass (then Failed: "
                      "never approved)."),
    Route("GET", "/v1/callbacks", list_callbacks, "listCallbacks", "List callbacks", TAG,
          response="CallbackPage", params=(LIMIT, CURSOR, STATUS_FILTER, TYPE_FILTER, SINCE,
                                           UNTIL),
          description="Newest first."),
    Route("GET", "/v1/callbacks/{callback_id}", get_callback, "getCallback",
          "A callback and its decision", TAG, response="Callback", params=(WAIT,),
          description="With `wait`, answers as soon as the callback is Approved, Denied or "
                      "Failed, or after `wait` seconds."),
    Route("GET", "/v1/callbacks/{callback_id}/logs", get_callback_logs, "getCallbackLogs",
          "Every attempt to send a callback", TAG, response="AttemptPage",
          params=(LIMIT, CURSOR),
          description="Oldest first, with the exact response body received."),
    Route("POST", "/v1/callbacks/{callback_id}/retry", retry_callback, "retryCallback",
          "Retry a Failed callback before its deadline", TAG, ok=201, response="Retried",
          errors=(409,),
          description="One more attempt now; 409 once Approved or Denied, while not Failed, "
                      "or after the deadline."),
]
