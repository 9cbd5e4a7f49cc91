"""The delivery worker of one process: claims due deliveries in batches, sends them
with bounded concurrency, and writes outcomes in batches.

Endpoint changes (pause, disable, update, delete) arrive by NOTIFY from whichever
process made them: from then on no request to that endpoint starts here until it
has been read again. Rows claimed but not yet sent are then held (paused,
disabled), dropped (deleted: their rows are gone) or sent with the new settings.

A callback claimed at or after its deadline (a retry due just before it, a held one
re-driven after it) is never sent: the deadline hook records it Failed
(`deadline_expired`) instead, as the expiry job would.

Per-endpoint isolation with batch claims: each endpoint may have `max_in_flight`
requests in flight here (never more than half of the process's `max_concurrency`,
so one endpoint that hangs can never hold every slot), and only as many claimed
rows waiting locally as it can send within half a lease at its observed speed. Rows
beyond that are given back at once, due a moment later (no attempt is spent), and
the next claims skip that endpoint while it is saturated. So a dead endpoint holds
a few slots and a short local queue, and never the process's global concurrency or
its claims.

Backpressure: a "slow down" answer (429, or 503 with Retry-After) stops every
request to the endpoint until its backoff ends, here at once and in every other
process through the endpoint row (store/backpressure.py); rows claimed meanwhile
go back unsent, due when it ends. The endpoint's in-flight limit adapts (AIMD): it
halves on congestion and grows back by one per run of successes as long as it is
below max_in_flight.

Fairness across tenants: a tenth of each claim is the newest first attempts, a
worker full of claimed rows still claims what was published since (a few more),
and the process's request slots go to waiting tenants in turn (engine/fair.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from dispatcher import metrics
from dispatcher.clock import Clock
from dispatcher.config import Config
from dispatcher.engine.callbacks import classify_answer
from dispatcher.engine.endpoints import EndpointCache, EndpointTarget
from dispatcher.engine.fair import FairSlots
from dispatcher.engine.outcome import RETRY_AFTER_STATUSES, is_congestion, is_rate_limited
from dispatcher.engine.sender import send
from dispatcher.model import DeliveryStatus, FailureReason
from dispatcher.retry import decide, decide_rate_limited, load_policies, parse_retry_after
from dispatcher.secretbox import SecretBox
from dispatcher.store import callbacks as callback_store
from dispatcher.store import deliveries as queue
from dispatcher.store.backpressure import Pressure, apply_pressure
from dispatcher.store.deliveries import ClaimedDelivery, Outcome
from dispatcher.store.pool import DB_ERRORS, DB_UNAVAILABLE, Conn
from dispatcher.transport import Exchange, Transport
from dispatcher.transport.classify import GONE

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "dispatcher_deliveries"
ENDPOINTS_CHANNEL = "dispatcher_endpoints"  # payload: the id of a changed endpoint
DEFER_SECONDS = 1.0  # rows given back for a saturated endpoint are due again after this
UNUSABLE_DEFER_SECONDS = 60.0  # rows of an endpoint that cannot be signed for
FLUSH_LINGER = 0.005  # gather outcomes this long before writing them in one statement
WRITE_RETRY_SECONDS = 1.0
REFRESH_RETRY_SECONDS = 0.5
NEWEST_SHARE = 10  # 1/10 of each claim is taken newest first
FRESH_RESERVE = 50  # rows claimed beyond the local limit, new events only

# Label lookups cost more than the increment; bind each child once.
_ATTEMPT_COUNTERS = {reason: metrics.ATTEMPTS.labels(reason.value if reason else "success")
                     for reason in (None, *FailureReason)}

_FINISHED_COUNTERS = {s: metrics.DELIVERIES_FINISHED.labels(s.label)
                      for s in (DeliveryStatus.SUCCESS, DeliveryStatus.FAILED)}

# Runs inside the transaction that records a batch; returns the endpoints it changed
# (paused), which this worker stops sending to as soon as the batch commits.
OutcomeHook = Callable[[Conn, Sequence[Outcome], datetime], Awaitable[Collection[UUID]]]
# Runs inside a transaction with the ids of callback deliveries claimed at or after
# their deadline, which are never sent: it records them finished (Failed).
DeadlineHook = Callable[[Conn, Sequence[int], datetime], Awaitable[None]]


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        transport: Transport,
        config: Config,
        clock: Clock,
        box: SecretBox,
        *,
        lease_pool: asyncpg.Pool | None = None,
        owner: UUID | None = None,
    ) -> None:
        self.owner = owner or uuid.uuid4()
        self._pool = pool
        # Claims and releases (lease changes, not data) may use a pool that does not
        # wait for the WAL flush; outcomes always go through `pool`.
        self._lease_pool = lease_pool or pool
        self._dsn = dsn
        self._transport = transport
        self._clock = clock
        self._cfg = config.delivery
        self._policies = load_policies(config)
        self._cache = EndpointCache(box, self._policies, config.delivery.default_retry_policy)
        self._success = frozenset(config.delivery.success_statuses)
        self._hold_limit = config.health.hold_limit_seconds
        # Learned here before the endpoint row says so: backoff ends, and the
        # adaptive limit with the time of its last decrease.
        self._limited_until: dict[UUID, datetime] = {}
        self._local_limit: dict[UUID, tuple[int, datetime]] = {}
        self._pressure: dict[UUID, Pressure] = {}
        self._to_release: list[tuple[int, datetime]] = []  # unsent during a backoff
        self._max_open = config.delivery.claim_batch_size * config.delivery.batches_in_flight
        # The process's concurrency, handed to waiting tenants in turn.
        self._global = FairSlots(config.delivery.max_concurrency)
        self._endpoint_cap = max(1, config.delivery.max_concurrency // 2)
        self._endpoint_slots: dict[UUID, Slots] = {}
        self._endpoint_load: Counter[UUID] = Counter()
        self._endpoint_speed: dict[UUID, float] = {}  # EWMA of attempt seconds
        self._claimed: set[int] = set()  # delivery ids leased here, outcome not written
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._outcomes: list[Outcome] = []
        self._to_hold: list[int] = []  # claimed rows whose endpoint stopped meanwhile
        self._outcomes_ready = asyncio.Event()
        # Monotonic time since which outcomes have been waiting unwritten (None: none).
        self._backlog_since: float | None = None
        self._writing = 0  # outcomes and holds in the write under way
        self._dirty: set[UUID] = set()  # endpoints changed since last read
        self._refreshing: dict[UUID, asyncio.Task[None]] = {}
        self._stopping = False
        self._batches: set[asyncio.Task[None]] = set()
        self._claims = 0
        self._full_since: datetime | None = None  # claimed rows at the local limit since
        self._loops: list[asyncio.Task[None]] = []
        self.outcome_hooks: list[OutcomeHook] = []
        self.deadline_hook: DeadlineHook | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._listen_loop(), name="dispatcher.listen"),
            asyncio.create_task(self._claim_loop(), name="dispatcher.claim"),
            asyncio.create_task(self._write_loop(), name="dispatcher.write"),
        ]
        log.info("engine.started", owner=str(self.owner))

    async def stop(self, grace: float) -> None:
        """Stop claiming; let requests in flight finish within `grace` seconds; give
        back the lease of everything not sent; write every outcome."""
        self._stopping = True
        self._wake.set()
        claim_loop, listen_loop, write_loop = self._loops
        await _cancel(claim_loop)
        await _cancel(listen_loop)
        if self._batches:
            _, late = await asyncio.wait(self._batches, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await _cancel(write_loop)
        try:
            await self._write_pending()
        except DB_ERRORS as exc:
            # The leases run out and these deliveries are sent again: at least once.
            log.error("engine.final_write_failed", error=str(exc), lost=len(self._outcomes))
            return
        unsent = list(self._claimed)
        if unsent:
            async with self._pool.acquire() as conn:
                await queue.release(conn, unsent, self.owner, self._clock.now())
        log.info("engine.stopped", owner=str(self.owner), released=len(unsent))

    def wake(self) -> None:
        self._wake.set()

    # -- claiming ------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            room = self._max_open - len(self._claimed)
            # Full of claimed rows (a backlog): only what was just published may still
            # come in, a few more, so a backlog here never delays someone's new event.
            fresh_only = room <= 0
            if not fresh_only:
                self._full_since = None
            elif self._full_since is None:
                self._full_since = self._clock.now()
            if fresh_only:
                room = self._max_open + FRESH_RESERVE - len(self._claimed)
                if room <= 0:
                    self._progress.clear()
                    await self._progress.wait()
                    continue
            limit = min(self._cfg.claim_batch_size, room)
            try:
                rows = await self._claim(limit, fresh_only)
            except DB_ERRORS as exc:
                log.warning("engine.claim_failed", error=str(exc))
                await asyncio.sleep(self._cfg.poll_interval_seconds)
                continue
            if rows:
                task = asyncio.create_task(self._run_batch(rows))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
            if fresh_only:  # wait for a NOTIFY, room, or the next poll
                self._wake.clear()
                self._progress.clear()
                await self._wait_any(self._wake, self._progress)
            elif len(rows) < limit:  # drained for now: wait for a NOTIFY or the next poll
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._cfg.poll_interval_seconds):
                        await self._wake.wait()

    async def _wait_any(self, *events: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=self._cfg.poll_interval_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _saturated(self) -> list[UUID]:
        """Endpoints the next claim skips: saturated here, sent by a listener, or
        in a rate-limit backoff known here."""
        now = self._clock.now()
        for eid in [e for e, until in self._limited_until.items() if until <= now]:
            del self._limited_until[eid]
        return [eid for eid, load in self._endpoint_load.items()
                if load >= self._queue_allowance(eid)] + self._cache.listener_ids() \
            + list(self._limited_until)

    async def _claim(self, limit: int, fresh_only: bool = False) -> list[ClaimedDelivery]:
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._cfg.lease_seconds)
        # A tenth of each claim from the newest end of the queue (see claim_due);
        # a claim of one row alternates between the ends.
        self._claims += 1
        newest = max(1, limit // NEWEST_SHARE) if limit > 1 else self._claims % 2
        since = None
        if fresh_only:
            newest, since = limit, self._full_since
        async with self._lease_pool.acquire() as conn:
            rows = await queue.claim_due(conn, self.owner, limit, now, lease_until,
                                         self._saturated(), newest, since)
            self._claimed.update(r.id for r in rows)
            stale = self._cache.stale(((r.endpoint_id, r.endpoint_version) for r in rows), now)
            try:
                await self._cache.load(conn, stale, now)
                await self._read_deadlines(conn, rows)
            except BaseException:
                # Unsent: due again now rather than stranded until their lease runs out.
                with contextlib.suppress(*DB_ERRORS):
                    await queue.release(conn, [r.id for r in rows], self.owner, now)
                for r in rows:
                    self._finish_row(r.id)
                raise
        return rows

    async def _read_deadlines(self, conn: Conn, rows: Sequence[ClaimedDelivery]) -> None:
        """The deadlines of the callbacks claimed (one query, only when there are
        some), so that none is sent once its deadline has passed."""
        callbacks = [r for r in rows
                     if (t := self._cache.get(r.endpoint_id)) is not None and t.callback]
        if callbacks:
            deadlines = await callback_store.deadlines(conn, [r.event_id for r in callbacks])
            for r in callbacks:
                r.deadline_at = deadlines.get(r.event_id)

    def _queue_allowance(self, endpoint_id: UUID) -> int:
        """How many rows of one endpoint may wait here: what its slots can send in
        half a lease at its observed speed, and never less than twice its slots."""
        target = self._cache.get(endpoint_id)
        if target is None:
            return 1
        speed = self._endpoint_speed.get(endpoint_id, target.timeout)
        slots = self._slot_count(target)
        per_lease = slots * (self._cfg.lease_seconds / 2) / max(speed, 0.001)
        return max(2 * slots, int(per_lease))

    # -- sending -------------------------------------------------------------------

    async def _run_batch(self, rows: list[ClaimedDelivery]) -> None:
        now = self._clock.now()
        to_hold: list[int] = []
        to_defer: list[int] = []
        to_park: list[int] = []
        to_pass: list[int] = []
        overdue: list[int] = []
        sends: list[Awaitable[None]] = []
        allowance: dict[UUID, int] = {}
        for row in rows:
            if _past_deadline(row, now):
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
                room = allowance[row.endpoint_id] = self._queue_allowance(row.endpoint_id)
            if self._endpoint_load[row.endpoint_id] >= room:
                to_defer.append(row.id)
            else:
                self._endpoint_load[row.endpoint_id] += 1
                sends.append(self._deliver(row, target))
        if overdue:
            await self._fail_overdue(overdue)
        if to_hold or to_defer or to_park or to_pass:
            await self._give_back(to_hold, to_defer, to_park, now, to_pass)
        await asyncio.gather(*sends)

    async def _fail_overdue(self, ids: list[int]) -> None:
        """Callback rows claimed at or after their deadline: never sent (an answer
        could not count), finished Failed by the deadline hook. Without one (no
        callbacks recorded here) they wait, unsent, for the expiry job."""
        now = self._clock.now()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                due = now + timedelta(seconds=UNUSABLE_DEFER_SECONDS)
                if self.deadline_hook is not None:
                    await self.deadline_hook(conn, ids, now)
                    due = now
                await queue.release(conn, ids, self.owner, due)
        except DB_ERRORS as exc:
            # Their leases run out and they come back here: still never sent.
            log.warning("engine.deadline_write_failed", error=str(exc), rows=len(ids))
        for delivery_id in ids:
            self._finish_row(delivery_id)

    async def _give_back(
        self, to_hold: list[int], to_defer: list[int], to_park: list[int], now: datetime,
        to_pass: Sequence[int] = (),
    ) -> None:
        """Return rows unsent: held (endpoint not active), deferred a moment (endpoint
        saturated here), parked a minute (endpoint unusable) or passed on at once
        (a listener's endpoint, which the next claims skip)."""
        async with self._lease_pool.acquire() as conn:
            await queue.hold(conn, to_hold, self.owner, now)
            await queue.release(conn, to_pass, self.owner, now)
            await queue.release(conn, to_defer, self.owner,
                                now + timedelta(seconds=DEFER_SECONDS * (1 + random.random())))
            await queue.release(conn, to_park, self.owner,
                                now + timedelta(seconds=UNUSABLE_DEFER_SECONDS))
        for delivery_id in (*to_hold, *to_defer, *to_park, *to_pass):
            self._finish_row(delivery_id)

    def _slot_count(self, target: EndpointTarget) -> int:
        return min(self._limit(target), self._endpoint_cap)

    def _limit(self, target: EndpointTarget) -> int:
        """The endpoint's in-flight limit now: the shared adaptive one, or lower
        while a decrease seen here is not yet on the endpoint row."""
        limit = target.effective_max_in_flight or target.max_in_flight
        local = self._local_limit.get(target.id)
        return min(limit, local[0]) if local is not None else limit

    def _backoff_until(self, target: EndpointTarget, now: datetime) -> datetime | None:
        until = self._limited_until.get(target.id)
        shared = target.rate_limited_until
        if shared is not None and (until is None or shared > until):
            until = shared
        return until if until is not None and until > now else None

    def _slots(self, target: EndpointTarget) -> Slots:
        """The endpoint's slots, resized (for rows already waiting too) when its
        max_in_flight changed."""
        slots = self._endpoint_slots.get(target.id)
        if slots is None:
            slots = self._endpoint_slots[target.id] = Slots(self._slot_count(target))
        else:
            slots.resize(self._slot_count(target))
        return slots

    async def _deliver(self, row: ClaimedDelivery, target: EndpointTarget) -> None:
        try:
            async with self._slots(target), self._global.slot(target.tenant_id):
                if self._stopping:
                    return  # not sent: stop() gives the lease back
                current = await self._current(row.endpoint_id)
                if current is None:  # deleted: its deliveries went with it
                    self._finish_row(row.id)
                    return
                if _past_deadline(row, self._clock.now()):  # passed while it waited
                    await self._fail_overdue([row.id])
                    return
                if not (current.active and current.usable):
                    self._to_hold.append(row.id)  # held, or due again if resumed
                    self._outcomes_ready.set()
                    return
                until = self._backoff_until(current, self._clock.now())
                if until is not None:  # no attempt: due again when the backoff ends
                    self._to_release.append((row.id, until))
                    self._outcomes_ready.set()
                    return
                result = await send(self._transport, current, row, self._clock,
                                    self._success, self._cfg.response_body_limit)
            self._record(row, current, result)
        finally:
            self._endpoint_load[row.endpoint_id] -= 1
            if self._endpoint_load[row.endpoint_id] <= 0:
                del self._endpoint_load[row.endpoint_id]

    async def _current(self, endpoint_id: UUID) -> EndpointTarget | None:
        """The endpoint as it is now: waits while a change notified is being read."""
        refresh = self._refreshing.get(endpoint_id)
        if refresh is not None:
            await asyncio.shield(refresh)
        return self._cache.get(endpoint_id)

    def endpoint_changed(self, endpoint_id: UUID) -> None:
        """An endpoint was changed or deleted: start no request to it until it has
        been read again. Synchronous, so it takes effect before any other task runs."""
        if endpoint_id not in self._cache:
            return
        self._dirty.add(endpoint_id)
        if endpoint_id not in self._refreshing:
            self._refreshing[endpoint_id] = asyncio.create_task(self._refresh(endpoint_id))

    async def _refresh(self, endpoint_id: UUID) -> None:
        try:
            while endpoint_id in self._dirty:  # changed again while being read: again
                self._dirty.discard(endpoint_id)
                try:
                    async with self._pool.acquire() as conn:
                        await self._cache.load(conn, [endpoint_id], self._clock.now())
                    target = self._cache.get(endpoint_id)
                    self._local_limit.pop(endpoint_id, None)  # the row knows better now
                    if target is not None and endpoint_id in self._endpoint_slots:
                        self._slots(target)  # a new max_in_flight applies to queued rows
                except DB_ERRORS as exc:
                    log.warning("engine.endpoint_refresh_failed",
                                endpoint_id=str(endpoint_id), error=str(exc))
                    self._dirty.add(endpoint_id)
                    await asyncio.sleep(REFRESH_RETRY_SECONDS)
        finally:
            del self._refreshing[endpoint_id]

    def _record(self, row: ClaimedDelivery, target: EndpointTarget, result: Exchange) -> None:
        seconds = result.duration_ms / 1000
        previous = self._endpoint_speed.get(target.id, seconds)
        self._endpoint_speed[target.id] = 0.8 * previous + 0.2 * seconds
        callback_decision = classify_answer(result) if target.callback else None
        retry_after = header = None
        if result.status in RETRY_AFTER_STATUSES:
            header = _header(result.response_headers, "Retry-After")
            if header:
                retry_after = parse_retry_after(header, result.finished_at)
        if result.failed and is_rate_limited(result.status, header):
            result.failure = FailureReason.RATE_LIMITED
            until = self._rate_limited(target, result.finished_at, retry_after)
            decision = decide_rate_limited(row.retries_left, row.created_at,
                                           result.finished_at, until, self._hold_limit)
        else:
            decision = decide(target.policy, row.retries_left, result.failed,
                              result.finished_at, retry_after,
                              self._cfg.retry_after_cap_seconds, random.random())
        if self._cfg.adaptive_concurrency:
            self._adapt(target, result)
        self._outcomes.append(Outcome(
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
            decision=callback_decision,
        ))
        self._outcomes_ready.set()
        _ATTEMPT_COUNTERS[result.failure].inc()
        metrics.ATTEMPT_SECONDS.observe(seconds)
        if decision.status >= DeliveryStatus.SUCCESS:
            _FINISHED_COUNTERS[decision.status].inc()
        if result.failure:
            log.info("delivery.failed", event_id=str(row.event_id),
                     endpoint_id=str(row.endpoint_id), attempt=row.attempts + 1,
                     reason=result.failure.value, status=result.status,
                     next_status=decision.status.label)

    def _rate_limited(
        self, target: EndpointTarget, finished_at: datetime, retry_after: float | None
    ) -> datetime:
        """Stop sending to the endpoint here at once, and have the endpoint row say
        so for everyone; returns when the backoff ends (as far as known here)."""
        pressure = self._pressure.setdefault(target.id, Pressure())
        if retry_after is not None:
            seconds = min(retry_after, self._cfg.retry_after_cap_seconds)
            until = finished_at + timedelta(seconds=seconds)
            pressure.merge(Pressure(retry_after_until=until))
        else:
            until = finished_at + timedelta(seconds=self._cfg.rate_limit_backoff_seconds)
            pressure.merge(Pressure(limited_at=finished_at))
        known = self._backoff_until(target, finished_at)
        if known is None or until > known:
            self._limited_until[target.id] = until
            return until
        return known

    def _adapt(self, target: EndpointTarget, result: Exchange) -> None:
        """AIMD: halve the limit here at once on congestion (once per burst: only an
        attempt started after the last decrease counts); count successes while the
        limit is below max_in_flight. The endpoint row keeps the shared value."""
        if is_congestion(result.status, result.failure):
            local = self._local_limit.get(target.id)
            last = local[1] if local is not None else target.concurrency_changed_at
            if last is None or result.started_at >= last:
                limit = max(1, self._limit(target) // 2)
                self._local_limit[target.id] = (limit, result.finished_at)
                metrics.CONCURRENCY_DECREASES.inc()
                slots = self._endpoint_slots.get(target.id)
                if slots is not None:
                    slots.resize(self._slot_count(target))
            self._pressure.setdefault(target.id, Pressure()).merge(
                Pressure(congested_started=result.started_at))
        elif not result.failed and self._limit(target) < target.max_in_flight:
            self._pressure.setdefault(target.id, Pressure()).successes += 1

    def _finish_row(self, delivery_id: int) -> None:
        if delivery_id in self._claimed:
            self._claimed.discard(delivery_id)
            self._progress.set()

    # -- writing outcomes ------------------------------------------------------------

    def writer_backlog(self) -> tuple[int, float]:
        """Outcomes waiting to be written, and for how many seconds the writer has
        had some waiting without managing to write them."""
        if self._backlog_since is None:
            return 0, 0.0
        waiting = len(self._outcomes) + len(self._to_hold) + self._writing
        return waiting, time.monotonic() - self._backlog_since

    async def _write_loop(self) -> None:
        while True:
            await self._outcomes_ready.wait()
            if self._backlog_since is None:
                self._backlog_since = time.monotonic()
            await asyncio.sleep(FLUSH_LINGER)
            try:
                await self._write_pending()
            except DB_ERRORS as exc:
                # Leases keep the rows ours for a while; try again shortly.
                log.warning("engine.write_failed", error=str(exc), pending=len(self._outcomes))
                await asyncio.sleep(WRITE_RETRY_SECONDS)

    async def _write_pending(self) -> None:
        """Write the outcomes and holds gathered so far. If the database refuses the
        batch for anything but being unavailable, write it row by row and drop (with
        a log line) only the rows it refuses: one bad row never blocks the rest."""
        batch, self._outcomes = self._outcomes, []
        holds, self._to_hold = self._to_hold, []
        self._outcomes_ready.clear()
        await self._write_backpressure()
        self._writing = len(batch) + len(holds)
        try:
            await self._write(batch, holds)
        except BaseException as exc:
            self._writing = 0
            if isinstance(exc, DB_UNAVAILABLE) or not isinstance(exc, asyncpg.PostgresError):
                self._put_back(batch, holds)
                raise
            log.error("engine.write_rejected", error=str(exc), outcomes=len(batch))
            await self._write_isolated(batch, holds)
        else:
            self._writing = 0
            self._finish_rows(batch, holds)
        self._backlog_since = time.monotonic() if self._outcomes or self._to_hold else None

    async def _write_backpressure(self) -> None:
        """Rows not sent during a backoff go back due when it ends; the batch's rate
        limits and congestion go to the endpoint rows (announced to every worker).
        Written before the outcomes, so other processes stop sending soonest."""
        releases, self._to_release = self._to_release, []
        pressure, self._pressure = self._pressure, {}
        if not releases and not pressure:
            return
        now = self._clock.now()
        by_due: dict[datetime, list[int]] = {}
        for delivery_id, due in releases:
            by_due.setdefault(due, []).append(delivery_id)
        try:
            async with self._lease_pool.acquire() as conn:
                for due, ids in by_due.items():
                    await queue.release(conn, ids, self.owner, due)
                await apply_pressure(conn, pressure, now, self._cfg.rate_limit_backoff_seconds,
                                     self._cfg.retry_after_cap_seconds)
        except DB_ERRORS as exc:
            # Unreleased rows come back when their lease ends; the backoff holds here.
            log.warning("engine.backpressure_write_failed", error=str(exc))
        for delivery_id, _ in releases:
            self._finish_row(delivery_id)

    def _put_back(self, batch: Sequence[Outcome], holds: Sequence[int]) -> None:
        self._outcomes[:0] = batch
        self._to_hold[:0] = holds
        if batch or holds:
            self._outcomes_ready.set()

    def _finish_rows(self, batch: Sequence[Outcome], holds: Sequence[int]) -> None:
        for o in batch:
            self._finish_row(o.delivery_id)
        for delivery_id in holds:
            self._finish_row(delivery_id)

    async def _write(self, batch: Sequence[Outcome], holds: Sequence[int]) -> None:
        if not batch and not holds:
            return
        now = self._clock.now()
        changed: set[UUID] = set()
        async with self._pool.acquire() as conn, conn.transaction():
            await queue.hold(conn, holds, self.owner, now)
            written = await queue.record_outcomes(conn, batch, self.owner, now)
            if len(written) < len(batch):
                dropped = [o for o in batch if o.delivery_id not in written]
                # Endpoint or event deleted while the request was on the wire.
                log.info("delivery.outcome_dropped", reason="delivery deleted",
                         count=len(dropped), delivery_ids=[o.delivery_id for o in dropped][:20])
                batch = [o for o in batch if o.delivery_id in written]
            gone = {o.endpoint_id for o in batch if o.response_status == GONE}
            if gone:
                changed |= await _disable_gone(conn, gone, now)
            for hook in self.outcome_hooks:
                changed.update(await hook(conn, batch, now))
        for endpoint_id in changed:
            self.endpoint_changed(endpoint_id)

    async def _write_isolated(self, batch: Sequence[Outcome], holds: Sequence[int]) -> None:
        try:
            await self._write([], holds)
        except DB_UNAVAILABLE:
            self._put_back(batch, holds)
            raise
        except asyncpg.PostgresError as exc:  # they come back due when their lease ends
            log.error("engine.hold_rejected", error=str(exc), rows=len(holds))
        self._finish_rows([], holds)
        for i, outcome in enumerate(batch):
            try:
                await self._write([outcome], [])
            except DB_UNAVAILABLE:
                self._put_back(batch[i:], [])
                raise
            except asyncpg.PostgresError as exc:
                # Its lease runs out and the delivery is sent again: at least once.
                metrics.OUTCOMES_DROPPED.inc()
                log.error("delivery.outcome_dropped", reason="rejected by the database",
                          error=str(exc), delivery_id=outcome.delivery_id,
                          endpoint_id=str(outcome.endpoint_id))
            self._finish_rows([outcome], [])

    # -- NOTIFY ----------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Keep a dedicated LISTEN connection; reconnect if it drops."""
        backoff = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("engine.listen_connect_failed", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            closed = asyncio.Event()
            conn.add_termination_listener(_setter(closed))
            try:
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
                await conn.add_listener(ENDPOINTS_CHANNEL, self._on_endpoint_notify)
                for endpoint_id in self._cache.ids():
                    self.endpoint_changed(endpoint_id)  # changes missed while disconnected
                self._wake.set()  # catch up on whatever arrived while disconnected
                await closed.wait()
                log.warning("engine.listen_connection_lost")
            finally:
                if not conn.is_closed():
                    await conn.close()

    def _on_endpoint_notify(self, _conn: Conn, _pid: int, _channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            self.endpoint_changed(UUID(str(payload)))


class Slots:
    """A semaphore whose size may change while tasks wait on it: lowering an
    endpoint's max_in_flight applies to the rows already queued for it. A freed
    slot is handed to the longest waiter directly, so a release wakes one task."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def resize(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            self._hand_over()

    async def __aenter__(self) -> None:
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved with the slot already counted as ours
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self.used -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self.used < self.limit and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)


_DISABLE_GONE = """
WITH off AS (
    UPDATE endpoints
    SET state = 'disabled', state_reason = 'receiver answered 410 Gone',
        state_changed_at = $2, version = version + 1, updated_at = $2
    WHERE id = ANY($1::uuid[]) AND state <> 'disabled'
    RETURNING id
), held AS (
    UPDATE deliveries SET held_since = coalesce(held_since, $2), next_attempt_at = 'infinity'
    WHERE endpoint_id IN (SELECT id FROM off) AND status < 2
)
SELECT id FROM off
"""


async def _disable_gone(conn: Conn, endpoint_ids: set[UUID], now: datetime) -> set[UUID]:
    """410 Gone: the receiver wants no more deliveries. Hold, never drop, the rest."""
    disabled = {r["id"] for r in await conn.fetch(_DISABLE_GONE, list(endpoint_ids), now)}
    if disabled:
        log.warning("endpoint.disabled", endpoint_ids=[str(e) for e in disabled],
                    reason="410 Gone")
    return disabled


def _past_deadline(row: ClaimedDelivery, now: datetime) -> bool:
    """A callback at or past its deadline: an attempt now could not be answered in time."""
    return row.deadline_at is not None and row.deadline_at <= now


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _setter(event: asyncio.Event) -> Callable[..., None]:
    return lambda *_: event.set()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
