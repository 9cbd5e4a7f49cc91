"""Sending one claimed batch: rows that cannot be sent now go back at once (held,
deferred, parked, passed on, or failed past their deadline); the rest are sent
within their endpoint's slots and the process's fair share, and each result becomes
an outcome for the writer, with its retry decision."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from dispatcher import metrics, telemetry
from dispatcher.clock import Clock
from dispatcher.config import Config
from dispatcher.engine.claims import LeasedRows
from dispatcher.engine.deadlines import DeadlineHook, fail_overdue, past_deadline
from dispatcher.engine.endpoints import EndpointCache, EndpointRefresh, EndpointTarget
from dispatcher.engine.fair import FairSlots
from dispatcher.engine.outcome import RETRY_AFTER_STATUSES, classify_answer, is_rate_limited
from dispatcher.engine.pressure import EndpointPressure
from dispatcher.engine.sender import send
from dispatcher.engine.writer import OutcomeWriter
from dispatcher.model import DeliveryStatus, FailureReason
from dispatcher.retry import decide, decide_rate_limited, parse_retry_after
from dispatcher.store import deliveries as queue
from dispatcher.store.deliveries import ClaimedDelivery, Outcome
from dispatcher.transport import Exchange, Transport

log = structlog.get_logger(__name__)

DEFER_SECONDS = 1.0  # rows given back for a saturated endpoint are due again after this
UNUSABLE_DEFER_SECONDS = 60.0  # rows of an endpoint that cannot be signed for

# Label lookups cost more than the increment; bind each child once.
_ATTEMPT_COUNTERS = {reason: metrics.ATTEMPTS.labels(reason.value if reason else "success")
                     for reason in (None, *FailureReason)}

_FINISHED_COUNTERS = {s: metrics.DELIVERIES_FINISHED.labels(s.label)
                      for s in (DeliveryStatus.SUCCESS, DeliveryStatus.FAILED)}


class BatchRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        lease_pool: asyncpg.Pool,
        owner: UUID,
        transport: Transport,
        config: Config,
        clock: Clock,
        cache: EndpointCache,
        endpoints: EndpointRefresh,
        pressure: EndpointPressure,
        writer: OutcomeWriter,
        leased: LeasedRows,
    ) -> None:
        self._pool = pool
        self._lease_pool = lease_pool
        self._owner = owner
        self._transport = transport
        self._cfg = config.delivery
        self._clock = clock
        self._cache = cache
        self._endpoints = endpoints
        self._pressure = pressure
        self._writer = writer
        self._leased = leased
        self._success = frozenset(config.delivery.success_statuses)
        self._hold_limit = config.health.hold_limit_seconds
        # The process's concurrency, handed to waiting tenants in turn.
        self._global = FairSlots(config.delivery.max_concurrency)
        self.deadline_hook: DeadlineHook | None = None
        self.stopping = False  # no request starts any more: stop() gives the lease back

    async def run(self, rows: list[ClaimedDelivery]) -> None:
        now = self._clock.now()
        to_hold: list[int] = []
        to_defer: list[int] = []
        to_park: list[int] = []
        to_pass: list[int] = []
        overdue: list[int] = []
        sends: list[Awaitable[None]] = []
        allowance: dict[UUID, int] = {}
        for row in rows:
            if past_deadline(row, now):
                overdue.append(row.id)
                continue
            target = self._cache.get(row.endpoint_id)
            if target is None or not target.active:
                to_hold.append(row.id)
                continue
            if not target.usable:
                to_park.append(row.id)
                continue
            if target.listener:  # its listener's process sends it: due again at once
                to_pass.append(row.id)
                continue
            room = allowance.get(row.endpoint_id)
            if room is None:
                room = allowance[row.endpoint_id] = self._pressure.allowance(row.endpoint_id)
            if self._pressure.load(row.endpoint_id) >= room:
                to_defer.append(row.id)
            else:
                self._pressure.enter(row.endpoint_id)
                sends.append(self._deliver(row, target))
        if overdue:
            await self._fail_overdue(overdue)
        if to_hold or to_defer or to_park or to_pass:
            await self._give_back(to_hold, to_defer, to_park, now, to_pass)
        await asyncio.gather(*sends)

    async def _fail_overdue(self, ids: list[int]) -> None:
        await fail_overdue(self._pool, self.deadline_hook, self._owner, self._clock.now(), ids)
        for delivery_id in ids:
            self._leased.finish(delivery_id)

    async def _give_back(
        self, to_hold: list[int], to_defer: list[int], to_park: list[int], now: datetime,
        to_pass: Sequence[int] = (),
    ) -> None:
        """Return rows unsent: held (endpoint not active), deferred a moment (endpoint
        saturated here), parked a minute (endpoint unusable) or passed on at once
        (a listener's endpoint, which the next claims skip)."""
        async with self._lease_pool.acquire() as conn:
            await queue.hold(conn, to_hold, self._owner, now)
            await queue.release(conn, to_pass, self._owner, now)
            await queue.release(conn, to_defer, self._owner,
                                now + timedelta(seconds=DEFER_SECONDS * (1 + random.random())))
            await queue.release(conn, to_park, self._owner,
                                now + timedelta(seconds=UNUSABLE_DEFER_SECONDS))
        for delivery_id in (*to_hold, *to_defer, *to_park, *to_pass):
            self._leased.finish(delivery_id)

    async def _deliver(self, row: ClaimedDelivery, target: EndpointTarget) -> None:
        try:
            async with self._pressure.slots(target), self._global.slot(target.tenant_id):
                if self.stopping:
                    return  # not sent: stop() gives the lease back
                current = await self._endpoints.current(row.endpoint_id)
                if current is None:  # deleted: its deliveries went with it
                    self._leased.finish(row.id)
                    return
                if past_deadline(row, self._clock.now()):  # passed while it waited
                    await self._fail_overdue([row.id])
                    return
                if not (current.active and current.usable):
                    self._writer.hold(row.id)  # held, or due again if resumed
                    return
                until = self._pressure.backoff_until(current, self._clock.now())
                if until is not None:  # no attempt: due again when the backoff ends
                    self._writer.release_at(row.id, until)
                    return
                tracing = telemetry.active()
                span = None if tracing is None else tracing.start_attempt(
                    row.trace_context, attempt=row.attempts + 1, event_id=str(row.event_id),
                    endpoint_id=str(row.endpoint_id), delivery_id=row.id,
                    tenant_id=str(current.tenant_id), created_at=row.created_at,
                    now=self._clock.now(), propagate=current.propagate_trace,
                    kind="callback" if current.callback else "webhook")
                result = await send(self._transport, current, row, self._clock,
                                    self._success, self._cfg.response_body_limit,
                                    None if span is None else span.headers)
            status, retries_left = self._record(row, current, result)
            if tracing is not None and span is not None:
                tracing.end_attempt(span, status=status.label,
                                    failure=result.failure.value if result.failure else None,
                                    response_status=result.status,
                                    duration_ms=result.duration_ms, retries_left=retries_left)
        finally:
            self._pressure.leave(row.endpoint_id)

    def _record(self, row: ClaimedDelivery, target: EndpointTarget,
                result: Exchange) -> tuple[DeliveryStatus, int]:
        """Queue the outcome for the writer; the delivery's status and retries after it."""
        seconds = result.duration_ms / 1000
        self._pressure.observe(target.id, seconds)
        callback_decision = classify_answer(result) if target.callback else None
        retry_after = header = None
        if result.status in RETRY_AFTER_STATUSES:
            header = _header(result.response_headers, "Retry-After")
            if header:
                retry_after = parse_retry_after(header, result.finished_at)
        rate_limited = result.failed and is_rate_limited(result.status, header)
        if rate_limited:
            until = self._pressure.rate_limited(target, result.finished_at, retry_after)
        if rate_limited and row.rate_limited_attempts >= self._cfg.max_rate_limited_attempts:
            # The receiver has said "slow down" too often for this one delivery: the
            # answer now counts as what it is, a failed HTTP status (a retry spent,
            # counted toward the endpoint's pause thresholds).
            rate_limited = False
            result.error_detail = (
                f"rate-limited {row.rate_limited_attempts} times, the most "
                "delivery.max_rate_limited_attempts allows: counted as a failure")
            decision = decide(target.policy, row.retries_left, True, result.finished_at,
                              retry_after, self._cfg.retry_after_cap_seconds, random.random())
        elif rate_limited:
            result.failure = FailureReason.RATE_LIMITED
            decision = decide_rate_limited(row.retries_left, row.created_at,
                                           result.finished_at, until, self._hold_limit)
        else:
            decision = decide(target.policy, row.retries_left, result.failed,
                              result.finished_at, retry_after,
                              self._cfg.retry_after_cap_seconds, random.random())
        if self._cfg.adaptive_concurrency:
            self._pressure.adapt(target, result)
        self._writer.add(Outcome(
            delivery_id=row.id,
            endpoint_id=row.endpoint_id,
            attempt_number=row.attempts + 1,
            status=decision.status,
            retries_left=decision.retries_left,
            next_attempt_at=decision.next_attempt_at,
            started_at=result.started_at,
            duration_ms=result.duration_ms,
            request_headers=result.request_headers_json(),
            response_status=result.status,
            response_headers=result.response_headers_json(),
            response_body=result.response_body,
            failure_reason=result.failure.value if result.failure else None,
            error_detail=result.error_detail,
            ordering_key=row.ordering_key,
            callback=target.callback,
            rate_limited=rate_limited,
            decision=callback_decision,
        ))
        _ATTEMPT_COUNTERS[result.failure].inc()
        metrics.ATTEMPT_SECONDS.observe(seconds)
        metrics.observe_attempt(target.tenant_id, row.endpoint_id, seconds,
                                result.failure is not None)
        if decision.status >= DeliveryStatus.SUCCESS:
            _FINISHED_COUNTERS[decision.status].inc()
        if result.failure:
            log.info("delivery.failed", event_id=str(row.event_id),
                     endpoint_id=str(row.endpoint_id), attempt=row.attempts + 1,
                     reason=result.failure.value, status=result.status,
                     next_status=decision.status.label)
        return decision.status, decision.retries_left


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
