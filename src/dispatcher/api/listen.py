"""`GET /v1/listen` (websocket): the daemon's side of `dispatcher listen`. A
connection creates a temporary endpoint of the tenant that delivers over it: this
process claims the endpoint's due deliveries (the engine skips them), signs each
and sends it down the connection; the listener forwards it to the local receiver
and answers with the receiver's response, recorded as the attempt and retried on
the endpoint's normal schedule. When the listener says goodbye the endpoint goes
at once with its pending deliveries; when the connection drops, after
`server.listen_grace_seconds`, unless the listener reconnects with
`?endpoint_id=` meanwhile.

Messages are JSON text. Daemon to listener: {"type": "ready", "endpoint_id",
"signing_scheme", "secret"}, then {"type": "delivery", "delivery_id", "event_id",
"event_type", "attempt", "headers", "body"}. Listener to daemon: {"type": "result",
"delivery_id", "status", "headers", "body", "duration_ms", "failure_reason",
"error"} per delivery, and {"type": "bye"} before closing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import structlog
from aiohttp import WSMsgType, web

from dispatcher.api.spec import Param, Route
from dispatcher.errors import BadRequest
from dispatcher.operations import listeners as ops
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.relay import ListenSession
from dispatcher.web.context import CALLER, CLOCK, CONFIG, POLICIES, POOL, services
from dispatcher.web.request import query_list, query_str

log = structlog.get_logger(__name__)


async def listen(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=10.0)
    if not ws.can_prepare(request).ok:
        raise BadRequest("expected a websocket connection (GET with Upgrade: websocket)",
                         field="Upgrade")
    svc, caller = services(request.app), request[CALLER]
    config = request.app[CONFIG]
    grace = config.server.listen_grace_seconds
    owner = uuid.uuid4()
    resumed = query_str(request, "endpoint_id")
    if resumed is not None:
        listener = await ops.take_over(svc, caller, resumed, owner)
    else:
        listener = await ops.open_listener(svc, caller, query_list(request, "events") or ["*"],
                                           query_str(request, "forward_to") or "", owner)
    endpoint_id, secret = listener.endpoint_id, listener.secret
    log.info("listen.connected", endpoint_id=str(endpoint_id))
    policy_name = config.delivery.default_retry_policy
    session = ListenSession(request.app[POOL], request.app[CLOCK], config.delivery, ws,
                            endpoint_id, owner, secret, request.app[POLICIES][policy_name],
                            ops.listen_timeout(svc))
    said_bye = False
    sender: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        await ws.send_json({"type": "ready", "endpoint_id": str(endpoint_id),
                            "signing_scheme": listener.signing_scheme, "secret": secret,
                            "event_types": listener.event_types, "grace_seconds": grace,
                            "resumed": resumed is not None})
        sender = asyncio.create_task(session.send_due())
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                message = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("type") == "result":
                await session.on_result(message)
            elif message.get("type") == "bye":
                said_bye = True
                break
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await asyncio.shield(_close(svc, caller, session, ws, said_bye, grace))
    return ws


async def _close(svc: Services, caller: Caller, session: ListenSession,
                 ws: web.WebSocketResponse, said_bye: bool, grace: float) -> None:
    with contextlib.suppress(Exception):
        await ws.close()
    await session.give_back()
    if session.taken_over:
        return
    if not said_bye:
        log.info("listen.dropped", endpoint_id=str(session.endpoint_id), grace_seconds=grace)
        await asyncio.sleep(grace)
    await ops.close_listener(svc, caller, session.endpoint_id, session.owner)
    log.info("listen.closed", endpoint_id=str(session.endpoint_id))


EVENTS = Param("events", {"type": "string"},
               "Event types to receive (comma-separated or repeated; default all).")
FORWARD_TO = Param("forward_to", {"type": "string", "maxLength": 400},
                   "Where the listener forwards (shown as the endpoint's URL).")
RESUME = Param("endpoint_id", {"type": "string", "format": "uuid"},
               "Reconnect to this temporary endpoint (within the grace period).")

ROUTES = [
    Route("GET", "/v1/listen", listen, "listen",
          "Receive the tenant's events over a websocket (`dispatcher listen`)", "Listen",
          ok=101, params=(EVENTS, FORWARD_TO, RESUME), errors=(400, 403, 404, 422),
          description="Creates a temporary endpoint delivering over this connection; see "
                      "the README's `dispatcher listen` for the messages."),
]
