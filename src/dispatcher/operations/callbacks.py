"""Approval callbacks: ask a tenant's callback endpoint to approve an action, read
the decision, list callbacks, read every attempt, and retry a Failed one before
its deadline. A decision (`ok` / `deny`) is final; anything else fails closed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from dispatcher import telemetry
from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.model import CallbackStatus
from dispatcher.operations import audit
from dispatcher.operations.fields import Fields
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
from dispatcher.store import callbacks as store
from dispatcher.store import lookup
from dispatcher.store.callbacks import CallbackView
from dispatcher.store.deliveries import retry_delivery
from dispatcher.store.lookup import AttemptView
from dispatcher.store.pool import Conn

STATUS_LABELS = [str(s) for s in CallbackStatus]


@dataclass(frozen=True)
class Created:
    callback: CallbackView
    replayed: bool  # an earlier callback with the same idempotency key


@dataclass(frozen=True)
class CallbackFilter:
    types: list[str] | None = None
    statuses: list[CallbackStatus] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ValidationError("since must not be after until", field="since")


def callback_not_found(callback_id: UUID) -> NotFound:
    return NotFound(f"callback {callback_id} not found", field="callback_id")


def parse_callback_statuses(values: list[str] | None) -> list[CallbackStatus] | None:
    if values is None:
        return None
    labels = {s.lower(): s for s in STATUS_LABELS}
    if any(s.lower() not in labels for s in values):
        raise ValidationError(f"status must be one of {', '.join(STATUS_LABELS)}",
                              field="status")
    return [CallbackStatus(labels[s.lower()]) for s in values]

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


def _trace_context() -> str | None:
    """The current span's context (the API request's), stored with the callback so
    its attempts are spans of the caller's trace."""
    tracing = telemetry.active()
    return None if tracing is None else tracing.stored_context()


async def create_callback(svc: Services, caller: Caller, body: Any,
                          key: str | None) -> Created:
    """Send `data` to the tenant's callback endpoint (the only active one unless
    `endpoint_id` names it); `key` is the checked Idempotency-Key."""
    caller.may_write()
    tenant_id = caller.tenant
    config = svc.config
    f = Fields(body)
    f.reject_unknown(("type", "data", "endpoint_id", "deadline_seconds"))
    type_ = f.string("type", max_len=100, min_len=1)
    data = f.obj("data", max_bytes=config.server.max_body_bytes)
    deadline = f.number("deadline_seconds", default=config.callbacks.default_deadline_seconds,
                        lo=1, hi=config.callbacks.max_deadline_seconds)
    now = svc.clock.now()
    window = timedelta(seconds=config.server.idempotency_window_seconds)
    async with svc.pool.acquire() as conn, conn.transaction():
        target = await _target(conn, tenant_id, f)
        replayed = await _replay(conn, tenant_id, key, now, window)
        if replayed is None:
            policy = svc.policies.get(target.retry_policy)
            callback_id = uuid.uuid4()
            new = store.NewCallback(
                callback_id, tenant_id, target.id, type_, data,
                store.callback_body(callback_id, type_, now, data, target.signing_scheme),
                now + timedelta(seconds=deadline), key, policy.retries if policy else 0,
                _trace_context())
            if not await store.create_callback(conn, new, now):
                # Another request took the key between our read and write.
                replayed = await _replay(conn, tenant_id, key, now, window)
                assert replayed is not None
        found = await store.get_callback(conn, tenant_id, replayed or callback_id)
    assert found is not None
    return Created(found, replayed is not None)


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


async def get_callback(svc: Services, caller: Caller, callback_id: UUID) -> CallbackView:
    async with svc.pool.acquire() as conn:
        found = await store.get_callback(conn, caller.tenant, callback_id)
    if found is None:
        raise callback_not_found(callback_id)
    return found


async def list_callbacks(svc: Services, caller: Caller, page: PageQuery,
                         where: CallbackFilter) -> Page[CallbackView]:
    """The tenant's callbacks newest first."""
    before = after_time_and_id(decode_cursor(page.cursor, "callbacks"))
    async with svc.pool.acquire() as conn:
        found = await store.list_callbacks(conn, caller.tenant, statuses=where.statuses,
                                           types=where.types, since=where.since,
                                           until=where.until, before=before,
                                           limit=page.limit + 1)
    return cut(found, page.limit, "callbacks", lambda c: time_and_id(c.created_at, c.id))


async def callback_logs(svc: Services, caller: Caller, callback_id: UUID,
                        page: PageQuery) -> tuple[CallbackView, Page[AttemptView]]:
    """Every attempt to send a callback, oldest first, with the callback."""
    cursor = decode_cursor(page.cursor, "callback-attempts")
    after = None if cursor is None else cursor_part(cursor, 0, as_int)
    async with svc.pool.acquire() as conn:
        found = await store.get_callback(conn, caller.tenant, callback_id)
        if found is None:
            raise callback_not_found(callback_id)
        attempts = await lookup.attempt_logs(conn, found.delivery_id, after=after,
                                             limit=page.limit + 1)
    return found, cut(attempts, page.limit, "callback-attempts", lambda a: [a.id])


async def callback_url(svc: Services, caller: Caller, callback: CallbackView) -> str | None:
    async with svc.pool.acquire() as conn:
        return await lookup.endpoint_url(conn, caller.tenant, callback.endpoint_id)


def can_retry(c: CallbackView, now: datetime) -> bool:
    """Whether retry_callback would take this callback (unless its last attempt is
    still on the wire): Failed, and its deadline not passed."""
    return c.status is CallbackStatus.FAILED and c.deadline_at > now


async def retry_callback(svc: Services, caller: Caller, callback_id: UUID) -> None:
    """One more attempt for a Failed callback whose deadline has not passed."""
    caller.may_write()
    tenant_id = caller.tenant
    now = svc.clock.now()
    async with svc.pool.acquire() as conn, conn.transaction():
        found = await store.get_callback(conn, tenant_id, callback_id)
        if found is None:
            raise callback_not_found(callback_id)
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
        await audit.record(svc, conn, caller, "callback.retry", "callback", callback_id,
                           {"status": {"old": str(found.status)}})
