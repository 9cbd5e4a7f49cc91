"""Temporary endpoints of `dispatcher listen`: marked with the owner that holds the
listener's connection, their due deliveries claimed by that owner only (the engine
skips them), and removed with their deliveries when the listener goes."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from dispatcher.store.deliveries import ClaimedDelivery
from dispatcher.store.pool import Conn


async def mark_listener(conn: Conn, endpoint_id: UUID, owner: UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE endpoints SET listener_owner = $2, listener_seen_at = $3 WHERE id = $1",
        endpoint_id, owner, now)


async def take_over_listener(conn: Conn, endpoint_id: UUID, tenant_id: UUID, owner: UUID,
                             now: datetime) -> list[str] | None:
    """A listener reconnecting: its endpoint is held by `owner` from now on (the old
    holder stops at its next refresh). Answers the endpoint's event types, or None
    when the tenant has no such temporary endpoint (any more)."""
    types: list[str] | None = await conn.fetchval(
        """UPDATE endpoints SET listener_owner = $3, listener_seen_at = $4
           WHERE id = $1 AND tenant_id = $2 AND listener_owner IS NOT NULL
           RETURNING event_types""", endpoint_id, tenant_id, owner, now)
    return types


async def still_listening(conn: Conn, endpoint_id: UUID, owner: UUID, now: datetime) -> bool:
    """Refresh the holder's mark; False when the endpoint is gone or held by another."""
    status = await conn.execute(
        "UPDATE endpoints SET listener_seen_at = $3 WHERE id = $1 AND listener_owner = $2",
        endpoint_id, owner, now)
    return status != "UPDATE 0"


async def remove_listener(conn: Conn, endpoint_id: UUID, owner: UUID) -> bool:
    """Delete the temporary endpoint with its deliveries (none is retried)."""
    status = await conn.execute(
        "DELETE FROM endpoints WHERE id = $1 AND listener_owner = $2", endpoint_id, owner)
    return status != "DELETE 0"


async def remove_abandoned(conn: Conn, seen_before: datetime) -> int:
    """Temporary endpoints whose holder has not refreshed them since `seen_before`."""
    status = await conn.execute(
        "DELETE FROM endpoints WHERE listener_owner IS NOT NULL AND listener_seen_at < $1",
        seen_before)
    return int(status.split()[-1])


_CLAIM = """
UPDATE deliveries d
SET lease_owner = $2, next_attempt_at = $4
WHERE d.id = ANY(ARRAY(
    SELECT id FROM deliveries
    WHERE endpoint_id = $1 AND status < 2 AND next_attempt_at <= $3
      AND EXISTS (SELECT 1 FROM endpoints WHERE id = $1 AND listener_owner = $2)
    ORDER BY next_attempt_at
    LIMIT $5
    FOR UPDATE SKIP LOCKED))
RETURNING d.id, d.event_id, d.endpoint_id, d.attempts, d.retries_left,
          (SELECT body FROM events e WHERE e.id = d.event_id) AS body,
          (SELECT version FROM endpoints ep WHERE ep.id = d.endpoint_id) AS endpoint_version
"""


async def claim_listener_due(
    conn: Conn, endpoint_id: UUID, owner: UUID, now: datetime, lease_until: datetime,
    limit: int,
) -> list[ClaimedDelivery]:
    """Lease the due deliveries of one temporary endpoint, as the engine's claim does,
    while `owner` still holds it."""
    rows = await conn.fetch(_CLAIM, endpoint_id, owner, now, lease_until, limit)
    return [ClaimedDelivery(r["id"], r["event_id"], r["endpoint_id"], r["endpoint_version"],
                            r["attempts"], r["retries_left"], r["body"]) for r in rows]
