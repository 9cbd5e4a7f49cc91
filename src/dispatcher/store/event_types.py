"""Event types a tenant defines for itself (table `event_types`), beside the
catalogue of built-in and configured types."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.catalogue import EventType
from dispatcher.store.pool import Conn


def _event_type(row: asyncpg.Record) -> EventType:
    return EventType(row["name"], row["description"], "tenant", row["sample"], "tenant")


async def create_event_type(
    conn: Conn, tenant_id: UUID, name: str, description: str, sample: Any, now: datetime
) -> EventType | None:
    """The new type, or None when the tenant already has one of that name."""
    row = await conn.fetchrow(
        """INSERT INTO event_types (tenant_id, name, description, sample, created_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (tenant_id, name) DO NOTHING
           RETURNING name, description, sample""",
        tenant_id, name, description, sample, now,
    )
    return None if row is None else _event_type(row)


async def get_event_type(conn: Conn, tenant_id: UUID, name: str) -> EventType | None:
    row = await conn.fetchrow(
        "SELECT name, description, sample FROM event_types WHERE tenant_id = $1 AND name = $2",
        tenant_id, name,
    )
    return None if row is None else _event_type(row)


async def list_event_types(
    conn: Conn, tenant_id: UUID, after: str | None, limit: int
) -> list[EventType]:
    """The tenant's own types in name order, after the name `after`."""
    rows = await conn.fetch(
        """SELECT name, description, sample FROM event_types
           WHERE tenant_id = $1 AND ($2::text IS NULL OR name COLLATE "C" > $2)
           ORDER BY name COLLATE "C" LIMIT $3""",
        tenant_id, after, limit,
    )
    return [_event_type(r) for r in rows]


async def known_tenant_types(conn: Conn, tenant_id: UUID, names: Iterable[str]) -> set[str]:
    """Which of `names` the tenant has defined."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    rows = await conn.fetch(
        "SELECT name FROM event_types WHERE tenant_id = $1 AND name = ANY($2::text[])",
        tenant_id, wanted,
    )
    return {r["name"] for r in rows}


async def delete_event_type(conn: Conn, tenant_id: UUID, name: str) -> bool:
    status = await conn.execute(
        "DELETE FROM event_types WHERE tenant_id = $1 AND name = $2", tenant_id, name
    )
    return status != "DELETE 0"
