"""Secrets at rest: what the endpoints and tenants tables hold, rotation windows,
the tenant's cobo key, and the master key (config value or key file)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import stat
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from dispatcher.config import Config
from dispatcher.errors import ConfigError, NotFound
from dispatcher.secretbox import SecretBox, SecretDecryptionError, load_secret_box
from dispatcher.signing import generate_secret, make_signer, public_key
from dispatcher.store.secrets import (
    decrypt_endpoint_secrets,
    endpoint_secrets,
    reveal_endpoint_secret,
    rotate_endpoint_secret,
    set_endpoint_secret,
    tenant_public_key,
    tenant_signing_key,
)
from dispatcher.verify import verify_cobo

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = 86400


@pytest.fixture
def box(config: Config) -> SecretBox:
    return load_secret_box(config)


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as c:
        yield c


async def new_tenant(conn: asyncpg.Connection) -> UUID:
    tenant_id: UUID = await conn.fetchval(
        "INSERT INTO tenants (name) VALUES ($1) RETURNING id", f"t-{uuid4().hex[:8]}"
    )
    return tenant_id


async def new_endpoint(conn: asyncpg.Connection, tenant_id: UUID | None = None) -> UUID:
    tenant_id = tenant_id or await new_tenant(conn)
    endpoint_id: UUID = await conn.fetchval(
        """INSERT INTO endpoints (tenant_id, url, retry_policy)
           VALUES ($1, 'https://example.com/hook', 'standard') RETURNING id""",
        tenant_id,
    )
    return endpoint_id


def secret_forms(secret: str) -> list[bytes]:
    """The ways a secret could leak into a row: its text and its decoded key bytes."""
    forms = [secret.encode()]
    if secret.startswith(("whsec_", "whsk_")):
        forms.append(base64.b64decode(secret.split("_", 1)[1]))
    else:
        forms.append(bytes.fromhex(secret))
    return forms


async def all_row_bytes(conn: asyncpg.Connection) -> bytes:
    """Every column of every endpoint and tenant row, as bytes, including each bytea."""
    out = b""
    for table in ("endpoints", "tenants"):
        for row in await conn.fetch(f"SELECT * FROM {table}"):
            for value in row.values():
                out += value if isinstance(value, bytes) else str(value).encode()
    return out


async def test_tables_hold_no_plaintext_secret(conn: asyncpg.Connection, box: SecretBox) -> None:
    tenant_id = await new_tenant(conn)
    v1_endpoint = await new_endpoint(conn, tenant_id)
    v1a_endpoint = await new_endpoint(conn, tenant_id)
    v1 = generate_secret("standard-v1")
    await set_endpoint_secret(conn, box, v1_endpoint, v1)
    rotated = await rotate_endpoint_secret(conn, box, v1_endpoint, "standard-v1", T0, DAY)
    v1a = generate_secret("standard-v1a")
    await set_endpoint_secret(conn, box, v1a_endpoint, v1a)
    cobo = await tenant_signing_key(conn, box, tenant_id)

    stored = await all_row_bytes(conn)
    assert len(stored) > 0
    row = await conn.fetchrow("SELECT * FROM endpoints WHERE id = $1", v1_endpoint)
    assert row is not None and row["secret_enc"] and row["previous_secret_enc"]
    for secret in (v1, rotated, v1a, cobo):
        for form in secret_forms(secret):
            assert form not in stored
    # ...and yet every secret comes back.
    assert await endpoint_secrets(conn, box, v1_endpoint, T0) == [rotated, v1]
    assert await reveal_endpoint_secret(conn, box, v1a_endpoint) == v1a
    assert await tenant_signing_key(conn, box, tenant_id) == cobo


async def test_rotation_keeps_old_and_new_until_expiry_then_only_new(
    conn: asyncpg.Connection, box: SecretBox
) -> None:
    endpoint_id = await new_endpoint(conn)
    old = generate_secret("standard-v1")
    await set_endpoint_secret(conn, box, endpoint_id, old)
    version = await conn.fetchval("SELECT version FROM endpoints WHERE id = $1", endpoint_id)

    new = await rotate_endpoint_secret(conn, box, endpoint_id, "standard-v1", T0, DAY)
    assert new.startswith("whsec_") and new != old
    row = await conn.fetchrow(
        "SELECT version, updated_at, previous_secret_expires_at FROM endpoints WHERE id = $1",
        endpoint_id,
    )
    assert row is not None
    assert row["version"] == version + 1
    assert row["updated_at"] == T0
    assert row["previous_secret_expires_at"] == T0 + timedelta(seconds=DAY)

    during = T0 + timedelta(seconds=DAY - 1)
    assert await endpoint_secrets(conn, box, endpoint_id, during) == [new, old]
    assert await reveal_endpoint_secret(conn, box, endpoint_id) == new
    after = T0 + timedelta(seconds=DAY)
    assert await endpoint_secrets(conn, box, endpoint_id, after) == [new]

    # What the engine does with the secrets: both signatures during, one after.
    signer = make_signer("standard-v1", await endpoint_secrets(conn, box, endpoint_id, during))
    assert len(signer.sign("m", during, b"{}")["webhook-signature"].split()) == 2

    # Rotating again drops the oldest; setting a secret clears the window.
    newest = await rotate_endpoint_secret(conn, box, endpoint_id, "standard-v1", during, DAY)
    assert await endpoint_secrets(conn, box, endpoint_id, during) == [newest, new]
    await set_endpoint_secret(conn, box, endpoint_id, old)
    assert await endpoint_secrets(conn, box, endpoint_id, during) == [old]


async def test_first_rotation_without_a_secret_has_no_previous(
    conn: asyncpg.Connection, box: SecretBox
) -> None:
    endpoint_id = await new_endpoint(conn)
    assert await endpoint_secrets(conn, box, endpoint_id, T0) == []
    new = await rotate_endpoint_secret(conn, box, endpoint_id, "standard-v1a", T0, DAY)
    assert new.startswith("whsk_")
    assert await endpoint_secrets(conn, box, endpoint_id, T0) == [new]


async def test_decrypt_endpoint_secrets_on_a_fetched_row(
    conn: asyncpg.Connection, box: SecretBox
) -> None:
    endpoint_id = await new_endpoint(conn)
    await set_endpoint_secret(conn, box, endpoint_id, "first-secret")
    await rotate_endpoint_secret(conn, box, endpoint_id, "cobalt", T0, 60)
    row = await conn.fetchrow(
        """SELECT id, secret_enc, previous_secret_enc, previous_secret_expires_at
           FROM endpoints WHERE id = $1""",
        endpoint_id,
    )
    assert row is not None
    args = (row["secret_enc"], row["previous_secret_enc"], row["previous_secret_expires_at"])
    during = decrypt_endpoint_secrets(box, row["id"], *args, T0 + timedelta(seconds=59))
    assert len(during) == 2 and during[1] == "first-secret"
    assert decrypt_endpoint_secrets(box, row["id"], *args, T0 + timedelta(seconds=60)) == [
        during[0]
    ]


async def test_blob_moved_to_another_row_does_not_decrypt(
    conn: asyncpg.Connection, box: SecretBox
) -> None:
    a, b = await new_endpoint(conn), await new_endpoint(conn)
    await set_endpoint_secret(conn, box, a, generate_secret("standard-v1"))
    await conn.execute(
        "UPDATE endpoints SET secret_enc = (SELECT secret_enc FROM endpoints WHERE id = $1) "
        "WHERE id = $2", a, b,
    )
    with pytest.raises(SecretDecryptionError):
        await reveal_endpoint_secret(conn, box, b)


async def test_missing_or_foreign_endpoint_is_not_found(
    conn: asyncpg.Connection, box: SecretBox
) -> None:
    endpoint_id = await new_endpoint(conn)
    other_tenant = await new_tenant(conn)
    with pytest.raises(NotFound):
        await set_endpoint_secret(conn, box, uuid4(), "x")
    with pytest.raises(NotFound):
        await rotate_endpoint_secret(conn, box, uuid4(), "standard-v1", T0, 60)
    with pytest.raises(NotFound):
        await endpoint_secrets(conn, box, uuid4(), T0)
    with pytest.raises(NotFound):
        await set_endpoint_secret(conn, box, endpoint_id, "x", tenant_id=other_tenant)
    with pytest.raises(NotFound):
        await reveal_endpoint_secret(conn, box, endpoint_id, tenant_id=other_tenant)
    with pytest.raises(NotFound, match="no secret"):
        await reveal_endpoint_secret(conn, box, endpoint_id)
    with pytest.raises(NotFound):
        await tenant_signing_key(conn, box, uuid4())


async def test_tenant_cobo_key_is_created_once_and_exported(
    pool: asyncpg.Pool, box: SecretBox
) -> None:
    async with pool.acquire() as conn:
        tenant_id = await new_tenant(conn)

    async def key() -> str:
        async with pool.acquire() as c:
            return await tenant_signing_key(c, box, tenant_id)

    keys = await asyncio.gather(*(key() for _ in range(5)))
    assert len(set(keys)) == 1
    secret = keys[0]
    async with pool.acquire() as conn:
        pub = await tenant_public_key(conn, box, tenant_id)
    assert pub.hex == public_key("cobo", secret)
    pem_key = load_pem_public_key(pub.pem.encode())
    assert isinstance(pem_key, Ed25519PublicKey)
    headers = make_signer("cobo", [secret]).sign("e", T0, b'{"a":1}')
    verify_cobo(pub.hex, headers, b'{"a":1}', now=T0)
    verify_cobo(pub.pem, headers, b'{"a":1}', now=T0)


# --- The master key ------------------------------------------------------------


def test_key_file_is_created_with_mode_0600_and_reused(
    make_config: Callable[..., Config],
) -> None:
    config = make_config()
    key_file = Path(config.database.data_dir) / "master.key"
    assert not key_file.exists()
    blob = load_secret_box(config).encrypt("s3cret", b"aad")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text().strip())) == 32
    assert load_secret_box(config).decrypt(blob, b"aad") == "s3cret"
    assert b"s3cret" not in blob


def test_master_key_from_config_is_used_and_no_key_file_made(
    make_config: Callable[..., Config],
) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    config = make_config(signing__master_key=f'"{key}"')
    blob = load_secret_box(config).encrypt("s3cret", b"aad")
    assert not (Path(config.database.data_dir) / "master.key").exists()
    assert SecretBox(bytes(range(32))).decrypt(blob, b"aad") == "s3cret"


@pytest.mark.parametrize("bad", ["not base64!!", base64.b64encode(b"short").decode()])
def test_malformed_master_key_names_the_setting(
    make_config: Callable[..., Config], bad: str
) -> None:
    config = make_config(signing__master_key=f'"{bad}"')
    with pytest.raises(ConfigError) as err:
        load_secret_box(config)
    assert err.value.field == "signing.master_key"
    assert "signing.master_key" in str(err.value)
    assert bad not in str(err.value)


def test_wrong_master_key_fails_with_a_clear_error(config: Config) -> None:
    blob = load_secret_box(config).encrypt("s3cret", b"aad")
    other = dataclasses.replace(
        config,
        signing=dataclasses.replace(
            config.signing, master_key=base64.b64encode(b"\x01" * 32).decode()
        ),
    )
    with pytest.raises(SecretDecryptionError) as err:
        load_secret_box(other).decrypt(blob, b"aad")
    assert err.value.field == "signing.master_key"
    assert "not the key the secret was encrypted with" in str(err.value)
    with pytest.raises(SecretDecryptionError):
        load_secret_box(config).decrypt(blob, b"other row")
