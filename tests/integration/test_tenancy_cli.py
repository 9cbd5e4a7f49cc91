"""Operator keys from the command line and on the first start."""

from __future__ import annotations

import json

import asyncpg

from dispatcher.daemon import bootstrap_admin_key
from dispatcher.store.tenants import authenticate, authenticate_key
from tests.integration.test_cli import Run, cli, conn, ok, snapshot  # noqa: F401  (fixtures)


async def test_keys_create_operator_lists_and_revokes(
    cli: Run, conn: asyncpg.Connection,  # noqa: F811
) -> None:
    out = json.loads(ok(await cli("keys", "create", "--operator", "--name", "billing", "--json")))
    assert set(out) == {"kind", "key"} and out["kind"] == "operator"
    owner = await authenticate_key(conn, out["key"])
    assert owner is not None and (owner.kind, owner.tenant_id) == ("operator", None)
    assert await conn.fetchval("SELECT count(*) FROM tenants") == 0  # it belongs to none

    tenant = json.loads(ok(await cli("keys", "create", "--tenant", "acme", "--json")))
    listed = json.loads(ok(await cli("keys", "list", "--json")))
    assert [(k["kind"], k["tenant"], k["name"]) for k in listed] == [
        ("operator", None, "billing"), ("tenant", "acme", "")]
    assert tenant["key"][:11] in ok(await cli("keys", "list", "--tenant", "acme"))
    assert "(operator)" in ok(await cli("keys", "list")).splitlines()[1]  # under the header

    revoked = ok(await cli("keys", "revoke", out["key"][:11]))
    assert "an operator key" in revoked
    assert await authenticate_key(conn, out["key"]) is None

    before = await snapshot(conn)
    both = await cli("keys", "create", "--operator", "--tenant", "acme")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    assert await snapshot(conn) == before


async def test_the_first_start_makes_default_and_an_operator_key_once(
    db_url: str, conn: asyncpg.Connection,  # noqa: F811
) -> None:
    key = await bootstrap_admin_key(db_url)
    assert key is not None
    owner = await authenticate_key(conn, key)
    assert owner is not None and owner.kind == "operator"
    default_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'default'")
    assert await authenticate(conn, key) == default_id
    assert await bootstrap_admin_key(db_url) is None
    # Deleting every tenant leaves the operator's keys, and no new key is made.
    await conn.execute("DELETE FROM tenants")
    assert await bootstrap_admin_key(db_url) is None
    assert await authenticate_key(conn, key) is not None
