"""The event-type catalogue over the API (operations/event_types.py): built-in and
configured types, plus the tenant's own, which it may create and delete."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.spec import CURSOR, LIMIT, Param, Route
from dispatcher.catalogue import NAME_PATTERN
from dispatcher.operations import event_types as ops
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import page_query, query_str, read_json
from dispatcher.web.views import page_json


async def list_event_types(request: web.Request) -> web.Response:
    found = await ops.list_event_types(services(request.app), request[CALLER],
                                       page_query(request), query_str(request, "group"))
    return web.json_response(page_json(found, lambda t: t.to_json()))


async def get_event_type(request: web.Request) -> web.Response:
    found = await ops.get_event_type(services(request.app), request[CALLER],
                                     request.match_info["name"])
    return web.json_response(found.to_json())


async def create_event_type(request: web.Request) -> web.Response:
    created = await ops.create_event_type(services(request.app), request[CALLER],
                                          await read_json(request))
    return web.json_response(created.to_json(), status=201)


async def delete_event_type(request: web.Request) -> web.Response:
    await ops.delete_event_type(services(request.app), request[CALLER],
                                request.match_info["name"])
    return web.Response(status=204)


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
