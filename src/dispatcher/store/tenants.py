"""Tenants and API keys. Keys are random, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.store.pool import Conn

KEY_PREFIX = "dk_"
SHOWN_PREFIX_LEN = 11  # "dk_" + 8 characters, enough to tell keys apart in a list


@dataclass(frozen=True)
class ApiKeyInfo:
    id: UUID
    tenant_id: UUID
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def validate_tenant_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("tenant name must be 1 to 100 characters", field="tenant")
    return name


async def ensure_tenant(conn: Conn, name: str) -> UUID:
    """The tenant's id, creating the tenant if it does not exist."""
    name = validate_tenant_name(name)
    tenant_id: UUID = await conn.fetchval(
        """INSERT INTO tenants (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id""",
        name,
    )
    return tenant_id


async def count_tenants(conn: Conn) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM tenants")
    return n


async def create_api_key(conn: Conn, tenant: str, name: str = "") -> str:
    """Create a key for `tenant` (created if new); returns the key, the only time
    it is ever visible."""
    async with conn.transaction():
        tenant_id = await ensure_tenant(conn, tenant)
        key = new_key()
        await conn.execute(
            "INSERT INTO api_keys (tenant_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4)",
            tenant_id, name, key[:SHOWN_PREFIX_LEN], hash_key(key),
        )
    return key


async def authenticate(conn: Conn, key: str) -> UUID | None:
    """The tenant id owning an unrevoked `key`, or None."""
    tenant_id: UUID | None = await conn.fetchval(
        """UPDATE api_keys SET last_used_at = now()
           WHERE key_hash = $1 AND revoked_at IS NULL
           RETURNING tenant_id""",
        hash_key(key),
    )
    return tenant_id


async def list_api_keys(conn: Conn, tenant: str | None = None) -> list[ApiKeyInfo]:
    rows = await conn.fetch(
        """SELECT k.id, k.tenant_id, t.name AS tenant, k.name, k.prefix, k.created_at,
                  k.last_used_at, k.revoked_at
           FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
           WHERE $1::text IS NULL OR t.name = $1
           ORDER BY t.name, k.created_at""",
        tenant,
    )
    return [ApiKeyInfo(**dict(r)) for r in rows]


async def revoke_api_key(conn: Conn, key_id_or_prefix: str) -> ApiKeyInfo:
    """Revoke by id or by the shown prefix; the prefix must match exactly one key."""
    rows = await conn.fetch(
        """SELECT id FROM api_keys
           WHERE id::text = $1 OR prefix = $1 OR (length($1) > 11 AND key_hash = $2)""",
        key_id_or_prefix, hash_key(key_id_or_prefix),
    )
    if not rows:
        raise NotFound(f"no API key matches {key_id_or_prefix!r}", field="key")
    if len(rows) > 1:
        raise Conflict(f"{key_id_or_prefix!r} matches several keys; use the id", field="key")
    await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", rows[0]["id"]
    )
    keys = [k for k in await list_api_keys(conn) if k.id == rows[0]["id"]]
    return keys[0]
