"""Publishing: one event or a batch, each with its deliveries (one per endpoint
subscribed to its type, held for paused endpoints) stored in one transaction. A
repeated idempotency key within the window answers the original event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID

from dispatcher import telemetry
from dispatcher.catalogue import valid_name
from dispatcher.errors import Forbidden, ValidationError
from dispatcher.operations.event_types import unknown_type
from dispatcher.operations.fields import Fields, channel_list, check_text
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.store.event_types import known_tenant_types
from dispatcher.store.events import NewEvent, PublishedEvent, publish_events
from dispatcher.store.pool import Conn
from dispatcher.store.tenants import tenant_ids

MAX_IDEMPOTENCY_KEY = 255
MAX_ORDERING_KEY = 200


def idempotency_key(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError(f"{field} must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                              field=field)
    return check_text(value, field)


def _new_event(f: Fields, key: str | None, *, batch: bool = False) -> NewEvent:
    f.reject_unknown(("type", "data", "idempotency_key", "ordering_key", "channels", "tenant")
                     if batch else ("type", "data", "idempotency_key", "ordering_key",
                                    "channels"))
    type_ = f.string("type", max_len=100, min_len=1)
    if not valid_name(type_):
        f.fail("type", f"is not a known event type: {type_!r}")
    if "data" not in f.data:
        f.fail("data", "is required")
    if f.has("idempotency_key"):
        key = idempotency_key(f.data["idempotency_key"], f.name("idempotency_key"))
    ordering_key = None
    if f.data.get("ordering_key") is not None:
        ordering_key = f.string("ordering_key", max_len=MAX_ORDERING_KEY, min_len=1)
    return NewEvent(type_, f.data["data"], key, ordering_key,
                    channels=tuple(channel_list(f)))


async def _check_types(
    svc: Services, conn: Conn, tenant_id: UUID, events: Sequence[NewEvent], batch: bool
) -> None:
    catalogue = svc.catalogue
    others: dict[UUID, set[str]] = {}
    for ev in events:
        if ev.type not in catalogue:
            others.setdefault(ev.tenant_id or tenant_id, set()).add(ev.type)
    known = {t: await known_tenant_types(conn, t, names) for t, names in others.items()}
    for i, ev in enumerate(events):
        if ev.type not in catalogue and ev.type not in known[ev.tenant_id or tenant_id]:
            raise unknown_type(f"events[{i}].type" if batch else "type", ev.type, catalogue)


async def _publish(
    svc: Services, caller: Caller, events: list[NewEvent], batch: bool
) -> list[PublishedEvent]:
    tracing = telemetry.active()
    if tracing is None:
        return await _store(svc, caller, events, batch, None)
    with tracing.span("publish", **{"dispatcher.tenant_id": str(caller.tenant),
                                    "dispatcher.events": len(events)}) as span:
        published = await _store(svc, caller, events, batch, tracing.stored_context())
        if len(published) == 1:
            span.set_attribute("dispatcher.event_id", str(published[0].id))
        return published


async def _store(svc: Services, caller: Caller, events: list[NewEvent], batch: bool,
                 trace_context: str | None) -> list[PublishedEvent]:
    tenant_id = caller.tenant
    config = svc.config
    policies = svc.policies
    async with svc.pool.acquire() as conn:
        await _check_types(svc, conn, tenant_id, events, batch)
        return await publish_events(
            conn, tenant_id, events,
            policies=policies,
            now=svc.clock.now(),
            idempotency_window=timedelta(seconds=config.server.idempotency_window_seconds),
            default_retries=policies[config.delivery.default_retry_policy].retries,
            # Always counted: endpoints can outnumber max_endpoints_per_tenant (a
            # limit lowered since they were made), so events x limit proves nothing.
            max_deliveries=config.server.max_deliveries_per_publish,
            trace_context=trace_context,
        )


async def _with_tenants(
    svc: Services, caller: Caller, fields: list[Fields], events: list[NewEvent]
) -> list[NewEvent]:
    """Events that name a tenant (`"tenant"`, operator keys), with its id. For a tenant
    key or portal token, its own tenant is ignored and another is refused (403)."""
    scope = caller.scope
    refs: dict[int, str] = {}
    for i, f in enumerate(fields):
        if f.has("tenant"):
            refs[i] = f.string("tenant", min_len=1, max_len=100)
    if not refs:
        return events
    if not scope.is_operator:
        for i, ref in refs.items():
            if not scope.names_own_tenant(ref):
                raise Forbidden("this credential publishes only for its own tenant",
                                field=fields[i].name("tenant"))
        return events
    async with svc.pool.acquire() as conn:
        ids = await tenant_ids(conn, refs.values())
    for i, ref in refs.items():
        if ref not in ids:
            fields[i].fail("tenant", f"is not a known tenant: {ref!r}")
    return [replace(ev, tenant_id=ids[refs[i]]) if i in refs else ev
            for i, ev in enumerate(events)]



async def publish_event(svc: Services, caller: Caller, body: Any,
                        key: str | None) -> PublishedEvent:
    """One event; `key` is the Idempotency-Key given beside the body (checked)."""
    caller.may_write()
    event = _new_event(Fields(body), key)
    [published] = await _publish(svc, caller, [event], batch=False)
    return published


async def publish_batch(svc: Services, caller: Caller, body: Any) -> list[PublishedEvent]:
    """Up to `server.max_batch_events` events in one transaction."""
    caller.may_write()
    limit = svc.config.server.max_batch_events
    f = Fields(body)
    f.reject_unknown(("events",))
    raw = f.data.get("events")
    if not isinstance(raw, list):
        f.fail("events", "must be a list of events")
    if not 1 <= len(raw) <= limit:
        f.fail("events", f"must hold 1 to {limit} events")
    fields = [Fields(item, f"events[{i}].") for i, item in enumerate(raw)]
    events = [_new_event(item, None, batch=True) for item in fields]
    events = await _with_tenants(svc, caller, fields, events)
    return await _publish(svc, caller, events, batch=True)
