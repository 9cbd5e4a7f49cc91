"""The event-type catalogue: built-in and configured types, plus the tenant's own,
which it may define and delete."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any

from dispatcher.catalogue import MAX_DESCRIPTION, EventType, valid_name
from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.operations import audit
from dispatcher.operations.fields import Fields, check_json_value
from dispatcher.operations.pages import Page, PageQuery, as_name, cursor_part, cut, decode_cursor
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.store import event_types as store
from dispatcher.store.tenants import count_under_tenant_lock

MAX_SAMPLE_BYTES = 65536


def _not_found(name: str) -> NotFound:
    return NotFound(f"event type {name!r} not found", field="name")


async def list_event_types(svc: Services, caller: Caller, page: PageQuery,
                           group: str | None = None) -> Page[EventType]:
    """The catalogue and the tenant's own types, by name."""
    cursor = decode_cursor(page.cursor, "event-types")
    after = None if cursor is None else cursor_part(cursor, 0, as_name)
    limit = page.limit
    catalogue = [t for name, t in sorted(svc.catalogue.items())
                 if (after is None or name > after) and (group is None or t.group == group)]
    own: list[EventType] = []
    if group in (None, "tenant"):
        async with svc.pool.acquire() as conn:
            own = await store.list_event_types(conn, caller.tenant, after, limit + 1)
    names = {t.name for t in catalogue}
    merged = sorted(catalogue[: limit + 1] + [t for t in own if t.name not in names],
                    key=lambda t: t.name)
    return cut(merged, limit, "event-types", lambda t: [t.name])


def unknown_type(field: str, name: str, known: Iterable[str]) -> ValidationError:
    """The one error for a type that is neither in the catalogue nor the tenant's own:
    the nearest known names, and how to list and add types from each front end."""
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
    return ValidationError(
        f"{field} is not a known event type: {name!r}{hint} List them with "
        "`dispatcher event-types list` (GET /v1/event-types); add one with "
        "`dispatcher event-types add NAME` (Client.create_event_type, POST /v1/event-types)",
        field=field)


async def get_event_type(svc: Services, caller: Caller, name: str) -> EventType:
    if not valid_name(name):
        raise _not_found(name)
    found = svc.catalogue.get(name)
    if found is None:
        async with svc.pool.acquire() as conn:
            found = await store.get_event_type(conn, caller.tenant, name)
    if found is None:
        raise _not_found(name)
    return found


async def create_event_type(svc: Services, caller: Caller, body: Any) -> EventType:
    caller.may_write()
    f = Fields(body)
    f.reject_unknown(("name", "description", "sample"), ("group", "source"))
    name = f.string("name", min_len=1, max_len=100)
    if not valid_name(name) or name == "*":
        f.fail("name", "must be 1-100 letters, digits or . _ - : / and start with a letter "
                       "or digit")
    description = f.string("description", default="", max_len=MAX_DESCRIPTION)
    sample = f.data.get("sample")
    if sample is not None:
        check_json_value(sample, "sample")
        if len(json.dumps(sample)) > MAX_SAMPLE_BYTES:
            f.fail("sample", f"must be at most {MAX_SAMPLE_BYTES} bytes")
    if name in svc.catalogue:
        raise Conflict(f"event type {name!r} is already in the catalogue", field="name")
    limit = svc.config.server.max_event_types_per_tenant
    async with svc.pool.acquire() as conn, conn.transaction():
        if await count_under_tenant_lock(conn, caller.tenant, "event_types") >= limit:
            raise ValidationError(
                f"this tenant already has {limit} event types, the most allowed "
                "(server.max_event_types_per_tenant)", code="event_type_limit_reached")
        created = await store.create_event_type(conn, caller.tenant, name, description,
                                                sample, svc.clock.now())
        if created is None:
            raise Conflict(f"event type {name!r} already exists", field="name")
        await audit.record(svc, conn, caller, "event_type.create", "event_type", name,
                           audit.created({"description": description,
                                          "sample": sample is not None}))
    return created


async def delete_event_type(svc: Services, caller: Caller, name: str) -> None:
    caller.may_write()
    if not valid_name(name):
        raise _not_found(name)
    async with svc.pool.acquire() as conn, conn.transaction():
        deleted = await store.delete_event_type(conn, caller.tenant, name)
        if deleted:
            await audit.record(svc, conn, caller, "event_type.delete", "event_type", name)
            return
    if name in svc.catalogue:
        raise Conflict(f"event type {name!r} is built in or configured; it cannot be deleted",
                       field="name")
    raise _not_found(name)
