"""The delivery worker of one process: claims due deliveries in batches, sends them
with bounded concurrency, and writes outcomes in batches; it starts, stops within a
grace period and gives back what it holds.

Its parts: the claim loop and the LISTEN connection that wakes it (engine/claims.py),
each claimed batch sent or given back (engine/batches.py), the per-endpoint slots,
allowances, backoff and adaptive limits (engine/pressure.py), the outcome writer
(engine/writer.py), callback deadlines (engine/deadlines.py), endpoints read again
on every change notified (engine/endpoints.py), and the process's request slots
handed to waiting tenants in turn (engine/fair.py).

Per-endpoint isolation with batch claims: an endpoint may use only its own slots and
a short local queue; rows beyond that are given back at once, due a moment later (no
attempt is spent), and the next claims skip that endpoint while it is saturated. So
a dead endpoint holds a few slots and a short local queue, and never the process's
global concurrency or its claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from uuid import UUID

import asyncpg
import structlog

from dispatcher.clock import Clock
from dispatcher.config import Config
from dispatcher.engine.batches import BatchRunner
from dispatcher.engine.claims import Claimer, LeasedRows, listen_for_changes
from dispatcher.engine.deadlines import DeadlineHook
from dispatcher.engine.endpoints import EndpointCache, EndpointRefresh
from dispatcher.engine.pressure import EndpointPressure
from dispatcher.engine.writer import OutcomeHook, OutcomeWriter
from dispatcher.retry import load_policies
from dispatcher.secretbox import SecretBox
from dispatcher.store import deliveries as queue
from dispatcher.store.deliveries import ClaimedDelivery
from dispatcher.store.pool import DB_ERRORS
from dispatcher.transport import Transport

log = structlog.get_logger(__name__)


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
        lease_pool = lease_pool or pool
        self._dsn = dsn
        self._clock = clock
        self.outcome_hooks: list[OutcomeHook] = []
        self._cache = EndpointCache(box, load_policies(config),
                                    config.delivery.default_retry_policy)
        self._leased = LeasedRows()
        self._pressure = EndpointPressure(self._cache, config.delivery)
        self._endpoints = EndpointRefresh(pool, self._cache, clock, self._pressure.reread)
        self._writer = OutcomeWriter(pool, lease_pool, self.owner, clock, config.delivery,
                                     self._pressure, self._leased, self.outcome_hooks,
                                     self._endpoints.changed)
        self._runner = BatchRunner(pool, lease_pool, self.owner, transport, config, clock,
                                   self._cache, self._endpoints, self._pressure, self._writer,
                                   self._leased)
        self._claimer = Claimer(lease_pool, self.owner, clock, config.delivery, self._cache,
                                self._pressure, self._leased, self._start_batch)
        self._batches: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    @property
    def deadline_hook(self) -> DeadlineHook | None:
        """Fails the callbacks claimed at or after their deadline (engine/deadlines.py)."""
        return self._runner.deadline_hook

    @deadline_hook.setter
    def deadline_hook(self, hook: DeadlineHook | None) -> None:
        self._runner.deadline_hook = hook

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        listen = listen_for_changes(self._dsn, self._claimer.wake, self._endpoints.changed,
                                    self._cache.ids)
        self._loops = [
            asyncio.create_task(listen, name="dispatcher.listen"),
            asyncio.create_task(self._claimer.run(), name="dispatcher.claim"),
            asyncio.create_task(self._writer.run(), name="dispatcher.write"),
        ]
        log.info("engine.started", owner=str(self.owner))

    async def stop(self, grace: float) -> None:
        """Stop claiming; let requests in flight finish within `grace` seconds; give
        back the lease of everything not sent; write every outcome."""
        self._runner.stopping = True
        self._claimer.stop()
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
            await self._writer.write_pending()
        except DB_ERRORS as exc:
            # The leases run out and these deliveries are sent again: at least once.
            log.error("engine.final_write_failed", error=str(exc), lost=self._writer.unwritten)
            return
        unsent = self._leased.ids()
        if unsent:
            async with self._pool.acquire() as conn:
                await queue.release(conn, unsent, self.owner, self._clock.now())
        log.info("engine.stopped", owner=str(self.owner), released=len(unsent))

    def wake(self) -> None:
        self._claimer.wake()

    def endpoint_changed(self, endpoint_id: UUID) -> None:
        """An endpoint was changed or deleted: start no request to it until it has
        been read again."""
        self._endpoints.changed(endpoint_id)

    def writer_backlog(self) -> tuple[int, float]:
        """Outcomes waiting to be written, and for how many seconds the writer has
        had some waiting without managing to write them."""
        return self._writer.backlog()

    def _start_batch(self, rows: list[ClaimedDelivery]) -> None:
        task = asyncio.create_task(self._runner.run(rows))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
