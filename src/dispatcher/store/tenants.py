"""Tenants and API keys. Keys are random, shown once, stored as SHA-256.

A tenant key belongs to one tenant and acts only inside it; an operator key belongs
to no tenant and acts for any (on `default` unless told which)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from dispatcher.errors import Conflict, NotFound, ValidationError
from dispatcher.model import DEFAULT_TENANT
from dispatcher.store.pool import Conn

KEY_PREFIX = "dk_"
TENANT_KEY = "tenant"
OPERATOR_KEY = "operator"
KeyKind = Literal["tenant", "operator"]
SHOWN_PREFIX_LEN = 11  # "dk_" + 8 characters, enough to tell keys apart in a list


@dataclass(frozen=True)
class ApiKeyInfo:
    id: UUID
    tenant_id: UUID | None  # None for an operator key
    tenant: str | None
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    kind: KeyKind = "tenant"


@dataclass(frozen=True)
class KeyOwner:
    """Who an API key speaks for: an operator, or one tenant (id and name)."""

    kind: KeyKind
    tenant_id: UUID | None
    tenant: str | None
    key_id: UUID | None = None


@dataclass(frozen=True)
class Tenant:
    id: UUID
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TenantStats:
    endpoints: dict[str, int]
    deliveries: dict[int, int]  # DeliveryStatus value -> count
    failures_in_window: int


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


async def create_operator_key(conn: Conn, name: str = "") -> str:
    """Create an operator key; returns the key, the only time it is ever visible."""
    key = new_key()
    await conn.execute(
        """INSERT INTO api_keys (tenant_id, kind, name, prefix, key_hash)
           VALUES (NULL, 'operator', $1, $2, $3)""",
        name, key[:SHOWN_PREFIX_LEN], hash_key(key),
    )
    return key


async def create_tenant_key(conn: Conn, tenant_id: UUID, name: str = "") -> tuple[str, UUID]:
    """A new key of an existing tenant: (key, key id)."""
    key = new_key()
    key_id: UUID = await conn.fetchval(
        """INSERT INTO api_keys (tenant_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4)
           RETURNING id""",
        tenant_id, name, key[:SHOWN_PREFIX_LEN], hash_key(key),
    )
    return key, key_id


async def authenticate_key(conn: Conn, key: str) -> KeyOwner | None:
    """Who an unrevoked `key` speaks for, or None."""
    row = await conn.fetchrow(
        """WITH k AS (
               UPDATE api_keys SET last_used_at = now()
               WHERE key_hash = $1 AND revoked_at IS NULL
               RETURNING id, kind, tenant_id)
           SELECT k.id, k.kind, k.tenant_id, t.name
           FROM k LEFT JOIN tenants t ON t.id = k.tenant_id""",
        hash_key(key),
    )
    if row is None:
        return None
    return KeyOwner(row["kind"], row["tenant_id"], row["name"], row["id"])


async def authenticate(conn: Conn, key: str) -> UUID | None:
    """The tenant an unrevoked `key` acts on when no tenant is named (an operator
    key: `default`), or None."""
    owner = await authenticate_key(conn, key)
    if owner is None:
        return None
    if owner.tenant_id is not None:
        return owner.tenant_id
    found = await find_tenant(conn, DEFAULT_TENANT)
    return None if found is None else found.id


async def list_api_keys(conn: Conn, tenant: str | None = None) -> list[ApiKeyInfo]:
    rows = await conn.fetch(
        """SELECT k.id, k.tenant_id, t.name AS tenant, k.name, k.prefix, k.created_at,
                  k.last_used_at, k.revoked_at,
                  k.kind
           FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
           WHERE $1::text IS NULL OR t.name = $1
           ORDER BY k.kind = 'tenant', t.name, k.created_at""",
        tenant,
    )
    return [ApiKeyInfo(**dict(r)) for r in rows]


async def _key_id(conn: Conn, key_id_or_prefix: str, field: str = "key") -> UUID:
    """The id of the key named by its id, its shown prefix or the key itself; the
    prefix must match exactly one key (NotFound, Conflict naming `field`)."""
    rows = await conn.fetch(
        """SELECT id FROM api_keys
           WHERE id::text = $1 OR prefix = $1 OR (length($1) > 11 AND key_hash = $2)""",
        key_id_or_prefix, hash_key(key_id_or_prefix),
    )
    if not rows:
        raise NotFound(f"no API key matches {key_id_or_prefix!r}", field=field)
    if len(rows) > 1:
        raise Conflict(f"{key_id_or_prefix!r} matches several keys; use the id", field=field)
    key_id: UUID = rows[0]["id"]
    return key_id


async def find_api_key(conn: Conn, key_id_or_prefix: str, field: str = "key") -> ApiKeyInfo:
    """A key by id, shown prefix or the key itself (NotFound, Conflict naming `field`)."""
    key_id = await _key_id(conn, key_id_or_prefix, field)
    return next(k for k in await list_api_keys(conn) if k.id == key_id)


async def revoke_api_key(conn: Conn, key_id_or_prefix: str) -> ApiKeyInfo:
    """Revoke by id or by the shown prefix; the prefix must match exactly one key.
    The key's console sessions end with it, in the same transaction."""
    async with conn.transaction():
        key_id = await _key_id(conn, key_id_or_prefix)
        await conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", key_id
        )
        await conn.execute(
            """UPDATE console_sessions SET ended_at = now()
               WHERE api_key_id = $1 AND ended_at IS NULL AND expires_at > now()""",
            key_id,
        )
    return await find_api_key(conn, str(key_id))


# --- Tenants as objects of the API --------------------------------------------------

