"""The claim loop of one worker and what feeds it: batch claims of due deliveries
with a lease, woken by NOTIFY or room freed here, skipping saturated endpoints; the
rows leased here until their outcome is written; the LISTEN connection.

Fairness across tenants: a tenth of each claim is the newest first attempts, and a
worker full of claimed rows still claims what was published since (a few more).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from dispatcher import telemetry
from dispatcher.clock import Clock
from dispatcher.config import DeliveryConfig
from dispatcher.engine.deadlines import read_deadlines
from dispatcher.engine.endpoints import EndpointCache
from dispatcher.engine.memory import HeapTrimmer
from dispatcher.engine.pressure import EndpointPressure
from dispatcher.store import deliveries as queue
from dispatcher.store.deliveries import ClaimedDelivery
from dispatcher.store.pool import DB_ERRORS, Conn

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "dispatcher_deliveries"
ENDPOINTS_CHANNEL = "dispatcher_endpoints"  # payload: the id of a changed endpoint
NEWEST_SHARE = 10  # 1/10 of each claim is taken newest first
FRESH_RESERVE = 50  # rows claimed beyond the local limit, new events only


class LeasedRows:
    """The delivery ids leased here whose outcome is not written yet; `progress` is
    set whenever one is done with (written, given back or gone)."""

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self.progress = asyncio.Event()

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[int]:
        return list(self._ids)

    def add(self, ids: Iterable[int]) -> None:
        self._ids.update(ids)

    def finish(self, delivery_id: int) -> None:
        if delivery_id in self._ids:
            self._ids.discard(delivery_id)
            self.progress.set()


class Claimer:
    """Claims batches while there is room for them and hands each to `on_claimed`."""

    def __init__(
        self,
        lease_pool: asyncpg.Pool,
        owner: UUID,
        clock: Clock,
        config: DeliveryConfig,
        cache: EndpointCache,
        pressure: EndpointPressure,
        leased: LeasedRows,
        on_claimed: Callable[[list[ClaimedDelivery]], None],
    ) -> None:
        self._lease_pool = lease_pool
        self._owner = owner
        self._clock = clock
        self._cfg = config
        self._cache = cache
        self._pressure = pressure
        self._leased = leased
        self._on_claimed = on_claimed
        self._max_open = config.claim_batch_size * config.batches_in_flight
        self._wake = asyncio.Event()
        self._stopping = False
        self._claims = 0
        self._full_since: datetime | None = None  # claimed rows at the local limit since
        self.heap = HeapTrimmer()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Claim no more (the loop ends at its next turn)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        progress = self._leased.progress
        while not self._stopping:
            room = self._max_open - len(self._leased)
            # Full of claimed rows (a backlog): only what was just published may still
            # come in, a few more, so a backlog here never delays someone's new event.
            fresh_only = room <= 0
            if not fresh_only:
                self._full_since = None
            elif self._full_since is None:
                self._full_since = self._clock.now()
            if fresh_only:
                room = self._max_open + FRESH_RESERVE - len(self._leased)
                if room <= 0:
                    progress.clear()
                    await progress.wait()
                    continue
            limit = min(self._cfg.claim_batch_size, room)
            try:
                rows = await self._claim(limit, fresh_only)
            except DB_ERRORS as exc:
                log.warning("engine.claim_failed", error=str(exc))
                await asyncio.sleep(self._cfg.poll_interval_seconds)
                continue
            if rows:
                self._on_claimed(rows)
            if fresh_only:  # wait for a NOTIFY, room, or the next poll
                self._wake.clear()
                progress.clear()
                await self._wait_any(self._wake, progress)
            elif len(rows) < limit:  # drained for now: wait for a NOTIFY or the next poll
                if not self._leased:
                    self.heap.idle()  # the bodies of earlier claims are gone by now
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

    def _skipped(self) -> list[UUID]:
        """Endpoints the next claim skips: saturated here, sent by a listener, or
        in a rate-limit backoff known here."""
        limited = self._pressure.backing_off(self._clock.now())
        return self._pressure.at_allowance() + self._cache.listener_ids() + limited

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
            rows = await queue.claim_due(conn, self._owner, limit, now, lease_until,
                                         self._skipped(), newest, since,
                                         self._cfg.claim_max_bytes,
                                         traced=telemetry.active() is not None)
            self._leased.add(r.id for r in rows)
            if rows:
                self.heap.claimed(sum({r.event_id: len(r.body) for r in rows}.values()))
            stale = self._cache.stale(((r.endpoint_id, r.endpoint_version) for r in rows), now)
            try:
                await self._cache.load(conn, stale, now)
                await read_deadlines(conn, self._cache, rows)
            except BaseException:
                # Unsent: due again now rather than stranded until their lease runs out.
                with contextlib.suppress(*DB_ERRORS):
                    await queue.release(conn, [r.id for r in rows], self._owner, now)
                for r in rows:
                    self._leased.finish(r.id)
                raise
        return rows


async def listen_for_changes(
    dsn: str,
    wake: Callable[[], None],
    endpoint_changed: Callable[[UUID], None],
    known_endpoints: Callable[[], Iterable[UUID]],
) -> None:
    """Keep a dedicated LISTEN connection; reconnect if it drops. New deliveries
    call `wake`, a changed endpoint `endpoint_changed`."""

    def on_endpoint_notify(_conn: Conn, _pid: int, _channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            endpoint_changed(UUID(str(payload)))

    backoff = 0.5
    while True:
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("engine.listen_connect_failed", error=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        backoff = 0.5
        closed = asyncio.Event()
        conn.add_termination_listener(_setter(closed))
        try:
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
            await conn.add_listener(ENDPOINTS_CHANNEL, on_endpoint_notify)
            for endpoint_id in known_endpoints():
                endpoint_changed(endpoint_id)  # changes missed while disconnected
            wake()  # catch up on whatever arrived while disconnected
            await closed.wait()
            log.warning("engine.listen_connection_lost")
        finally:
            if not conn.is_closed():
                await conn.close()


def _setter(event: asyncio.Event) -> Callable[..., None]:
    return lambda *_: event.set()
