"""The `dispatcher` command line as a user runs it: a subprocess against the test
database. Good input does what it says; bad input exits non-zero with `error:` on
stderr and leaves the database as it was."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatcher.store.console_sessions import open_session, session_is_open
from dispatcher.store.tenants import authenticate, create_api_key, find_api_key, list_api_keys

Run = Callable[..., Any]


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Run:
    """`await cli("keys", "list", env={...})` -> CompletedProcess."""

    def run_sync(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        full.update({"DISPATCHER_DATABASE_URL": db_url,
                     "DISPATCHER_DATA_DIR": str(tmp_path / "data"),
                     "DISPATCHER_LOG__LEVEL": "warning", **env})
        return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=full,
                              capture_output=True, text=True, timeout=60)

    async def run(*args: str, env: dict[str, str] | None = None) -> Any:
        return await asyncio.to_thread(run_sync, args, env or {})

    return run


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db_url)
    yield c
    await c.close()


async def snapshot(conn: asyncpg.Connection) -> list[Any]:
    """Everything the key commands could change."""
    tenants = await conn.fetch("SELECT * FROM tenants ORDER BY name")
    keys = await conn.fetch("SELECT * FROM api_keys ORDER BY created_at, id")
    sessions = await conn.fetch("SELECT * FROM console_sessions ORDER BY id")
    return [dict(r) for r in tenants] + [dict(r) for r in keys] + [dict(r) for r in sessions]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


# --- keys ---------------------------------------------------------------------------------


async def test_keys_create_json(cli: Run, conn: asyncpg.Connection) -> None:
    out = json.loads(ok(await cli("keys", "create", "--tenant", "acme", "--json")))
    assert set(out) == {"tenant", "key"}
    assert out["tenant"] == "acme"
    assert out["key"].startswith("dk_")
    tenant_id = await authenticate(conn, out["key"])
    assert tenant_id is not None
    assert await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tenant_id) == "acme"
    # Only a hash is stored.
    stored = await conn.fetch("SELECT prefix, key_hash FROM api_keys")
    assert len(stored) == 1
    assert out["key"].encode() not in bytes(stored[0]["key_hash"])
    assert stored[0]["prefix"] == out["key"][:11]


async def test_keys_create_plain_prints_just_the_key_and_reuses_the_tenant(
    cli: Run, conn: asyncpg.Connection
) -> None:
    first = ok(await cli("keys", "create", "--tenant", "acme", "--name", "ci")).strip()
    second = ok(await cli("keys", "create", "--tenant", " acme ")).strip()
    assert first.startswith("dk_") and second.startswith("dk_") and first != second
    assert await conn.fetchval("SELECT count(*) FROM tenants") == 1
    assert await authenticate(conn, first) == await authenticate(conn, second)


async def test_keys_list(cli: Run) -> None:
    a = json.loads(ok(await cli("keys", "create", "--tenant", "acme", "--name", "ops", "--json")))
    b = json.loads(ok(await cli("keys", "create", "--tenant", "beta", "--json")))

    listed = json.loads(ok(await cli("keys", "list", "--json")))
    assert [(k["tenant"], k["prefix"], k["name"]) for k in listed] == [
        ("acme", a["key"][:11], "ops"), ("beta", b["key"][:11], "")]
    assert all(k["revoked_at"] is None for k in listed)
    text = json.dumps(listed)
    assert a["key"] not in text and b["key"] not in text  # keys are never shown again

    only_beta = json.loads(ok(await cli("keys", "list", "--tenant", "beta", "--json")))
    assert [k["prefix"] for k in only_beta] == [b["key"][:11]]
    assert json.loads(ok(await cli("keys", "list", "--tenant", "nobody", "--json"))) == []

    plain = ok(await cli("keys", "list"))
    lines = plain.strip().splitlines()
    assert len(lines) == 3 and lines[0].split() == ["ID", "PREFIX", "TENANT", "STATE", "NAME"]
    assert a["key"][:11] in lines[1] and "acme" in lines[1] and "active" in lines[1]
    state_at = lines[0].index("STATE")  # aligned: every state starts under its header
    assert all(line[state_at:].startswith("active") for line in lines[1:])
    assert a["key"] not in plain
    ok(await cli("keys", "revoke", a["key"][:11]))
    assert "revoked" in ok(await cli("keys", "list", "--tenant", "acme"))


@pytest.mark.parametrize("by", ["prefix", "id", "key"])
async def test_keys_revoke(cli: Run, conn: asyncpg.Connection, by: str) -> None:
    key = await create_api_key(conn, "acme")
    other = await create_api_key(conn, "acme")
    (listed,) = [k for k in await list_api_keys(conn) if k.prefix == key[:11]]
    target = {"prefix": key[:11], "id": str(listed.id), "key": key}[by]

    out = ok(await cli("keys", "revoke", target))
    assert out.startswith(f"revoked {listed.id} ({key[:11]}...) of tenant acme")
    assert await authenticate(conn, key) is None
    assert await authenticate(conn, other) is not None  # only that key
    after = {k["prefix"]: k for k in json.loads(ok(await cli("keys", "list", "--json")))}
    assert after[key[:11]]["revoked_at"] is not None
    assert after[other[:11]]["revoked_at"] is None


async def test_keys_end_sessions_ends_only_that_keys_open_sessions(
    cli: Run, conn: asyncpg.Connection
) -> None:
    key, other = await create_api_key(conn, "acme"), await create_api_key(conn, "acme")
    mine, theirs = await find_api_key(conn, key), await find_api_key(conn, other)
    now = datetime.now(UTC)
    sessions = [await open_session(conn, k.id, k.tenant_id, now, now + timedelta(hours=1))
                for k in (mine, mine, theirs)]

    out = ok(await cli("keys", "end-sessions", key[:11]))
    assert out.strip() == f"ended 2 console session(s) of {mine.id} ({key[:11]}...)"
    later = now + timedelta(seconds=1)
    assert [await session_is_open(conn, s, later) for s in sessions] == [False, False, True]
    assert await authenticate(conn, key) is not None  # the key itself keeps working
    again = json.loads(ok(await cli("keys", "end-sessions", str(theirs.id), "--json")))
    assert again == {"key_id": str(theirs.id), "ended": 1}
    assert not await session_is_open(conn, sessions[2], later)


async def test_keys_revoke_ends_the_keys_sessions(cli: Run, conn: asyncpg.Connection) -> None:
    key = await create_api_key(conn, "acme")
    found = await find_api_key(conn, key)
    now = datetime.now(UTC)
    session = await open_session(conn, found.id, found.tenant_id, now, now + timedelta(hours=1))
    ok(await cli("keys", "revoke", str(found.id)))
    assert not await session_is_open(conn, session, now + timedelta(seconds=1))


# --- config -------------------------------------------------------------------------------


async def test_config_show_redacts_secrets(cli: Run, db_url: str, tmp_path: Path) -> None:
    master = "bWFzdGVyLWtleS1tYXN0ZXIta2V5LW1hc3Rlci1rZXk="
    profile = tmp_path / "p.toml"
    profile.write_text('[delivery]\ndefault_retry_policy = "okx"\n')
    out = ok(await cli("config", "show", env={"DISPATCHER_MASTER_KEY": master,
                                              "DISPATCHER_SERVER__PORT": "9123",
                                              "DISPATCHER_CONFIG": str(profile)}))
    shown = json.loads(out)
    assert shown["signing"]["master_key"] == "***"
    assert shown["database"]["url"] == "***"
    assert master not in out and db_url not in out
    assert shown["server"]["port"] == 9123  # the effective config: env ...
    assert shown["delivery"]["default_retry_policy"] == "okx"  # ... over the file
    assert shown["delivery"]["timeout_seconds"] == 2.0  # ... over the defaults

    via_option = json.loads(ok(await cli("--config", str(profile), "config", "show")))
    assert via_option["delivery"]["default_retry_policy"] == "okx"


# --- bad input changes nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("keys", "create", "--tenant", ""), {}, "tenant name must be 1 to 100 characters"),
        (("keys", "create", "--tenant", "   "), {}, "tenant name must be 1 to 100 characters"),
        (("keys", "create", "--tenant", "x" * 101), {}, "tenant name must be 1 to 100"),
        (("keys", "revoke", "dk_nothing"), {}, "no API key matches 'dk_nothing'"),
        (("keys", "revoke", "00000000-0000-0000-0000-000000000000"), {}, "no API key matches"),
        (("keys", "end-sessions", "dk_nothing"), {}, "no API key matches 'dk_nothing'"),
        (("keys", "end-sessions", "00000000-0000-0000-0000-000000000000"), {},
         "no API key matches"),
        (("keys", "end-sessions", "not-a-uuid"), {}, "no API key matches 'not-a-uuid'"),
        (("keys", "create", "--tenant", "acme"), {"DISPATCHER_SERVER__PORT": "abc"},
         "server.port: expected an integer"),
        (("keys", "create", "--tenant", "acme"), {"DISPATCHER_DELIVERY__NOPE": "1"},
         "delivery.nope: unknown key"),
        (("keys", "revoke", "dk_x"), {"DISPATCHER_DELIVERY__DEFAULT_RETRY_POLICY": "rarely"},
         "delivery.default_retry_policy"),
        (("config", "show"), {"DISPATCHER_HEALTH__WARN_PERCENTAGES": "[150]"},
         "health.warn_percentages"),
        (("keys", "list"), {"DISPATCHER_CONFIG": "/nonexistent/profile.toml"},
         "config file not found"),
    ],
)
async def test_bad_input_fails_cleanly_and_changes_nothing(
    cli: Run, conn: asyncpg.Connection, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    existing = await create_api_key(conn, "keep")
    kept = await find_api_key(conn, existing)
    now = datetime.now(UTC)
    await open_session(conn, kept.id, kept.tenant_id, now, now + timedelta(hours=1))
    before = await snapshot(conn)
    result = await cli(*args, env=env)
    assert result.returncode == 2
    assert message in failed(result)
    assert result.stdout == ""
    assert await snapshot(conn) == before
    assert await authenticate(conn, existing) is not None


async def test_an_unreachable_database_is_one_line_not_a_traceback(
    cli: Run, tmp_path: Path
) -> None:
    missing = f"postgresql://postgres@/nope?host={tmp_path}"  # no server on that socket dir
    result = await cli("keys", "list", env={"DISPATCHER_DATABASE_URL": missing})
    assert result.returncode == 1
    assert len(failed(result).strip().splitlines()) == 1


async def test_missing_required_option_is_a_usage_error(cli: Run) -> None:
    result = await cli("keys", "create")
    assert result.returncode == 2
    assert "Missing option '--tenant'" in result.stderr


async def test_logs_go_to_stderr_and_json_output_is_one_document(
    cli: Run, tmp_path: Path
) -> None:
    """A first command on a fresh embedded database logs its start-up and migrations
    at info level: on stderr, never mixed into the JSON on stdout."""
    result = await cli("keys", "create", "--tenant", "acme", "--json",
                       env={"DISPATCHER_DATABASE_URL": "", "DISPATCHER_LOG__LEVEL": "info",
                            "DISPATCHER_DATA_DIR": str(tmp_path / "fresh")})
    out = json.loads(ok(result))
    assert out["key"].startswith("dk_")
    assert '"migration.applied"' in result.stderr
