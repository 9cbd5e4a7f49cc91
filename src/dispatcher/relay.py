"""Delivers a `dispatcher listen` endpoint's events over the listener's websocket:
claim its due deliveries (the engine's claims skip them), sign and send each down
the connection, and record the listener's answer as the attempt with the engine's
outcome rules and writer, so it is retried on the endpoint's normal schedule. The
websocket itself is set up by dispatcher.api.listen."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web

from dispatcher import telemetry
from dispatcher.clock import Clock
from dispatcher.config import DeliveryConfig
from dispatcher.model import FailureReason
from dispatcher.retry import RetryPolicy, decide
from dispatcher.signing import STANDARD_V1, make_signer
from dispatcher.store.deliveries import ClaimedDelivery, Outcome, record_outcomes, release
from dispatcher.store.listeners import claim_listener_due, remove_abandoned, still_listening
from dispatcher.store.pool import Conn
from dispatcher.telemetry import Attempt
from dispatcher.transport.classify import failure_for_status

log = structlog.get_logger(__name__)

CLAIM_LIMIT = 20
REFRESH_SECONDS = 5.0  # how often the holder marks its endpoint as still listened to


def abandoned_before(now: datetime, grace_seconds: float) -> datetime:
    """A temporary endpoint not refreshed since then has lost its holder (its process
    died with the connection): it is removed like a dropped one."""
    return now - timedelta(seconds=grace_seconds + REFRESH_SECONDS * 2)


def abandoned_listeners_job(grace_seconds: float) -> Callable[[Conn, datetime],
                                                              Awaitable[int]]:
    """The maintenance job removing abandoned temporary endpoints."""

    async def job(conn: Conn, now: datetime) -> int:
        return await remove_abandoned(conn, abandoned_before(now, grace_seconds))

    return job
MAX_HEADERS = 100  # a listener's reported response, bounded like a receiver's answer
MAX_HEADER_CHARS = 8190  # aiohttp's limit on one header line
MAX_DURATION_MS = 86_400_000.0


@dataclass(frozen=True)
class ListenerAnswer:
    status: int | None
    headers: dict[str, str] | None
    body: str | None
    duration_ms: float
    reason: FailureReason | None
    error: str | None


def _text(value: str, limit: int) -> str:
    """Stored text: PostgreSQL's text and jsonb take no NUL."""
    return value[:limit].replace("\x00", "\ufffd")


def listener_answer(message: dict[str, Any], config: DeliveryConfig) -> ListenerAnswer:
    """A listener's `result` frame as an attempt, checked like a receiver's answer: the
    listener runs on a developer's machine and may send anything. A status outside
    100-599 is a protocol error (as an answer that is not HTTP), headers are bounded
    and NUL-free, the duration finite."""
    status = message.get("status")
    reason: FailureReason | None
    error = message.get("error")
    error = _text(error, 500) if isinstance(error, str) and error else None
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        reason = failure_for_status(status, config.success_statuses)
    elif status is not None:
        status, reason = None, FailureReason.PROTOCOL_ERROR
        error = "the listener reported a status outside 100-599"
    else:
        try:
            reason = FailureReason(str(message.get("failure_reason")))
        except ValueError:
            reason = FailureReason.CONNECT_ERROR
    raw_headers = message.get("headers")
    headers = None
    if isinstance(raw_headers, dict):
        headers = {_text(str(k), MAX_HEADER_CHARS): _text(str(v), MAX_HEADER_CHARS)
                   for k, v in list(raw_headers.items())[:MAX_HEADERS]}
    body = message.get("body")
    duration = message.get("duration_ms")
    if not isinstance(duration, int | float) or isinstance(duration, bool) \
            or not 0 <= duration <= MAX_DURATION_MS:  # also NaN, which json.loads takes
        duration = 0.0
    return ListenerAnswer(
        status, headers,
        _text(body, config.response_body_limit) if isinstance(body, str) else None,
        float(duration), reason, error)


ANSWER_MARGIN_SECONDS = 5.0  # beyond the endpoint's timeout, for the listener's round trip


@dataclass
class _Sent:
    row: ClaimedDelivery
    started_at: datetime
    headers: dict[str, str]
    deadline: datetime
    span: Attempt | None = None  # with tracing on


