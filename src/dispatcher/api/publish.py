"""Publishing: one event (`POST /v1/events`, optional `Idempotency-Key`) or a batch
(`POST /v1/events/batch`). Both answer 202 with each event's id and the deliveries
created; a repeated idempotency key within the window answers the original event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.api.auth import names_own_tenant
from dispatcher.api.context import CATALOGUE, CLOCK, CONFIG, POLICIES, POOL, SCOPE, TENANT
from dispatcher.api.request import Fields, check_text, header_text, read_json
from dispatcher.api.spec import Param, Route
from dispatcher.api.views import published_json
from dispatcher.catalogue import valid_name
from dispatcher.config import ServerConfig
from dispatcher.errors import Forbidden, ValidationError
from dispatcher.store.event_types import known_tenant_types
from dispatcher.store.events import NewEvent, PublishedEvent, publish_events
from dispatcher.store.pool import Conn
from dispatcher.store.tenants import tenant_ids

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255
MAX_ORDERING_KEY = 200


def _idempotency_key(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationError(f"{field} must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                              field=field)
    return check_text(value, field)


def _new_event(f: Fields, idempotency_key: str | None, *, batch: bool = False) -> NewEvent:
    f.reject_unknown(("type", "data", "idempotency_key", "ordering_key", "tenant") if batch
                     else ("type", "data", "idempotency_key", "ordering_key"))
    type_ = f.string("type", max_len=100, min_len=1)
    if not valid_name(type_):
        f.fail("type", f"is not a known event type: {type_!r}")
    if "data" not in f.data:
        f.fail("data", "is required")
    if f.has("idempotency_key"):
        idempotency_key = _idempotency_key(f.data["idempotency_key"], f.name("idempotency_key"))
    ordering_key = None
    if f.data.get("ordering_key") is not None:
        ordering_key = f.string("ordering_key", max_len=MAX_ORDERING_KEY, min_len=1)
    return NewEvent(type_, f.data["data"], idempotency_key, ordering_key)


async def _check_types(
    request: web.Request, conn: Conn, tenant_id: UUID, events: Sequence[NewEvent], batch: bool
) -> None:
    catalogue = request.app[CATALOGUE]
    others: dict[UUID, set[str]] = {}
    for ev in events:
        if ev.type not in catalogue:
            others.setdefault(ev.tenant_id or tenant_id, set()).add(ev.type)
    known = {t: await known_tenant_types(conn, t, names) for t, names in others.items()}
    for i, ev in enumerate(events):
        if ev.type not in catalogue and ev.type not in known[ev.tenant_id or tenant_id]:
            field = f"events[{i}].type" if batch else "type"
            raise ValidationError(
                f"{field} is not a known event type: {ev.type!r} "
                "(see GET /v1/event-types, or define it with POST /v1/event-types)",
                field=field,
            )


def _delivery_limit(events: Sequence[NewEvent], cfg: ServerConfig) -> int | None:
    """The most deliveries this publish may make (413 beyond), or None when the
    endpoint limit already rules it out (a single event with the default limits):
    then the publish counts nothing."""
    limit = cfg.max_deliveries_per_publish
    return None if len(events) * cfg.max_endpoints_per_tenant <= limit else limit


async def _publish(
    request: web.Request, events: list[NewEvent], batch: bool
) -> list[PublishedEvent]:
    tenant_id = request[TENANT]
    config = request.app[CONFIG]
    policies = request.app[POLICIES]
    async with request.app[POOL].acquire() as conn:
        await _check_types(request, conn, tenant_id, events, batch)
        return await publish_events(
            conn, tenant_id, events,
            policies=policies,
            now=request.app[CLOCK].now(),
            idempotency_window=timedelta(seconds=config.server.idempotency_window_seconds),
            default_retries=policies[config.delivery.default_retry_policy].retries,
            max_deliveries=_delivery_limit(events, config.server),
        )


async def _with_tenants(
    request: web.Request, fields: list[Fields], events: list[NewEvent]
) -> list[NewEvent]:
    """Events that name a tenant (`"tenant"`, operator keys), with its id. For a tenant
    key or portal token, its own tenant is ignored and another is refused (403)."""
    scope = request[SCOPE]
    refs: dict[int, str] = {}
    for i, f in enumerate(fields):
        if f.has("tenant"):
            refs[i] = f.string("tenant", min_len=1, max_len=100)
    if not refs:
        return events
    if not scope.is_operator:
        for i, ref in refs.items():
            if not names_own_tenant(scope, ref):
                raise Forbidden("this credential publishes only for its own tenant",
                                field=fields[i].name("tenant"))
        return events
    async with request.app[POOL].acquire() as conn:
        ids = await tenant_ids(conn, refs.values())
    for i, ref in refs.items():
        if ref not in ids:
            fields[i].fail("tenant", f"is not a known tenant: {ref!r}")
    return [replace(ev, tenant_id=ids[refs[i]]) if i in refs else ev
            for i, ev in enumerate(events)]


async def publish_event(request: web.Request) -> web.Response:
    key = _idempotency_key(header_text(request, IDEMPOTENCY_HEADER), IDEMPOTENCY_HEADER)
    f = Fields(await read_json(request))
    event = _new_event(f, key)
    [published] = await _publish(request, [event], batch=False)
    headers = {"Idempotent-Replayed": "true"} if published.duplicate else None
    return web.json_response(published_json(published), status=202, headers=headers)


async def publish_batch(request: web.Request) -> web.Response:
    limit = request.app[CONFIG].server.max_batch_events
    f = Fields(await read_json(request))
    f.reject_unknown(("events",))
    raw = f.data.get("events")
    if not isinstance(raw, list):
        f.fail("events", "must be a list of events")
    if not 1 <= len(raw) <= limit:
        f.fail("events", f"must hold 1 to {limit} events")
    fields = [Fields(item, f"events[{i}].") for i, item in enumerate(raw)]
    events = [_new_event(item, None, batch=True) for item in fields]
    events = await _with_tenants(request, fields, events)
    published = await _publish(request, events, batch=True)
    return web.json_response({"data": [published_json(p) for p in published]}, status=202)


TAG = "Events"
IDEMPOTENCY = Param(
    IDEMPOTENCY_HEADER, {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    "Publishing again with the same key within the idempotency window (24 h by default) "
    "answers the original event instead of creating a new one.", location="header",
)

ROUTES = [
    Route("POST", "/v1/events", publish_event, "publishEvent", "Publish an event", TAG,
          ok=202, response="PublishedEvent", body="NewEvent", params=(IDEMPOTENCY,),
          description="Stores the event and one delivery per endpoint subscribed to its type "
                      "(held for paused endpoints), durably, before answering."),
    Route("POST", "/v1/events/batch", publish_batch, "publishEvents", "Publish events in a batch",
          TAG, ok=202, response="PublishedEventList", body="NewEventBatch",
          description="Up to 500 events (config `server.max_batch_events`) in one transaction; "
                      "each may carry its own `idempotency_key` and `ordering_key`. With an "
                      "operator key each may also name its `tenant`, so one call publishes for "
                      "many tenants; a tenant key naming another tenant gets 403."),
]
