"""The event-type catalogue over the API: built-in and configured types, plus the
tenant's own, which it may create and delete."""

from __future__ import annotations

import json

from aiohttp import web

from dispatcher.api.context import CATALOGUE, CLOCK, POOL, TENANT
from dispatcher.api.pagination import (
    as_name,
    cursor_part,
    decode_cursor,
    encode_cursor,
    page,
    page_limit,
)
from dispatcher.api.request import Fields, check_json_value, query_str, read_json
from dispatcher.api.spec import CURSOR, LIMIT, Param, Route
from dispatcher.catalogue import MAX_DESCRIPTION, NAME_PATTERN, EventType, valid_name
from dispatcher.errors import Conflict, NotFound
from dispatcher.store import event_types as store

MAX_SAMPLE_BYTES = 65536


def _path_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not valid_name(name):
        raise NotFound(f"event type {name!r} not found", field="name")
    return name


async def list_event_types(request: web.Request) -> web.Response:
    limit = page_limit(request)
    group = query_str(request, "group")
    cursor = decode_cursor(request, "event-types")
    after = None if cursor is None else cursor_part(cursor, 0, as_name)
    catalogue = [t for name, t in sorted(request.app[CATALOGUE].items())
                 if (after is None or name > after) and (group is None or t.group == group)]
    own: list[EventType] = []
    if group in (None, "tenant"):
        async with request.app[POOL].acquire() as conn:
            own = await store.list_event_types(conn, request[TENANT], after, limit + 1)
    names = {t.name for t in catalogue}
    merged = sorted(catalogue[: limit + 1] + [t for t in own if t.name not in names],
                    key=lambda t: t.name)
    next_cursor = None
    if len(merged) > limit:
        merged = merged[:limit]
        next_cursor = encode_cursor("event-types", [merged[-1].name])
    return web.json_response(page([t.to_json() for t in merged], next_cursor))


async def get_event_type(request: web.Request) -> web.Response:
    name = _path_name(request)
    found = request.app[CATALOGUE].get(name)
    if found is None:
        async with request.app[POOL].acquire() as conn:
            found = await store.get_event_type(conn, request[TENANT], name)
    if found is None:
        raise NotFound(f"event type {name!r} not found", field="name")
    return web.json_response(found.to_json())


async def create_event_type(request: web.Request) -> web.Response:
    f = Fields(await read_json(request))
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
    if name in request.app[CATALOGUE]:
        raise Conflict(f"event type {name!r} is already in the catalogue", field="name")
    async with request.app[POOL].acquire() as conn:
        created = await store.create_event_type(conn, request[TENANT], name, description,
                                                sample, request.app[CLOCK].now())
    if created is None:
        raise Conflict(f"event type {name!r} already exists", field="name")
    return web.json_response(created.to_json(), status=201)


async def delete_event_type(request: web.Request) -> web.Response:
    name = _path_name(request)
    async with request.app[POOL].acquire() as conn:
        deleted = await store.delete_event_type(conn, request[TENANT], name)
    if deleted:
        return web.Response(status=204)
    if name in request.app[CATALOGUE]:
        raise Conflict(f"event type {name!r} is built in or configured; it cannot be deleted",
                       field="name")
    raise NotFound(f"event type {name!r} not found", field="name")


TAG = "Event types"
GROUP = Param("group", {"type": "string"},
              "Only this group: cobo, okx, cobalt, whatsapp, dispatcher, config or tenant.")
NAME_DOC = f"An event type name (pattern `{NAME_PATTERN}`)."

ROUTES = [
    Route("GET", "/v1/event-types", list_event_types, "listEventTypes",
          "The event-type catalogue", TAG, response="EventTypePage",
          params=(LIMIT, CURSOR, GROUP),
          description="Built-in provider types (Cobo, OKX, Cobalt, WhatsApp), the dispatcher's "
                      "operational types, configured types and the tenant's own, by name."),
    Route("POST", "/v1/event-types", create_event_type, "createEventType",
          "Define an event type", TAG, ok=201, response="EventType", body="EventTypeCreate",
          errors=(409,)),
    Route("GET", "/v1/event-types/{name}", get_event_type, "getEventType",
          "Show an event type", TAG, response="EventType"),
    Route("DELETE", "/v1/event-types/{name}", delete_event_type, "deleteEventType",
          "Delete a tenant-defined event type", TAG, ok=204, errors=(409,)),
]
