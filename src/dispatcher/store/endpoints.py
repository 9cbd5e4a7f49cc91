"""Endpoints as their tenant manages them: create, read, list, update, delete.
(Pause and resume live with the health accounting in store/health.py.) Every
change bumps `version`, which delivery workers use to know their cached copy is
stale. Every query is scoped to the tenant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.store.pool import Conn

# Columns a tenant may change with an update.
UPDATABLE = ("url", "description", "event_types", "signing_scheme", "retry_policy",
             "timeout_seconds", "max_in_flight", "metadata", "pause_window_threshold",
             "pause_total_threshold", "propagate_trace_context", "channels")

_COLUMNS = """id, tenant_id, url, description, event_types, signing_scheme, retry_policy,
    timeout_seconds, max_in_flight, metadata, pause_window_threshold, pause_total_threshold,
    state, state_reason, state_changed_at, version, created_at, updated_at,
    effective_max_in_flight, CASE WHEN rate_limited_until > now() THEN rate_limited_until
                                  END AS rate_limited_until, kind,
    headers, auth, tls, propagate_trace_context, channels"""


@dataclass(frozen=True)
class Endpoint:
    id: UUID
    tenant_id: UUID
    url: str
    description: str
    event_types: list[str]
    signing_scheme: str
    retry_policy: str
    timeout_seconds: float
    max_in_flight: int
    metadata: dict[str, Any]
    pause_window_threshold: int | None
    pause_total_threshold: int | None
    state: str
    state_reason: str | None
    state_changed_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    effective_max_in_flight: int | None = None
    rate_limited_until: datetime | None = None
    kind: str = "webhook"  # or "callback"
    # Delivery options, public parts only (store/delivery_options.py): [name, value]
    # pairs, the auth view, the TLS certificate description.
    headers: list[list[str]] = field(default_factory=list)
    auth: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None
    propagate_trace_context: bool = True  # traceparent on its requests (tracing on)
    channels: list[str] = field(default_factory=list)  # empty: every event of its types


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(**{k: row[k] for k in row.keys()})  # noqa: SIM118 (Record is not a dict)


async def create_endpoint(
    conn: Conn, tenant_id: UUID, endpoint_id: UUID, fields: Mapping[str, Any], now: datetime
) -> Endpoint:
    """Insert an endpoint; `fields` holds every column of UPDATABLE (and may hold
    `kind`, webhook by default)."""
    row = await conn.fetchrow(
        f"""INSERT INTO endpoints (id, tenant_id, url, description, event_types, signing_scheme,
                                  retry_policy, timeout_seconds, max_in_flight, metadata,
                                  pause_window_threshold, pause_total_threshold,
                                  created_at, updated_at, kind, propagate_trace_context,
                                  channels)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, $15,
                    $16)
            RETURNING {_COLUMNS}""",
        endpoint_id, tenant_id, fields["url"], fields["description"], fields["event_types"],
        fields["signing_scheme"], fields["retry_policy"], fields["timeout_seconds"],
        fields["max_in_flight"], fields["metadata"], fields["pause_window_threshold"],
        fields["pause_total_threshold"], now, fields.get("kind", "webhook"),
        fields.get("propagate_trace_context", True), fields.get("channels", []),
    )
    assert row is not None
    return _endpoint(row)


async def get_endpoint(
    conn: Conn, tenant_id: UUID, endpoint_id: UUID, *, for_update: bool = False
) -> Endpoint | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM endpoints WHERE id = $1 AND tenant_id = $2{lock}",
        endpoint_id, tenant_id,
    )
    return None if row is None else _endpoint(row)


async def list_endpoints(
    conn: Conn,
    tenant_id: UUID,
    *,
    state: str | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[Endpoint]:
    """Oldest first, keyset-paginated on (created_at, id) after `after`."""
    after_at, after_id = after if after else (None, None)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM endpoints
            WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
              AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
            ORDER BY created_at, id LIMIT $5""",
        tenant_id, state, after_at, after_id, limit,
    )
    return [_endpoint(r) for r in rows]


async def update_endpoint(
    conn: Conn,
    tenant_id: UUID,
    endpoint_id: UUID,
    changes: Mapping[str, Any],
    now: datetime,
    *,
    clear_secrets: bool = False,
) -> Endpoint | None:
    """Apply `changes` (keys from UPDATABLE); None if the tenant has no such endpoint.
    `clear_secrets` drops the stored secrets (a switch to the tenant-keyed cobo scheme)."""
    unknown = set(changes) - set(UPDATABLE)
    assert not unknown, f"not updatable: {unknown}"
    sets = ["version = version + 1", "updated_at = $3"]
    args: list[Any] = [endpoint_id, tenant_id, now]
    for column, value in changes.items():
        args.append(value)
        sets.append(f"{column} = ${len(args)}")
    if clear_secrets:
        sets += ["secret_enc = NULL", "previous_secret_enc = NULL",
                 "previous_secret_expires_at = NULL"]
    row = await conn.fetchrow(
        f"""UPDATE endpoints SET {", ".join(sets)}
            WHERE id = $1 AND tenant_id = $2 RETURNING {_COLUMNS}""",
        *args,
    )
    return None if row is None else _endpoint(row)


async def delete_endpoint(conn: Conn, tenant_id: UUID, endpoint_id: UUID) -> bool:
    """Delete the endpoint with its deliveries and attempts."""
    status = await conn.execute(
        "DELETE FROM endpoints WHERE id = $1 AND tenant_id = $2", endpoint_id, tenant_id
    )
    return status != "DELETE 0"
