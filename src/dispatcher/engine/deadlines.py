"""Callback deadlines in the worker: a callback claimed at or after its deadline (a
retry due just before it, a held one re-driven after it) is never sent; the deadline
hook records it Failed (`deadline_expired`) instead, as the expiry job would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from dispatcher.engine.endpoints import EndpointCache
from dispatcher.store import callbacks as callback_store
from dispatcher.store import deliveries as queue
from dispatcher.store.deliveries import ClaimedDelivery
from dispatcher.store.pool import DB_ERRORS, Conn

log = structlog.get_logger(__name__)

# Without a deadline hook, rows past their deadline wait this long, unsent, for the
# expiry job.
UNHOOKED_WAIT_SECONDS = 60.0

# Runs inside a transaction with the ids of callback deliveries claimed at or after
# their deadline, which are never sent: it records them finished (Failed).
DeadlineHook = Callable[[Conn, Sequence[int], datetime], Awaitable[None]]


def past_deadline(row: ClaimedDelivery, now: datetime) -> bool:
    """A callback at or past its deadline: an attempt now could not be answered in time."""
    return row.deadline_at is not None and row.deadline_at <= now


async def read_deadlines(conn: Conn, cache: EndpointCache,
                         rows: Sequence[ClaimedDelivery]) -> None:
    """The deadlines of the callbacks claimed (one query, only when there are
    some), so that none is sent once its deadline has passed."""
    callbacks = [r for r in rows
                 if (t := cache.get(r.endpoint_id)) is not None and t.callback]
    if callbacks:
        deadlines = await callback_store.deadlines(conn, [r.event_id for r in callbacks])
        for r in callbacks:
            r.deadline_at = deadlines.get(r.event_id)


async def fail_overdue(pool: asyncpg.Pool, hook: DeadlineHook | None, owner: UUID,
                       now: datetime, ids: list[int]) -> None:
    """Callback rows claimed at or after their deadline: never sent (an answer
    could not count), finished Failed by the deadline hook. Without one (no
    callbacks recorded here) they wait, unsent, for the expiry job."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            due = now + timedelta(seconds=UNHOOKED_WAIT_SECONDS)
            if hook is not None:
                await hook(conn, ids, now)
                due = now
            await queue.release(conn, ids, owner, due)
    except DB_ERRORS as exc:
        # Their leases run out and they come back here: still never sent.
        log.warning("engine.deadline_write_failed", error=str(exc), rows=len(ids))
