"""Rows for tests, written with plain SQL so engine tests do not depend on the API."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from dispatcher.secretbox import SecretBox
from dispatcher.signing import generate_secret
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import set_endpoint_secret
from dispatcher.store.tenants import ensure_tenant


async def make_tenant(conn: Conn, name: str = "acme") -> UUID:
    return await ensure_tenant(conn, name)


async def make_endpoint(
    conn: Conn,
    box: SecretBox,
    tenant_id: UUID,
    url: str,
    *,
    scheme: str = "standard-v1",
    retry_policy: str = "standard",
    timeout_seconds: float = 2.0,
    max_in_flight: int = 10,
    event_types: list[str] | None = None,
    secret: str | None = None,
) -> tuple[UUID, str]:
    """An active endpoint with a fresh secret; returns (id, secret)."""
    endpoint_id: UUID = await conn.fetchval(
        """INSERT INTO endpoints (tenant_id, url, signing_scheme, retry_policy,
                                  timeout_seconds, max_in_flight, event_types)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
        tenant_id, url, scheme, retry_policy, timeout_seconds, max_in_flight,
        event_types or ["*"],
    )
    secret = secret or generate_secret(scheme)
    if scheme != "cobo":
        await set_endpoint_secret(conn, box, endpoint_id, secret)
    return endpoint_id, secret


async def delivery_row(conn: Conn, endpoint_id: UUID, event_id: UUID) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT * FROM deliveries WHERE endpoint_id = $1 AND event_id = $2",
        endpoint_id, event_id,
    )
    assert row is not None
    return dict(row)
