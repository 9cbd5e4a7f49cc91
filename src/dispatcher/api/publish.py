"""Publishing routes over operations/publish.py: one event (`POST /v1/events`,
optional `Idempotency-Key`) or a batch (`POST /v1/events/batch`). Both answer 202
with each event's id and the deliveries created."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.spec import Param, Route
from dispatcher.operations import publish as ops
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import header_text, read_json
from dispatcher.web.views import published_json

IDEMPOTENCY_HEADER = "Idempotency-Key"


async def publish_event(request: web.Request) -> web.Response:
    key = ops.idempotency_key(header_text(request, IDEMPOTENCY_HEADER), IDEMPOTENCY_HEADER)
    published = await ops.publish_event(services(request.app), request[CALLER],
                                        await read_json(request), key)
    headers = {"Idempotent-Replayed": "true"} if published.duplicate else None
    return web.json_response(published_json(published), status=202, headers=headers)


async def publish_batch(request: web.Request) -> web.Response:
    published = await ops.publish_batch(services(request.app), request[CALLER],
                                        await read_json(request))
    return web.json_response({"data": [published_json(p) for p in published]}, status=202)


TAG = "Events"
IDEMPOTENCY = Param(
    IDEMPOTENCY_HEADER, {"type": "string", "minLength": 1, "maxLength": ops.MAX_IDEMPOTENCY_KEY},
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
