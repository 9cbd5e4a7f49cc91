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
from uuid import UUID

import structlog
from aiohttp import WSMsgType, web

from dispatcher.api.context import CATALOGUE, CLOCK, CONFIG, POLICIES, POOL, SECRET_BOX, TENANT
from dispatcher.api.request import query_list, query_str
from dispatcher.api.spec import Param, Route
from dispatcher.catalogue import valid_name
from dispatcher.errors import BadRequest, NotFound, ValidationError
from dispatcher.relay import ListenSession, abandoned_before
from dispatcher.signing import STANDARD_V1, generate_secret
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store.event_types import known_tenant_types
from dispatcher.store.listeners import (
    mark_listener,
    remove_abandoned,
    remove_listener,
    take_over_listener,
)
from dispatcher.store.secrets import reveal_endpoint_secret, set_endpoint_secret

log = structlog.get_logger(__name__)


async def _event_types(request: web.Request, tenant_id: UUID) -> list[str]:
    types = query_list(request, "events") or ["*"]
    if "*" in types:
        return ["*"]
    for t in types:
        if not valid_name(t):
            raise ValidationError(f"not an event type name: {t!r}", field="events")
    unknown = [t for t in types if t not in request.app[CATALOGUE]]
    if unknown:
        async with request.app[POOL].acquire() as conn:
            known = await known_tenant_types(conn, tenant_id, unknown)
        for t in unknown:
            if t not in known:
                raise ValidationError(f"not a known event type: {t!r}", field="events")
    return list(dict.fromkeys(types))


async def _take_over(request: web.Request, tenant_id: UUID, given: str,
                     owner: UUID) -> tuple[UUID, str, list[str]]:
    """A listener reconnecting within the grace period takes its endpoint back."""
    try:
        endpoint_id = uuid.UUID(given)
    except ValueError:
        raise ValidationError("endpoint_id is not a UUID", field="endpoint_id") from None
    async with request.app[POOL].acquire() as conn, conn.transaction():
        types = await take_over_listener(conn, endpoint_id, tenant_id, owner,
                                         request.app[CLOCK].now())
        if types is None:
            raise NotFound(f"no listener endpoint {endpoint_id} (removed after the grace "
                           "period?)", field="endpoint_id")
        secret = await reveal_endpoint_secret(conn, request.app[SECRET_BOX], endpoint_id,
                                              tenant_id=tenant_id)
    return endpoint_id, secret, list(types)


async def listen(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=10.0)
    if not ws.can_prepare(request).ok:
        raise BadRequest("expected a websocket connection (GET with Upgrade: websocket)",
                         field="Upgrade")
    tenant_id = request[TENANT]
    config = request.app[CONFIG]
    now = request.app[CLOCK].now()
    grace = config.server.listen_grace_seconds
    owner = uuid.uuid4()
    policy_name = config.delivery.default_retry_policy
    timeout = min(max(config.delivery.timeout_seconds, 1.0), 30.0)
    resumed = query_str(request, "endpoint_id")
    if resumed is not None:
        endpoint_id, secret, types = await _take_over(request, tenant_id, resumed, owner)
    else:
        types = await _event_types(request, tenant_id)
        forward_to = (query_str(request, "forward_to") or "")[:400]
        endpoint_id, secret = uuid.uuid4(), generate_secret(STANDARD_V1)
        async with request.app[POOL].acquire() as conn, conn.transaction():
            await remove_abandoned(conn, abandoned_before(now, grace))
            await endpoint_store.create_endpoint(conn, tenant_id, endpoint_id, {
                "url": f"listen:{forward_to}", "description": "dispatcher listen (temporary)",
                "event_types": types, "signing_scheme": STANDARD_V1,
                "retry_policy": policy_name, "timeout_seconds": timeout, "max_in_flight": 10,
                "metadata": {"listen": True}, "pause_window_threshold": None,
                "pause_total_threshold": None}, now)
            await set_endpoint_secret(conn, request.app[SECRET_BOX], endpoint_id, secret,
                                      tenant_id=tenant_id)
            await mark_listener(conn, endpoint_id, owner, now)
    log.info("listen.connected", endpoint_id=str(endpoint_id))
    session = ListenSession(request.app[POOL], request.app[CLOCK], config.delivery, ws,
                            endpoint_id, owner, secret, request.app[POLICIES][policy_name],
                            timeout)
    said_bye = False
    sender: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        await ws.send_json({"type": "ready", "endpoint_id": str(endpoint_id),
                            "signing_scheme": STANDARD_V1, "secret": secret,
                            "event_types": types, "grace_seconds": grace,
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
        await asyncio.shield(_close(session, ws, said_bye, grace))
    return ws


async def _close(session: ListenSession, ws: web.WebSocketResponse, said_bye: bool,
                 grace: float) -> None:
    with contextlib.suppress(Exception):
        await ws.close()
    await session.give_back()
    if session.taken_over:
        return
    if not said_bye:
        log.info("listen.dropped", endpoint_id=str(session.endpoint_id), grace_seconds=grace)
        await asyncio.sleep(grace)
    async with session.pool.acquire() as conn:
        await remove_listener(conn, session.endpoint_id, session.owner)
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
          ok=101, params=(EVENTS, FORWARD_TO, RESUME), errors=(400, 404),
          description="Creates a temporary endpoint delivering over this connection; see "
                      "the README's `dispatcher listen` for the messages."),
]
