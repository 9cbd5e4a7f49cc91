"""The outcome writer of one worker: gathers attempt outcomes, holds and backoff
releases, writes each batch in one transaction with the outcome hooks (disabling
endpoints that answered 410 Gone), and tells how far behind it is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from dispatcher import metrics
from dispatcher.clock import Clock
from dispatcher.config import DeliveryConfig
from dispatcher.engine.claims import LeasedRows
from dispatcher.engine.pressure import EndpointPressure
from dispatcher.store import audit
from dispatcher.store import deliveries as queue
from dispatcher.store.backpressure import apply_pressure
from dispatcher.store.deliveries import Outcome
from dispatcher.store.pool import DB_ERRORS, DB_UNAVAILABLE, Conn
from dispatcher.transport.classify import GONE

log = structlog.get_logger(__name__)

FLUSH_LINGER = 0.005  # gather outcomes this long before writing them in one statement
WRITE_RETRY_SECONDS = 1.0

# Runs inside the transaction that records a batch; returns the endpoints it changed
# (paused), which this worker stops sending to as soon as the batch commits.
OutcomeHook = Callable[[Conn, Sequence[Outcome], datetime], Awaitable[Collection[UUID]]]


class OutcomeWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        lease_pool: asyncpg.Pool,
        owner: UUID,
        clock: Clock,
        config: DeliveryConfig,
        pressure: EndpointPressure,
        leased: LeasedRows,
        hooks: Sequence[OutcomeHook],
        endpoint_changed: Callable[[UUID], None],
    ) -> None:
        self._pool = pool  # outcomes: waits for the WAL flush
        self._lease_pool = lease_pool  # releases and backpressure: lease changes only
        self._owner = owner
        self._clock = clock
        self._cfg = config
        self._pressure = pressure
        self._leased = leased
        self._hooks = hooks
        self._endpoint_changed = endpoint_changed
        self._outcomes: list[Outcome] = []
        self._to_hold: list[int] = []  # claimed rows whose endpoint stopped meanwhile
        self._to_release: list[tuple[int, datetime]] = []  # unsent during a backoff
        self._ready = asyncio.Event()
        # Monotonic time since which outcomes have been waiting unwritten (None: none).
        self._backlog_since: float | None = None
        self._writing = 0  # outcomes and holds in the write under way

    # -- what to write ---------------------------------------------------------------

    def add(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._ready.set()

    def hold(self, delivery_id: int) -> None:
        """Not sent, its endpoint not active (or unusable): held, or due again if
        resumed meanwhile."""
        self._to_hold.append(delivery_id)
        self._ready.set()

    def release_at(self, delivery_id: int, due: datetime) -> None:
        """Not sent, its endpoint in a backoff: due again when it ends (no attempt)."""
        self._to_release.append((delivery_id, due))
        self._ready.set()

    @property
    def unwritten(self) -> int:
        return len(self._outcomes)

    def backlog(self) -> tuple[int, float]:
        """Outcomes waiting to be written, and for how many seconds the writer has
        had some waiting without managing to write them."""
        if self._backlog_since is None:
            return 0, 0.0
        waiting = len(self._outcomes) + len(self._to_hold) + self._writing
        return waiting, time.monotonic() - self._backlog_since

    # -- writing ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            if self._backlog_since is None:
                self._backlog_since = time.monotonic()
            await asyncio.sleep(FLUSH_LINGER)
            try:
                await self.write_pending()
            except DB_ERRORS as exc:
                # Leases keep the rows ours for a while; try again shortly.
                log.warning("engine.write_failed", error=str(exc), pending=len(self._outcomes))
                await asyncio.sleep(WRITE_RETRY_SECONDS)

    async def write_pending(self) -> None:
        """Write the outcomes and holds gathered so far. If the database refuses the
        batch for anything but being unavailable, write it row by row and drop (with
        a log line) only the rows it refuses: one bad row never blocks the rest."""
        batch, self._outcomes = self._outcomes, []
        holds, self._to_hold = self._to_hold, []
        self._ready.clear()
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
        pressure = self._pressure.take_pressure()
        if not releases and not pressure:
            return
        now = self._clock.now()
        by_due: dict[datetime, list[int]] = {}
        for delivery_id, due in releases:
            by_due.setdefault(due, []).append(delivery_id)
        try:
            async with self._lease_pool.acquire() as conn:
                for due, ids in by_due.items():
                    await queue.release(conn, ids, self._owner, due)
                await apply_pressure(conn, pressure, now, self._cfg.rate_limit_backoff_seconds,
                                     self._cfg.retry_after_cap_seconds)
        except DB_ERRORS as exc:
            # Unreleased rows come back when their lease ends; the backoff holds here.
            log.warning("engine.backpressure_write_failed", error=str(exc))
        for delivery_id, _ in releases:
            self._leased.finish(delivery_id)

    def _put_back(self, batch: Sequence[Outcome], holds: Sequence[int]) -> None:
        self._outcomes[:0] = batch
        self._to_hold[:0] = holds
        if batch or holds:
            self._ready.set()

    def _finish_rows(self, batch: Sequence[Outcome], holds: Sequence[int]) -> None:
        for o in batch:
            self._leased.finish(o.delivery_id)
        for delivery_id in holds:
            self._leased.finish(delivery_id)

    async def _write(self, batch: Sequence[Outcome], holds: Sequence[int]) -> None:
        if not batch and not holds:
            return
        now = self._clock.now()
        changed: set[UUID] = set()
        async with self._pool.acquire() as conn, conn.transaction():
            await queue.hold(conn, holds, self._owner, now)
            written = await queue.record_outcomes(conn, batch, self._owner, now)
            if len(written) < len(batch):
                dropped = [o for o in batch if o.delivery_id not in written]
                # Endpoint or event deleted while the request was on the wire.
                log.info("delivery.outcome_dropped", reason="delivery deleted",
                         count=len(dropped), delivery_ids=[o.delivery_id for o in dropped][:20])
                batch = [o for o in batch if o.delivery_id in written]
            gone = {o.endpoint_id for o in batch if o.response_status == GONE}
            if gone:
                changed |= await _disable_gone(conn, gone, now)
            for hook in self._hooks:
                changed.update(await hook(conn, batch, now))
            if changed:  # last: the audit log's lock is held until the commit
                await _audit_state_changes(conn, changed, now)
        for endpoint_id in changed:
            self._endpoint_changed(endpoint_id)

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


_STATES = "SELECT id, tenant_id, state, state_reason FROM endpoints WHERE id = ANY($1::uuid[])"
_BY = {"paused": ("endpoint.pause", audit.system("health", "engine")),
       "disabled": ("endpoint.disable", audit.system("engine", "engine"))}


async def _audit_state_changes(conn: Conn, endpoint_ids: set[UUID], now: datetime) -> None:
    """One audit entry per endpoint this batch paused (a failure threshold crossed)
    or disabled (410 Gone), by the system actor that did it."""
    rows = await conn.fetch(_STATES, list(endpoint_ids))
    for state, (action, actor) in _BY.items():
        changes = [audit.Change(action, "endpoint", str(r["id"]), r["tenant_id"], {
            "state": {"new": state}, "state_reason": {"new": r["state_reason"]}})
            for r in rows if r["state"] == state]
        await audit.append(conn, now, actor, changes)


async def _disable_gone(conn: Conn, endpoint_ids: set[UUID], now: datetime) -> set[UUID]:
    """410 Gone: the receiver wants no more deliveries. Hold, never drop, the rest."""
    disabled = {r["id"] for r in await conn.fetch(_DISABLE_GONE, list(endpoint_ids), now)}
    if disabled:
        log.warning("endpoint.disabled", endpoint_ids=[str(e) for e in disabled],
                    reason="410 Gone")
    return disabled