class ListenSession:
    """One listener connection and its temporary endpoint."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, config: DeliveryConfig,
                 ws: web.WebSocketResponse, endpoint_id: UUID, owner: UUID, secret: str,
                 policy: RetryPolicy, timeout: float) -> None:
        self.pool = pool
        self.clock = clock
        self.config = config
        self.ws = ws
        self.endpoint_id = endpoint_id
        self.owner = owner
        self.signer = make_signer(STANDARD_V1, [secret])
        self.policy = policy
        self.timeout = timeout
        self.sent: dict[int, _Sent] = {}
        self.taken_over = False

    def now(self) -> datetime:
        return self.clock.now()

    async def send_due(self) -> None:
        """Claim and send what is due; time out answers that never came. If that
        fails (the database went away), the connection is closed: the listener says
        so and the endpoint goes as for a dropped connection."""
        try:
            await self._send_due()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
            log.warning("listen.relay_failed", endpoint_id=str(self.endpoint_id), error=str(exc))
            await self.ws.close()

    async def _send_due(self) -> None:
        poll = min(self.config.poll_interval_seconds, 0.5)
        refreshed = self.now()
        while not self.ws.closed:
            now = self.now()
            lease = now + timedelta(seconds=self.timeout + ANSWER_MARGIN_SECONDS * 2)
            async with self.pool.acquire() as conn:
                if (now - refreshed).total_seconds() >= REFRESH_SECONDS:
                    refreshed = now
                    if not await still_listening(conn, self.endpoint_id, self.owner, now):
                        self.taken_over = True
                        await self.ws.close()
                        return
                rows = await claim_listener_due(conn, self.endpoint_id, self.owner, now,
                                                lease, CLAIM_LIMIT)
                traces = {} if telemetry.active() is None or not rows else {
                    r["id"]: r["trace_context"] for r in await conn.fetch(
                        "SELECT id, trace_context FROM events WHERE id = ANY($1::uuid[])",
                        list({row.event_id for row in rows}))}
            for row in rows:
                await self._send(row, traces.get(row.event_id))
            late = [s for s in self.sent.values() if s.deadline <= now]
            for s in late:
                await self.record(s.row.id, None, None, None, self.timeout * 1000,
                                  FailureReason.TIMEOUT, "the listener did not answer in time")
            await asyncio.sleep(poll)

    async def _send(self, row: ClaimedDelivery, trace_context: str | None = None) -> None:
        started = self.now()
        headers = {"Content-Type": "application/json",
                   **self.signer.sign(str(row.event_id), started, row.body)}
        tracing, span = telemetry.active(), None
        if tracing is not None:
            span = tracing.start_attempt(
                trace_context, attempt=row.attempts + 1, event_id=str(row.event_id),
                endpoint_id=str(self.endpoint_id), delivery_id=row.id, tenant_id="",
                created_at=row.created_at, now=started, propagate=True, kind="listen")
            headers.update(span.headers)
        body = row.body.decode()
        try:
            event_type = json.loads(body).get("type")
        except (ValueError, AttributeError):
            event_type = None
        self.sent[row.id] = _Sent(row, started, headers, started + timedelta(
            seconds=self.timeout + ANSWER_MARGIN_SECONDS), span)
        await self.ws.send_json({"type": "delivery", "delivery_id": row.id,
                                 "event_id": str(row.event_id), "event_type": event_type,
                                 "attempt": row.attempts + 1, "headers": headers,
                                 "body": body})

    async def on_result(self, message: dict[str, Any]) -> None:
        delivery_id = message.get("delivery_id")
        if not isinstance(delivery_id, int) or delivery_id not in self.sent:
            return
        answer = listener_answer(message, self.config)
        await self.record(delivery_id, answer.status, answer.headers, answer.body,
                          answer.duration_ms, answer.reason, answer.error)

    async def record(self, delivery_id: int, status: int | None,
                     headers: dict[str, str] | None, body: str | None, duration_ms: float,
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
            response_headers=None if headers is None else json.dumps(headers),
            response_body=body, failure_reason=reason.value if reason else None,
            error_detail=error)
        async with self.pool.acquire() as conn:
            await record_outcomes(conn, [outcome], self.owner, finished)
        tracing = telemetry.active()
        if tracing is not None and sent.span is not None:
            tracing.end_attempt(sent.span, status=decision.status.label,
                                failure=reason.value if reason else None,
                                response_status=status, duration_ms=duration_ms,
                                retries_left=decision.retries_left)

    async def give_back(self) -> None:
        """Deliveries sent but unanswered go back to the queue unattempted."""
        if self.sent:
            async with self.pool.acquire() as conn:
                await release(conn, list(self.sent), self.owner, self.now())
            self.sent.clear()
