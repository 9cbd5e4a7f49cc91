"""Held deliveries of an endpoint: re-driven at a bounded rate after a resume, and
failed with `endpoint_paused` once held past the hold limit. Both run from the
maintenance jobs, in short transactions with SKIP LOCKED so they never block the
delivery path."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from dispatcher.store import audit
from dispatcher.store.pool import Conn

_REDRIVE_DUE = """
SELECT id FROM endpoints
WHERE redrive_from IS NOT NULL AND redrive_from <= $1 AND state = 'active'
ORDER BY redrive_from LIMIT $2
"""

_LOCK_REDRIVE = """
SELECT redrive_from FROM endpoints
WHERE id = $1 AND redrive_from IS NOT NULL AND redrive_from <= $2 AND state = 'active'
FOR NO KEY UPDATE
"""

# Un-hold the oldest `$2` held rows, due now (a row waiting for the delivery before it
# of its ordering key stays out of the due range). A row still leased keeps its lease: it
# is due after a fresh lease length if it was held less than a lease ago (its worker
# may still write its outcome); otherwise that lease is long dead and is dropped.
_UNHOLD_CHUNK = """
WITH picked AS (
    SELECT id, held_since FROM deliveries
    WHERE endpoint_id = $1 AND held_since IS NOT NULL AND status < 2
    ORDER BY held_since, id LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET held_since = NULL,
    next_attempt_at = CASE WHEN d.key_waiting THEN 'infinity'::timestamptz
                           WHEN d.lease_owner IS NOT NULL AND picked.held_since > $4
                           THEN $5::timestamptz ELSE $3::timestamptz END,
    lease_owner = CASE WHEN picked.held_since > $4 THEN d.lease_owner END,
    updated_at = $3
FROM picked WHERE d.id = picked.id
"""


async def redrive_endpoints_due(conn: Conn, now: datetime, limit: int = 100) -> list[UUID]:
    """Resumed endpoints whose next re-drive chunk is due."""
    return [r["id"] for r in await conn.fetch(_REDRIVE_DUE, now, limit)]


async def redrive_chunk(
    conn: Conn, endpoint_id: UUID, now: datetime, rate_per_second: float, chunk_seconds: float,
    lease_seconds: float,
) -> int:
    """Make the next `rate * chunk_seconds` held deliveries of a resumed endpoint due
    now, and the chunk after that due `chunk_seconds` later, so a recovering receiver
    gets at most `rate` re-driven deliveries per second however often (and on however
    many daemons) this runs. Each held delivery is un-held once. Returns how many;
    the re-drive ends with the first chunk that comes up short."""
    size = max(1, int(rate_per_second * chunk_seconds))
    async with conn.transaction():
        if await conn.fetchval(_LOCK_REDRIVE, endpoint_id, now) is None:
            return 0  # paused again, or another daemon took this chunk
        lease = timedelta(seconds=lease_seconds)
        status = await conn.execute(_UNHOLD_CHUNK, endpoint_id, size, now, now - lease,
                                    now + lease)
        count = int(status.split()[-1])
        next_from = now + timedelta(seconds=chunk_seconds) if count == size else None
        await conn.execute("UPDATE endpoints SET redrive_from = $2 WHERE id = $1",
                           endpoint_id, next_from)
        if count:
            await conn.execute("SELECT pg_notify('dispatcher_deliveries', '')")
    return count


_EXPIRE = """
UPDATE deliveries d
SET status = 3, failure_reason = $5, held_since = NULL, lease_owner = NULL, updated_at = $2
WHERE d.id = ANY(ARRAY(
    SELECT id FROM deliveries
    WHERE endpoint_id = $1 AND held_since IS NOT NULL AND status < 2 AND held_since < $3
    ORDER BY held_since LIMIT $4
    FOR UPDATE SKIP LOCKED))
"""


async def expire_held(
    conn: Conn, now: datetime, hold_limit_seconds: float, batch: int, reason: str
) -> dict[UUID, int]:
    """Fail deliveries held longer than the limit on paused endpoints, `batch` rows
    per transaction; returns how many per endpoint. Their retries are kept, so a
    manual retry (deliveries.retry_delivery) replays them. Deliveries held by a
    disabled (410) endpoint stay held until it is resumed or deleted."""
    cutoff = now - timedelta(seconds=hold_limit_seconds)
    expired: dict[UUID, int] = {}
    paused = [(r["id"], r["tenant_id"]) for r in await conn.fetch(
        "SELECT id, tenant_id FROM endpoints WHERE state = 'paused' ORDER BY id")]
    for endpoint_id, tenant_id in paused:
        while True:
            async with conn.transaction():
                # FOR SHARE: a resume waits for this batch, and this batch for a resume.
                still = await conn.fetchval(
                    "SELECT 1 FROM endpoints WHERE id = $1 AND state = 'paused' FOR SHARE",
                    endpoint_id)
                if still is None:
                    break
                status = await conn.execute(_EXPIRE, endpoint_id, now, cutoff, batch, reason)
                count = int(status.split()[-1])
                await audit.append(conn, now, audit.system("expire_holds"), [audit.Change(
                    "endpoint.holds_expire", "endpoint", str(endpoint_id), tenant_id,
                    {"failed": count, "hold_limit_seconds": hold_limit_seconds})] if count else [])
            if count:
                expired[endpoint_id] = expired.get(endpoint_id, 0) + count
            if count < batch:
                break
    return expired