_TENANT_COLUMNS = "id, name, metadata, created_at, updated_at"


def _tenant(row: asyncpg.Record) -> Tenant:
    metadata = row["metadata"]
    if isinstance(metadata, str):  # a connection without the pool's jsonb codec
        metadata = json.loads(metadata)
    return Tenant(row["id"], row["name"], dict(metadata), row["created_at"], row["updated_at"])


def _as_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


async def find_tenant(conn: Conn, ref: str) -> Tenant | None:
    """A tenant by name or by id (the name first, for a name that looks like an id)."""
    row = await conn.fetchrow(
        f"""SELECT {_TENANT_COLUMNS} FROM tenants WHERE name = $1 OR id = $2
            ORDER BY name = $1 DESC LIMIT 1""",
        ref, _as_uuid(ref),
    )
    return None if row is None else _tenant(row)


async def tenant_ids(conn: Conn, refs: Iterable[str]) -> dict[str, UUID]:
    """Tenant ids by name or id, for the `refs` that name a tenant."""
    refs = set(refs)
    as_ids = {r: u for r in refs if (u := _as_uuid(r)) is not None}
    rows = await conn.fetch(
        """SELECT id, name FROM tenants WHERE name = ANY($1::text[])
           UNION SELECT id, name FROM tenants WHERE id = ANY($2::uuid[])""",
        list(refs), list(set(as_ids.values())),
    )
    by_name = {r["name"]: r["id"] for r in rows}
    known = set(by_name.values())
    out = {ref: by_name[ref] for ref in refs if ref in by_name}
    out.update({ref: u for ref, u in as_ids.items() if ref not in out and u in known})
    return out


async def create_tenant(conn: Conn, name: str, metadata: dict[str, Any], now: datetime
                        ) -> Tenant:
    row = await conn.fetchrow(
        f"""INSERT INTO tenants (name, metadata, created_at, updated_at) VALUES ($1, $2, $3, $3)
            ON CONFLICT (name) DO NOTHING RETURNING {_TENANT_COLUMNS}""",
        name, metadata, now,
    )
    if row is None:
        raise Conflict(f"a tenant named {name!r} already exists", field="name")
    return _tenant(row)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def list_tenants(conn: Conn, *, name_prefix: str | None, after: str | None, limit: int
                       ) -> list[Tenant]:
    """Tenants by name, from after `after`."""
    rows = await conn.fetch(
        f"""SELECT {_TENANT_COLUMNS} FROM tenants
            WHERE ($1::text IS NULL OR name LIKE $1) AND ($2::text IS NULL OR name COLLATE "C" > $2)
            ORDER BY name COLLATE "C" LIMIT $3""",
        None if name_prefix is None else _like_prefix(name_prefix), after, limit,
    )
    return [_tenant(r) for r in rows]


async def update_tenant(conn: Conn, tenant_id: UUID, changes: dict[str, Any], now: datetime
                        ) -> Tenant | None:
    """Set `name` and/or `metadata`; Conflict when the new name is taken."""
    try:
        row = await conn.fetchrow(
            f"""UPDATE tenants SET name = coalesce($2, name), metadata = coalesce($3, metadata),
                                   updated_at = $4
                WHERE id = $1 RETURNING {_TENANT_COLUMNS}""",
            tenant_id, changes.get("name"), changes.get("metadata"), now,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"a tenant named {changes['name']!r} already exists",
                       field="name") from exc
    return None if row is None else _tenant(row)


async def delete_tenant(conn: Conn, tenant_id: UUID, *, force: bool) -> bool:
    """Delete the tenant with everything of it (keys, endpoints, events, deliveries).
    Without `force`, refuses (Conflict) while it has endpoints."""
    async with conn.transaction():
        found = await conn.fetchval("SELECT id FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
        if found is None:
            return False
        if not force:
            n = await conn.fetchval("SELECT count(*) FROM endpoints WHERE tenant_id = $1",
                                    tenant_id)
            if n:
                raise Conflict(f"the tenant has {n} endpoint(s); delete them first, or pass "
                               "force=true to delete the tenant with everything of it",
                               field="force")
        await conn.execute("DELETE FROM tenants WHERE id = $1", tenant_id)
    return True


async def tenant_stats(conn: Conn, tenant_id: UUID, window_from: datetime) -> TenantStats:
    endpoints = await conn.fetch(
        "SELECT state, count(*) AS n FROM endpoints WHERE tenant_id = $1 GROUP BY state",
        tenant_id,
    )
    deliveries = await conn.fetch(
        """SELECT d.status, count(*) AS n FROM deliveries d
           JOIN endpoints e ON e.id = d.endpoint_id
           WHERE e.tenant_id = $1 GROUP BY d.status""",
        tenant_id,
    )
    failures = await conn.fetchval(
        """SELECT coalesce(sum(b.failures), 0) FROM endpoint_failure_buckets b
           JOIN endpoints e ON e.id = b.endpoint_id
           WHERE e.tenant_id = $1 AND b.bucket_start >= $2""",
        tenant_id, window_from,
    )
    return TenantStats({r["state"]: r["n"] for r in endpoints},
                       {r["status"]: r["n"] for r in deliveries}, int(failures))


async def count_under_tenant_lock(conn: Conn, tenant_id: UUID,
                                  table: Literal["endpoints", "event_types"]) -> int:
    """The tenant's rows of `table`, counted under a lock on the tenant row so that two
    concurrent creates cannot both pass a limit. Call it in the creating transaction."""
    await conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE", tenant_id)
    count: int = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
                                     tenant_id)
    return count
