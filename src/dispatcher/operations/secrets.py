"""Signing material: rotate an endpoint's secret, reveal it on an explicit call, and
the tenant's cobo public key. HMAC secrets are shown as they are; for Ed25519
schemes only the public key ever leaves the server. Revealing a secret is a write
as far as scope goes: a read-only portal link may not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from dispatcher.errors import Conflict, NotFound
from dispatcher.operations import audit
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.secretbox import SecretBox
from dispatcher.signing import COBO, STANDARD_V1A, public_key, public_key_pem
from dispatcher.store import endpoints as store
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import (
    reveal_endpoint_secret,
    rotate_endpoint_secret,
    tenant_public_key,
)


@dataclass(frozen=True)
class SecretMaterial:
    """What a receiver verifies with: the shared secret (HMAC schemes), or the public
    key as `whpk_...`/hex and PEM (standard-v1a, cobo's tenant key)."""

    signing_scheme: str
    secret: str | None = None
    public_key: str | None = None
    public_key_pem: str | None = None


@dataclass(frozen=True)
class Rotated:
    material: SecretMaterial
    previous_expires_at: datetime | None  # None: there was no previous secret


async def secret_material(
    conn: Conn, box: SecretBox, tenant_id: UUID, scheme: str, secret: str | None
) -> SecretMaterial:
    if scheme == COBO:
        key = await tenant_public_key(conn, box, tenant_id)
        return SecretMaterial(scheme, public_key=key.hex, public_key_pem=key.pem)
    assert secret is not None
    if scheme == STANDARD_V1A:
        return SecretMaterial(scheme, public_key=public_key(scheme, secret),
                              public_key_pem=public_key_pem(secret))
    return SecretMaterial(scheme, secret=secret)


def _not_found(endpoint_id: UUID) -> NotFound:
    return NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")


async def rotate_secret(svc: Services, caller: Caller, endpoint_id: UUID) -> Rotated:
    """A new secret; the previous one keeps signing alongside it for the overlap."""
    caller.may_write()
    tenant_id = caller.tenant
    box = svc.secret_box
    now = svc.clock.now()
    overlap = svc.config.signing.rotation_overlap_seconds
    async with svc.pool.acquire() as conn, conn.transaction():
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id, for_update=True)
        if ep is None:
            raise _not_found(endpoint_id)
        if ep.signing_scheme == COBO:
            raise Conflict("cobo endpoints are signed with the tenant's key, which is not "
                           "rotated per endpoint", field="signing_scheme")
        had_secret = await conn.fetchval(
            "SELECT secret_enc IS NOT NULL FROM endpoints WHERE id = $1", endpoint_id
        )
        secret = await rotate_endpoint_secret(conn, box, endpoint_id, ep.signing_scheme, now,
                                              overlap, tenant_id=tenant_id)
        material = await secret_material(conn, box, tenant_id, ep.signing_scheme, secret)
        await audit.record(svc, conn, caller, "endpoint.secret_rotate", "endpoint",
                           endpoint_id, {"secret": "rotated", "overlap_seconds": overlap})
    return Rotated(material, now + timedelta(seconds=overlap) if had_secret else None)


async def reveal_secret(svc: Services, caller: Caller, endpoint_id: UUID) -> SecretMaterial:
    caller.may_write()
    tenant_id = caller.tenant
    box = svc.secret_box
    async with svc.pool.acquire() as conn, conn.transaction():
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id)
        if ep is None:
            raise _not_found(endpoint_id)
        secret = None
        if ep.signing_scheme != COBO:
            secret = await reveal_endpoint_secret(conn, box, endpoint_id, tenant_id=tenant_id)
        material = await secret_material(conn, box, tenant_id, ep.signing_scheme, secret)
        await audit.record(svc, conn, caller, "endpoint.secret_reveal", "endpoint",
                           endpoint_id, {"secret": "revealed"})
    return material


async def signing_key(svc: Services, caller: Caller) -> SecretMaterial:
    """The tenant's cobo public key (public: any scope may read it)."""
    async with svc.pool.acquire() as conn:
        return await secret_material(conn, svc.secret_box, caller.tenant, COBO, None)
