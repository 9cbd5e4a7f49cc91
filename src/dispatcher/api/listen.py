"""`GET /v1/listen` (websocket): the daemon's side of `dispatcher listen`. A
connection creates a temporary endpoint of the tenant that delivers over it: this
process claims the endpoint's due deliveries (the engine skips them), signs each
and sends it down the connection; the listener forwards it to the local receiver
and answers with the receiver's response, recorded as the attempt and retried on
the endpoint's normal schedule. When the listener says goodbye the endpoint goes
at once with its pending deliveries; when the connection drops, after
`server.listen_grace_seconds`.

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from aiohttp import WSMsgType, web

from dispatcher.api.context import CATALOGUE, CLOCK, CONFIG, POLICIES, POOL, SECRET_BOX, TENANT
from dispatcher.api.request import query_list, query_str
from dispatcher.api.spec import Param, Route
from dispatcher.catalogue import valid_name
from dispatcher.engine.outcome import decide, failure_for_status
from dispatcher.errors import BadRequest, ValidationError
from dispatcher.model import FailureReason
from dispatcher.retry import RetryPolicy
from dispatcher.signing import STANDARD_V1, generate_secret, make_signer
from dispatcher.store import endpoints as endpoint_store
from dispatcher.store.deliveries import ClaimedDelivery, Outcome, record_outcomes, release
from dispatcher.store.event_types import known_tenant_types
from dispatcher.store.listeners import (
    claim_listener_due,
    mark_listener,
    remove_abandoned,
    remove_listener,
    still_listening,
)
from dispatcher.store.secrets import set_endpoint_secret

log = structlog.get_logger(__name__)

CLAIM_LIMIT = 20
REFRESH_SECONDS = 5.0  # how often the holder marks its endpoint as still listened to
ANSWER_MARGIN_SECONDS = 5.0  # beyond the endpoint's timeout, for the listener's round trip


@dataclass
class _Sent:
    row: ClaimedDelivery
    started_at: datetime
    headers: dict[str, str]
    deadline: datetime


class ListenSession:
    """One listener connection and its temporary endpoint."""

    def __init__(self, app: web.Application, ws: web.WebSocketResponse, endpoint_id: UUID,
                 owner: UUID, secret: str, policy: RetryPolicy, timeout: float) -> None:
        self.app = app
        self.ws = ws
        self.endpoint_id = endpoint_id
        self.owner = owner
        self.signer = make_signer(STANDARD_V1, [secret])
        self.policy = policy
        self.timeout = timeout
        self.sent: dict[int, _Sent] = {}
        self.taken_over = False

    def now(self) -> datetime:
        return self.app[CLOCK].now()

    async def send_due(self) -> None:
        """Claim and send what is due; time out answers that never came."""
        config = self.app[CONFIG].delivery
        poll = min(config.poll_interval_seconds, 0.5)
        refreshed = self.now()
        while not self.ws.closed:
            now = self.now()
            lease = now + timedelta(seconds=self.timeout + ANSWER_MARGIN_SECONDS * 2)
            async with self.app[POOL].acquire() as conn:
                if (now - refreshed).total_seconds() >= REFRESH_SECONDS:
                    refreshed = now
                    if not await still_listening(conn, self.endpoint_id, self.owner, now):
                        self.taken_over = True
                        await self.ws.close()
                        return
                rows = await claim_listener_due(conn, self.endpoint_id, self.owner, now,
                                                lease, CLAIM_LIMIT)
            for row in rows:
                await self._send(row)
            late = [s for s in self.sent.values() if s.deadline <= now]
            for s in late:
                await self.record(s.row.id, None, None, None, self.timeout * 1000,
                                  FailureReason.TIMEOUT, "the listener did not answer in time")
            await asyncio.sleep(poll)

    async def _send(self, row: ClaimedDelivery) -> None:
        started = self.now()
        headers = {"Content-Type": "application/json",
                   **self.signer.sign(str(row.event_id), started, row.body)}
        body = row.body.decode()
        try:
            event_type = json.loads(body).get("type")
        except (ValueError, AttributeError):
            event_type = None
        self.sent[row.id] = _Sent(row, started, headers, started + timedelta(
            seconds=self.timeout + ANSWER_MARGIN_SECONDS))
        await self.ws.send_json({"type": "delivery", "delivery_id": row.id,
                                 "event_id": str(row.event_id), "event_type": event_type,
                                 "attempt": row.attempts + 1, "headers": headers,
                                 "body": body})

    async def on_result(self, message: dict[str, Any]) -> None:
        delivery_id = message.get("delivery_id")
        if not isinstance(delivery_id, int) or delivery_id not in self.sent:
            return
        status = message.get("status")
        status = status if isinstance(status, int) else None
        reason: FailureReason | None
        if status is not None:
            reason = failure_for_status(status, self.app[CONFIG].delivery.success_statuses)
        else:
            try:
                reason = FailureReason(str(message.get("failure_reason")))
            except ValueError:
                reason = FailureReason.CONNECT_ERROR
        headers = message.get("headers")
        body = message.get("body")
        duration = message.get("duration_ms")
        await self.record(
            delivery_id, status, headers if isinstance(headers, dict) else None,
            body[:self.app[CONFIG].delivery.response_body_limit].replace("\x00", "\ufffd")
            if isinstance(body, str) else None,
            float(duration) if isinstance(duration, int | float) else 0.0, reason,
            str(message.get("error"))[:500] if message.get("error") else None)

    async def record(self, delivery_id: int, status: int | None,
                     headers: dict[str, Any] | None, body: str | None, duration_ms: float,
                     reason: FailureReason | None, error: str | None) -> None:
        """The attempt and the delivery's next state, through the engine's own writer."""
        sent = self.sent.pop(delivery_id)
        finished = self.now()
        decision = decide(self.policy, sent.row.retries_left, reason is not None, finished)
        outcome = Outcome(
            delivery_id=delivery_id, endpoint_id=self.endpoint_id,
            attempt_number=sent.row.attempts + 1, status=decision.status,
            retries_left=decision.retries_left, next_attempt_at=decision.next_attempt_at,
            started_at=sent.started_at, duration_ms=duration_ms,
            request_headers=json.dumps(sent.headers), response_status=status,
            response_headers=None if headers is None else json.dumps(
                {str(k): str(v) for k, v in headers.items()}),
            response_body=body, failure_reason=reason.value if reason else None,
            error_detail=error)
        async with self.app[POOL].acquire() as conn:
            await record_outcomes(conn, [outcome], self.owner, finished)

    async def give_back(self) -> None:
        """Deliveries sent but unanswered go back to the queue unattempted."""
        if self.sent:
            async with self.app[POOL].acquire() as conn:
                await release(conn, list(self.sent), self.owner, self.now())
            self.sent.clear()


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


async def listen(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=10.0)
    if not ws.can_prepare(request).ok:
        raise BadRequest("expected a websocket connection (GET with Upgrade: websocket)",
                         field="Upgrade")
    tenant_id = request[TENANT]
    config = request.app[CONFIG]
    types = await _event_types(request, tenant_id)
    forward_to = (query_str(request, "forward_to") or "")[:400]
    now = request.app[CLOCK].now()
    grace = config.server.listen_grace_seconds
    endpoint_id, owner = uuid.uuid4(), uuid.uuid4()
    secret = generate_secret(STANDARD_V1)
    policy_name = config.delivery.default_retry_policy
    timeout = min(max(config.delivery.timeout_seconds, 1.0), 30.0)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await remove_abandoned(conn, now - timedelta(seconds=grace + REFRESH_SECONDS * 2))
        await endpoint_store.create_endpoint(conn, tenant_id, endpoint_id, {
            "url": f"listen:{forward_to}", "description": "dispatcher listen (temporary)",
            "event_types": types, "signing_scheme": STANDARD_V1, "retry_policy": policy_name,
            "timeout_seconds": timeout, "max_in_flight": 10, "metadata": {"listen": True},
            "pause_window_threshold": None, "pause_total_threshold": None}, now)
        await set_endpoint_secret(conn, request.app[SECRET_BOX], endpoint_id, secret,
                                  tenant_id=tenant_id)
        await mark_listener(conn, endpoint_id, owner, now)
    log.info("listen.connected", endpoint_id=str(endpoint_id))
    session = ListenSession(request.app, ws, endpoint_id, owner, secret,
                            request.app[POLICIES][policy_name], timeout)
    said_bye = False
    sender: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        await ws.send_json({"type": "ready", "endpoint_id": str(endpoint_id),
                            "signing_scheme": STANDARD_V1, "secret": secret,
                            "event_types": types})
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
    async with session.app[POOL].acquire() as conn:
        await remove_listener(conn, session.endpoint_id, session.owner)
    log.info("listen.closed", endpoint_id=str(session.endpoint_id))


EVENTS = Param("events", {"type": "string"},
               "Event types to receive (comma-separated or repeated; default all).")
FORWARD_TO = Param("forward_to", {"type": "string", "maxLength": 400},
                   "Where the listener forwards (shown as the endpoint's URL).")

ROUTES = [
    Route("GET", "/v1/listen", listen, "listen",
          "Receive the tenant's events over a websocket (`dispatcher listen`)", "Listen",
          ok=101, params=(EVENTS, FORWARD_TO), errors=(400,),
          description="Creates a temporary endpoint delivering over this connection; see "
                      "the README's `dispatcher listen` for the messages."),
]
