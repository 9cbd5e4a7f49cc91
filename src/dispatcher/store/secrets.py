"""Signing secrets at rest: endpoint secrets (current + previous during a rotation
window) and each tenant's Ed25519 key for the cobo scheme, all AES-GCM encrypted
with the row's id as AAD. Plaintext never reaches the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID

import asyncpg

from dispatcher import signing
from dispatcher.errors import NotFound
from dispatcher.secretbox import SecretBox
from dispatcher.store.pool import Conn


class PublicKey(NamedTuple):
    hex: str
    pem: str


def endpoint_aad(endpoint_id: UUID) -> bytes:
    return b"endpoint:" + endpoint_id.bytes


def tenant_aad(tenant_id: UUID) -> bytes:
    return b"tenant:" + tenant_id.bytes


def _endpoint_not_found(endpoint_id: UUID) -> NotFound:
    return NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")


def decrypt_endpoint_secrets(
    box: SecretBox,
    endpoint_id: UUID,
    secret_enc: bytes | None,
    previous_enc: bytes | None,
    previous_expires_at: datetime | None,
    now: datetime,
) -> list[str]:
    """The secrets to sign with, newest first: the current one, then the previous
    one while its rotation window is open (`now` < expiry)."""
    if secret_enc is None:
        return []
    aad = endpoint_aad(endpoint_id)
    out = [box.decrypt(secret_enc, aad)]
    if previous_enc is not None and previous_expires_at is not None and now < previous_expires_at:
        out.append(box.decrypt(previous_enc, aad))
    return out


SET_SECRET = """
UPDATE endpoints
   SET secret_enc = $2, previous_secret_enc = NULL, previous_secret_expires_at = NULL,
       version = version + 1, updated_at = now()
 WHERE id = $1 AND ($3::uuid IS NULL OR tenant_id = $3)
"""


async def set_endpoint_secret(
    conn: Conn,
    box: SecretBox,
    endpoint_id: UUID,
    secret: str,
    *,
    tenant_id: UUID | None = None,
) -> None:
    """Store `secret` (encrypted) as the endpoint's only secret; any previous one is
    dropped at once. `tenant_id`, when given, must own the endpoint."""
    status = await conn.execute(
        SET_SECRET, endpoint_id, box.encrypt(secret, endpoint_aad(endpoint_id)), tenant_id
    )
    if status == "UPDATE 0":
        raise _endpoint_not_found(endpoint_id)


# One statement: the right-hand sides read the row as it was, so the old current
# secret moves to previous even when two rotations race (the later one wins whole).
ROTATE_SECRET = """
UPDATE endpoints
   SET previous_secret_enc = secret_enc,
       previous_secret_expires_at = CASE WHEN secret_enc IS NULL THEN NULL ELSE $3::timestamptz END,
       secret_enc = $2,
       version = version + 1, updated_at = $4::timestamptz
 WHERE id = $1 AND ($5::uuid IS NULL OR tenant_id = $5)
"""


async def rotate_endpoint_secret(
    conn: Conn,
    box: SecretBox,
    endpoint_id: UUID,
    scheme: str,
    now: datetime,
    overlap_seconds: int,
    *,
    tenant_id: UUID | None = None,
) -> str:
    """Make a new secret for `scheme` current; the old one stays valid (signed with
    as well) until `now + overlap_seconds`. A secret still in an earlier window is
    dropped. Returns the new secret text."""
    secret = signing.generate_secret(scheme)
    status = await conn.execute(
        ROTATE_SECRET,
        endpoint_id,
        box.encrypt(secret, endpoint_aad(endpoint_id)),
        now + timedelta(seconds=overlap_seconds),
        now,
        tenant_id,
    )
    if status == "UPDATE 0":
        raise _endpoint_not_found(endpoint_id)
    return secret


ENDPOINT_SECRETS = """
SELECT secret_enc, previous_secret_enc, previous_secret_expires_at
  FROM endpoints
 WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)
"""


async def _secret_row(
    conn: Conn, endpoint_id: UUID, tenant_id: UUID | None
) -> asyncpg.Record:
    row = await conn.fetchrow(ENDPOINT_SECRETS, endpoint_id, tenant_id)
    if row is None:
        raise _endpoint_not_found(endpoint_id)
    return row


async def endpoint_secrets(
    conn: Conn,
    box: SecretBox,
    endpoint_id: UUID,
    now: datetime,
    *,
    tenant_id: UUID | None = None,
) -> list[str]:
    """The endpoint's secrets to sign with at `now`, newest first (empty if none set)."""
    row = await _secret_row(conn, endpoint_id, tenant_id)
    return decrypt_endpoint_secrets(
        box, endpoint_id, row["secret_enc"], row["previous_secret_enc"],
        row["previous_secret_expires_at"], now,
    )


async def reveal_endpoint_secret(
    conn: Conn,
    box: SecretBox,
    endpoint_id: UUID,
    *,
    tenant_id: UUID | None = None,
) -> str:
    """The endpoint's current secret text, to show its owner."""
    row = await _secret_row(conn, endpoint_id, tenant_id)
    if row["secret_enc"] is None:
        raise NotFound(f"endpoint {endpoint_id} has no secret", field="secret")
    secret: str = box.decrypt(row["secret_enc"], endpoint_aad(endpoint_id))
    return secret


TENANT_KEY = "SELECT signing_key_enc FROM tenants WHERE id = $1"

# Race-safe first use: whichever transaction writes first wins, later ones keep it.
CREATE_TENANT_KEY = """
UPDATE tenants SET signing_key_enc = COALESCE(signing_key_enc, $2)
 WHERE id = $1
RETURNING signing_key_enc
"""


async def tenant_signing_key(conn: Conn, box: SecretBox, tenant_id: UUID) -> str:
    """The tenant's Ed25519 private key (hex seed) for the cobo scheme, created on
    first use."""
    aad = tenant_aad(tenant_id)
    row = await conn.fetchrow(TENANT_KEY, tenant_id)
    if row is None:
        raise NotFound(f"tenant {tenant_id} not found", field="tenant_id")
    blob: bytes | None = row["signing_key_enc"]
    if blob is None:
        new = box.encrypt(signing.generate_secret(signing.COBO), aad)
        blob = await conn.fetchval(CREATE_TENANT_KEY, tenant_id, new)
        if blob is None:  # the tenant was deleted in between
            raise NotFound(f"tenant {tenant_id} not found", field="tenant_id")
    return box.decrypt(blob, aad)


async def tenant_public_key(
    conn: Conn, box: SecretBox, tenant_id: UUID
) -> PublicKey:
    """The public half of the tenant's cobo key, as hex of the raw 32 bytes and as
    PEM, for receivers to verify `Biz-Resp-Signature` with."""
    secret = await tenant_signing_key(conn, box, tenant_id)
    hex_key = signing.public_key(signing.COBO, secret)
    assert hex_key is not None  # cobo always has a public key
    return PublicKey(hex=hex_key, pem=signing.public_key_pem(secret))
