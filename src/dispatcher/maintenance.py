"""Periodic maintenance inside the daemon, on APScheduler 3's AsyncIOScheduler:
expired-lease reaper, hold-limit expiry, re-drive of resumed endpoints, retention,
removal of finished console sessions and the database gauges in dispatcher.metrics.

With several daemons on one database each job runs on at most one of them at a
time: a run first takes a PostgreSQL advisory lock named after the job on its own
connection (`pg_try_advisory_lock`) and is skipped if another daemon holds it.
Every job takes `now` from the application's clock, so tests call the job methods
directly under a FakeClock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dispatcher import metrics
from dispatcher.clock import Clock
from dispatcher.config import Config
from dispatcher.model import DeliveryStatus, FailureReason
from dispatcher.store import audit, console_sessions, deliveries, health, holds
from dispatcher.store.lookup import read_gauges
from dispatcher.store.pool import Conn

log = structlog.get_logger(__name__)

MAINTENANCE = "maintenance"
BATCH = 5000  # rows per statement (and per transaction) for bulk changes
MAX_BATCHES = 200  # per run and table; the next run carries on
REDRIVE_SECONDS = 1.0  # the re-drive job's period, and the span of one chunk
RETENTION_EVERY = 10  # retention runs every this many maintenance intervals
# Console sessions that ended or expired are kept this long (to see who was signed in
# when), then deleted.
SESSIONS_KEPT = timedelta(days=1)
# Pooled connections the jobs of one process use at once. The jobs come due together
# (all at start-up, most every interval): eight acquiring at once grew the pool by new,
# cold connections just as requests needed them (publish p99 at 200/s: 8 ms -> 4 ms).
CONNECTIONS = 2

Job = Callable[[Conn, datetime], Awaitable[Any]]


def lock_key(job: str) -> int:
    """The advisory lock id of a job: the same in every process."""
    digest = hashlib.blake2b(f"dispatcher.maintenance.{job}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    attempts: int
    events: int
    buckets: int
    audit_entries: int = 0


class Maintenance:
    """The maintenance jobs of one daemon and the scheduler that runs them."""

    def __init__(self, pool: asyncpg.Pool, config: Config, clock: Clock) -> None:
        self._pool = pool
        self._config = config
        self._health = config.health
        self._clock = clock
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._connections = asyncio.Semaphore(CONNECTIONS)
        self._urgent = {"redrive", "reap_leases"}  # see add_job
        self._active: set[str] = set()  # jobs running in this process
        self._again: set[str] = set()  # came due while running: once more at the end
        interval = self._health.maintenance_interval_seconds
        self.jobs: dict[str, tuple[float, Job]] = {
            "reap_leases": (interval, self._reap_leases),
            "expire_holds": (interval, self._expire_holds),
            "redrive": (REDRIVE_SECONDS, self._redrive),
            "retention": (interval * RETENTION_EVERY, self._retention),
            "gauges": (interval, self._gauges),
            "ordering_keys": (interval, self._promote_orphaned_heads),
            "console_sessions": (interval * RETENTION_EVERY, self._drop_finished_sessions),
        }

    # -- running ---------------------------------------------------------------------

    def add_job(self, name: str, seconds: float, job: Job, *, urgent: bool = False) -> None:
        """Another periodic job under the same one-daemon-at-a-time rule (before start).
        An `urgent` job (a deadline depends on it) does not queue for the jobs' shared
        connections behind a long one such as retention."""
        self.jobs[name] = (seconds, job)
        if urgent:
            self._urgent.add(name)

    async def run(self, name: str) -> Any:
        """Run one job now if no other daemon is running it; None when skipped.

        Runs of one job never overlap. One that comes due while the job is still
        running here is coalesced: however many come due, the job runs once more as
        soon as the current run ends (not a whole interval later), so a slow run
        delays a callback deadline or a re-drive by its own length at most."""
        if name in self._active:
            self._again.add(name)
            log.debug("maintenance.coalesced", job=name)
            return None
        self._active.add(name)
        try:
            while True:
                self._again.discard(name)
                result = await self._run_once(name)
                if name not in self._again or self._stopping:
                    return result
        finally:
            self._active.discard(name)

    async def _run_once(self, name: str) -> Any:
        _, job = self.jobs[name]
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if name not in self._urgent:
                    await stack.enter_async_context(self._connections)
                conn = await stack.enter_async_context(self._pool.acquire())
                key = lock_key(name)
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    log.debug("maintenance.skipped", job=name)
                    return None
                try:
                    return await job(conn, self._clock.now())
                finally:
                    # Releasing the connection to the pool unlocks too (asyncpg's reset).
                    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                        await conn.execute("SELECT pg_advisory_unlock($1)", key)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("maintenance.failed", job=name, error=str(exc))
            return None
        finally:
            if task is not None:
                self._running.discard(task)

    def start(self) -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        first = datetime.now(UTC) + timedelta(seconds=1)
        for name, (seconds, _) in self.jobs.items():
            # Overlap is handled by run() (coalesced into one run right after), so
            # APScheduler must not refuse a due run ("maximum number of running
            # instances reached") and leave it to the next interval.
            scheduler.add_job(self.run, "interval", args=[name], seconds=seconds, id=name,
                              name=name, max_instances=2, coalesce=True,
                              misfire_grace_time=None, next_run_time=first)
        scheduler.start()
        self._scheduler = scheduler
        log.info("maintenance.started", jobs=sorted(self.jobs))

    async def stop(self, grace: float = 10.0) -> None:
        """No new runs; let running ones finish their batch (up to `grace` s)."""
        self._stopping = True
        if self._scheduler is None or not self._scheduler.running:
            return
        self._scheduler.pause()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        self._scheduler.shutdown(wait=False)  # cancels whatever is still running
        await asyncio.sleep(0)
        self._scheduler = None
        log.info("maintenance.stopped")

    # -- the jobs, by name ------------------------------------------------------------

    async def reap_leases(self) -> int | None:
        result: int | None = await self.run("reap_leases")
        return result

    async def expire_holds(self) -> dict[Any, int] | None:
        result: dict[Any, int] | None = await self.run("expire_holds")
        return result

    async def redrive(self) -> int | None:
        result: int | None = await self.run("redrive")
        return result

    async def retention(self) -> RetentionResult | None:
        result: RetentionResult | None = await self.run("retention")
        return result

    async def gauges(self) -> None:
        await self.run("gauges")

    async def drop_finished_sessions(self) -> int | None:
        result: int | None = await self.run("console_sessions")
        return result

    # -- what they do -------------------------------------------------------------------

    async def _reap_leases(self, conn: Conn, now: datetime) -> int:
        """Leases that ran out: the rows are due again by themselves (their due time
        was the lease expiry); clearing the owner shows they are free, and counts them."""
        total = 0
        for _ in range(MAX_BATCHES):
            status = await conn.execute(_REAP, now, BATCH)
            count = int(status.split()[-1])
            total += count
            if count < BATCH or self._stopping:
                break
        if total:
            log.info("maintenance.leases_reaped", count=total)
        return total

    async def _expire_holds(self, conn: Conn, now: datetime) -> dict[Any, int]:
        expired = await holds.expire_held(conn, now, self._health.hold_limit_seconds, BATCH,
                                           FailureReason.ENDPOINT_PAUSED.value)
        for endpoint_id, count in expired.items():
            metrics.DELIVERIES_FINISHED.labels(DeliveryStatus.FAILED.label).inc(count)
            log.warning("deliveries.hold_expired", endpoint_id=str(endpoint_id), count=count,
                        hold_limit_seconds=self._health.hold_limit_seconds)
        return expired

    async def _promote_orphaned_heads(self, conn: Conn, now: datetime) -> int:
        """Keys whose head finished outside the delivery path (the hold limit failed
        it, a manual change): their next delivery may go."""
        count = await deliveries.promote_orphaned_heads(conn, now)
        if count:
            log.info("deliveries.ordering_keys_released", count=count)
        return count

    async def _redrive(self, conn: Conn, now: datetime) -> int:
        total = 0
        for endpoint_id in await holds.redrive_endpoints_due(conn, now):
            count = await holds.redrive_chunk(
                conn, endpoint_id, now, self._health.resume_rate_per_second, REDRIVE_SECONDS,
                self._config.delivery.lease_seconds)
            if count:
                log.info("endpoint.redrive", endpoint_id=str(endpoint_id), count=count)
            total += count
        return total

    async def _retention(self, conn: Conn, now: datetime) -> RetentionResult:
        """Attempts and finished events older than health.retention_days, BATCH rows per
        statement, each statement its own short transaction."""
        cutoff = now - timedelta(days=self._health.retention_days)
        attempts = await self._delete_batches(conn, _DROP_ATTEMPTS, cutoff)
        events = await self._delete_batches(conn, _DROP_EVENTS, cutoff)
        old = now - timedelta(seconds=self._health.window_seconds) - health.BUCKET
        buckets = await self._delete_batches(conn, _DROP_BUCKETS, old)
        if attempts or events:
            log.info("maintenance.retention", attempts=attempts, events=events,
                     buckets=buckets, cutoff=cutoff.isoformat())
            async with conn.transaction():
                await audit.append(conn, now, audit.system("retention"), [audit.Change(
                    "retention.delete", "deployment", "deliveries", None,
                    {"attempts": attempts, "events": events, "cutoff": cutoff.isoformat()})])
        kept = self._config.audit.kept_days(self._health)
        entries = await audit.apply_retention(conn, now - timedelta(days=kept), now,
                                              audit.system("retention"))
        if entries:
            log.info("maintenance.audit_retention", entries=entries, days=kept)
        return RetentionResult(attempts, events, buckets, entries)

    async def _drop_finished_sessions(self, conn: Conn, now: datetime) -> int:
        """Console sessions that ended or expired more than SESSIONS_KEPT ago."""
        total = 0
        for _ in range(MAX_BATCHES):
            count = await console_sessions.delete_finished_sessions(conn, now - SESSIONS_KEPT,
                                                                    BATCH)
            total += count
            if count < BATCH or self._stopping:
                break
        if total:
            log.info("maintenance.console_sessions_dropped", count=total)
        return total

    async def _delete_batches(self, conn: Conn, sql: str, cutoff: datetime) -> int:
        total = 0
        for _ in range(MAX_BATCHES):
            status = await conn.execute(sql, cutoff, BATCH)
            count = int(status.split()[-1])
            total += count
            if count < BATCH or self._stopping:
                break
        return total

    async def _gauges(self, conn: Conn, now: datetime) -> None:
        metrics.set_gauges(await read_gauges(conn, now))


_REAP = """
UPDATE deliveries SET lease_owner = NULL
WHERE id = ANY(ARRAY(
    SELECT id FROM deliveries
    WHERE status < 2 AND next_attempt_at <= $1 AND lease_owner IS NOT NULL
    LIMIT $2
    FOR UPDATE SKIP LOCKED))
"""

_DROP_ATTEMPTS = """
DELETE FROM attempts WHERE id = ANY(ARRAY(
    SELECT id FROM attempts WHERE started_at < $1 LIMIT $2))
"""

# An event goes once every delivery of it is finished (or it has none); its
# deliveries and their attempts go with it.
_DROP_EVENTS = """
DELETE FROM events WHERE id = ANY(ARRAY(
    SELECT e.id FROM events e
    WHERE e.created_at < $1
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status < 2)
    LIMIT $2))
"""

_DROP_BUCKETS = """
DELETE FROM endpoint_failure_buckets WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM endpoint_failure_buckets WHERE bucket_start < $1 LIMIT $2))
"""
