"""Approval callbacks: ask a tenant's callback endpoint to approve an action
(`POST /v1/callbacks`), read the decision (optionally waiting for it with
`?wait=S`), list callbacks, read every attempt, and retry a Failed one before its
deadline. A decision (`ok` / `deny`) is final; anything else fails closed."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.api.callback_waiter import WAITER
from dispatcher.api.context import CLOCK, CONFIG, POLICIES, POOL, TENANT
from dispatcher.api.lookup import _time_range
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
from dispatcher.api.publish import IDEMPOTENCY, IDEMPOTENCY_HEADER, _idempotency_key
from dispatcher.api.request import Fields, path_uuid, query_int, query_list, read_json
from dispatcher.api.spec import CURSOR, LIMIT, SINCE, TYPE_FILTER, UNTIL, Param, Route
from dispatcher.api.views import attempt_json, ms
from dispatcher.clock import to_ms
from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.model import CALLBACK_DECIDED, CallbackStatus
from dispatcher.store import callbacks as store
from dispatcher.store import lookup
from dispatcher.store.deliveries import retry_delivery
from dispatcher.store.pool import Conn

MAX_WAIT = 30
RECHECK_SECONDS = 1.0  # a waiting request re-reads at least this often
STATUS_LABELS = [str(s) for s in CallbackStatus]


def callback_json(c: store.CallbackView) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "type": c.type,
        "data": c.data,
        "endpoint_id": str(c.endpoint_id),
        "status": str(c.status),
        "decision": c.decision,
        "decided_timestamp": ms(c.decided_at),
        "attempts": c.attempts,
        "retries_left": c.retries_left,
        "next_retry_timestamp": ms(c.next_retry_at),
        "failure_reason": c.failure_reason,
        "held": c.held_since is not None and not c.decided,
        "created_timestamp": to_ms(c.created_at),
        "deadline_timestamp": to_ms(c.deadline_at),
    }


def _not_found(callback_id: UUID) -> NotFound:
    return NotFound(f"callback {callback_id} not found", field="callback_id")


async def _target(conn: Conn, tenant_id: UUID, f: Fields) -> store.CallbackTarget:
    endpoint_id = None
    if f.data.get("endpoint_id") is not None:
        raw = f.string("endpoint_id", max_len=100)
        try:
            endpoint_id = UUID(raw)
        except ValueError:
            f.fail("endpoint_id", "must be a UUID")
    found = await store.callback_targets(conn, tenant_id, endpoint_id)
    if endpoint_id is not None and not found:
        f.fail("endpoint_id", f"is not a callback endpoint of this tenant: {endpoint_id}")
    if not found:
        f.fail("endpoint_id", "is required: the tenant has no active callback endpoint")
    if len(found) > 1:
        f.fail("endpoint_id", "is required: the tenant has more than one active callback "
                              "endpoint")
    return found[0]


async def create_callback(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    config = request.app[CONFIG]
    key = _idempotency_key(request.headers.get(IDEMPOTENCY_HEADER), IDEMPOTENCY_HEADER)
    f = Fields(await read_json(request))
    f.reject_unknown(("type", "data", "endpoint_id", "deadline_seconds"))
    type_ = f.string("type", max_len=100, min_len=1)
    data = f.obj("data", max_bytes=config.server.max_body_bytes)
    deadline = f.number("deadline_seconds", default=config.callbacks.default_deadline_seconds,
                        lo=1, hi=config.callbacks.max_deadline_seconds)
    now = request.app[CLOCK].now()
    window = timedelta(seconds=config.server.idempotency_window_seconds)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        target = await _target(conn, tenant_id, f)
        replayed = await _replay(conn, tenant_id, key, now, window)
        if replayed is None:
            policy = request.app[POLICIES].get(target.retry_policy)
            callback_id = uuid.uuid4()
            new = store.NewCallback(
                callback_id, tenant_id, target.id, type_, data,
                store.callback_body(callback_id, type_, now, data, target.signing_scheme),
                now + timedelta(seconds=deadline), key, policy.retries if policy else 0)
            if not await store.create_callback(conn, new, now):
                # Another request took the key between our read and write.
                replayed = await _replay(conn, tenant_id, key, now, window)
                assert replayed is not None
        found = await store.get_callback(conn, tenant_id, replayed or callback_id)
    assert found is not None
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    body = {k: v for k, v in callback_json(found).items()
            if k in ("id", "type", "status", "endpoint_id", "created_timestamp",
                     "deadline_timestamp")}
    return web.json_response(body, status=202, headers=headers)


async def _replay(
    conn: Conn, tenant_id: UUID, key: str | None, now: Any, window: timedelta
) -> UUID | None:
    """The callback created earlier with this idempotency key, if within the window."""
    if key is None:
        return None
    found = await store.find_by_key(conn, tenant_id, key)
    if found is None:
        return None
    view = await store.get_callback(conn, tenant_id, found)
    if view is not None and view.created_at >= now - window:
        return found
    await store.forget_key(conn, found)
    return None


async def _read(request: web.Request, callback_id: UUID) -> store.CallbackView:
    async with request.app[POOL].acquire() as conn:
        found = await store.get_callback(conn, request[TENANT], callback_id)
    if found is None:
        raise _not_found(callback_id)
    return found


async def get_callback(request: web.Request) -> web.Response:
    callback_id = path_uuid(request, "callback_id")
    wait = query_int(request, "wait", 0, 0, MAX_WAIT)
    if wait == 0:
        return web.json_response(callback_json(await _read(request, callback_id)))
    waiter = request.app[WAITER]
    give_up = time.monotonic() + wait
    woken = waiter.watch(callback_id)
    try:
        await waiter.listening(min(wait, RECHECK_SECONDS))
        while True:
            woken.clear()
            found = await _read(request, callback_id)  # no connection held below
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


def parse_callback_statuses(values: list[str] | None) -> list[CallbackStatus] | None:
    if values is None:
        return None
    labels = {s.lower(): s for s in STATUS_LABELS}
    if any(s.lower() not in labels for s in values):
        raise ValidationError(f"status must be one of {', '.join(STATUS_LABELS)}",
                              field="status")
    return [CallbackStatus(labels[s.lower()]) for s in values]


async def find_callbacks(
    request: web.Request, since: datetime | None, until: datetime | None
) -> tuple[list[store.CallbackView], str | None]:
    """One page of the tenant's callbacks, newest first, filtered by the request's
    `status`, `type`, `limit` and `cursor` and the time range; and the next cursor.
    Shared by the API's list and the console's."""
    if since and until and since > until:
        raise ValidationError("since must not be after until", field="since")
    limit = page_limit(request)
    statuses = parse_callback_statuses(query_list(request, "status"))
    types = query_list(request, "type")
    cursor = decode_cursor(request, "callbacks")
    before = None
    if cursor is not None:
        before = (cursor_part(cursor, 0, as_time), cursor_part(cursor, 1, as_uuid))
    async with request.app[POOL].acquire() as conn:
        found = await store.list_callbacks(conn, request[TENANT], statuses=statuses,
                                           types=types, since=since, until=until,
                                           before=before, limit=limit + 1)
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        next_cursor = encode_cursor("callbacks", [found[-1].created_at.isoformat(),
                                                  str(found[-1].id)])
    return found, next_cursor


async def list_callbacks(request: web.Request) -> web.Response:
    found, next_cursor = await find_callbacks(request, *_time_range(request))
    return web.json_response(page([callback_json(c) for c in found], next_cursor))


async def get_callback_logs(request: web.Request) -> web.Response:
    callback_id = path_uuid(request, "callback_id")
    limit = page_limit(request)
    cursor = decode_cursor(request, "callback-attempts")
    after = None if cursor is None else cursor_part(cursor, 0, as_int)
    async with request.app[POOL].acquire() as conn:
        found = await store.get_callback(conn, request[TENANT], callback_id)
        if found is None:
            raise _not_found(callback_id)
        attempts = await lookup.attempt_logs(conn, found.delivery_id, after=after,
                                             limit=limit + 1)
    next_cursor = None
    if len(attempts) > limit:
        attempts = attempts[:limit]
        next_cursor = encode_cursor("callback-attempts", [attempts[-1].id])
    return web.json_response(page([attempt_json(a, found.body) for a in attempts], next_cursor))


def can_retry(c: store.CallbackView, now: datetime) -> bool:
    """Whether retry_callback would take this callback (unless its last attempt is
    still on the wire): Failed, and its deadline not passed."""
    return c.status is CallbackStatus.FAILED and c.deadline_at > now


async def retry_callback(request: web.Request) -> web.Response:
    """One more attempt for a Failed callback whose deadline has not passed."""
    tenant_id = request[TENANT]
    callback_id = path_uuid(request, "callback_id")
    now = request.app[CLOCK].now()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        found = await store.get_callback(conn, tenant_id, callback_id)
        if found is None:
            raise _not_found(callback_id)
        if found.decision is not None:
            raise Conflict(f"the callback is {found.status}: a decision is final",
                           field="status", code="callback_decided")
        if found.status is not CallbackStatus.FAILED:
            raise Conflict(f"only Failed callbacks can be retried; this one is {found.status}",
                           field="status")
        endpoint_id = await store.reopen(conn, tenant_id, callback_id, now)
        if endpoint_id is None:
            raise Conflict("the callback's deadline has passed: it stays Failed",
                           field="status", code="deadline_passed")
        refused = await retry_delivery(conn, endpoint_id, callback_id, now)
        if refused is not None:  # its last attempt is still on the wire
            raise Conflict("the callback is being sent right now; try again shortly",
                           field="status", code="delivery_in_progress")
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
