"""The migration runner: numeric order, idempotence, a transaction per file,
checksum drift refusal (also by /readyz and the CLI), two processes migrating one
fresh database at once, and where the packaged migrations are found."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dispatcher.api.app import create_app
from dispatcher.config import Config
from dispatcher.errors import MigrationError
from dispatcher.store.migrate import (
    MIGRATION_LOCK_KEY,
    load_migrations,
    migrate,
    migrations_dir,
    pending_migrations,
)

if TYPE_CHECKING:  # not imported at run time: pytest would try to collect it
    from tests.support.pg import TestPostgres

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def empty_db(pg: TestPostgres) -> AsyncIterator[str]:
    """A brand-new database with no tables at all; dropped afterwards."""
    name = "m_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(pg.uri())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield pg.uri(name)
    admin = await asyncpg.connect(pg.uri())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(empty_db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(empty_db)
    yield c
    await c.close()


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


# Written out of order on purpose; 0010 must come after 0002 (not "0010" < "0002").
FAKE = {
    "0010_tenth.sql": "INSERT INTO applied_order (name) VALUES ('tenth');",
    "0001_first.sql": "CREATE TABLE applied_order (n serial PRIMARY KEY, name text NOT NULL);",
    "0002_second.sql": "INSERT INTO applied_order (name) VALUES ('second');",
}


async def recorded(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT name, checksum FROM schema_migrations ORDER BY name")
    return {r["name"]: r["checksum"] for r in rows}


async def lock_is_free(dsn: str) -> bool:
    other = await asyncpg.connect(dsn)
    try:
        got: bool = await other.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
        if got:
            await other.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        return got
    finally:
        await other.close()


# --- order, idempotence, transactions -----------------------------------------------------


async def test_migrations_apply_in_numeric_order(
    conn: asyncpg.Connection, tmp_path: Path, empty_db: str
) -> None:
    directory = write_migrations(tmp_path / "m", FAKE)
    applied = await migrate(conn, load_migrations(directory))
    assert applied == ["0001_first.sql", "0002_second.sql", "0010_tenth.sql"]
    rows = await conn.fetch("SELECT name FROM applied_order ORDER BY n")
    assert [r["name"] for r in rows] == ["second", "tenth"]
    checksums = {n: hashlib.sha256(sql.encode()).hexdigest() for n, sql in FAKE.items()}
    assert await recorded(conn) == checksums
    assert await lock_is_free(empty_db)


async def test_rerunning_applies_nothing_and_new_files_apply_alone(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "m", FAKE)
    await migrate(conn, load_migrations(directory))
    assert await migrate(conn, load_migrations(directory)) == []
    assert await conn.fetchval("SELECT count(*) FROM applied_order") == 2

    write_migrations(directory, {"0011_more.sql": "INSERT INTO applied_order (name) VALUES ('x');"})
    assert await pending_migrations(conn, load_migrations(directory)) == [
        m for m in load_migrations(directory) if m.name == "0011_more.sql"
    ]
    assert await migrate(conn, load_migrations(directory)) == ["0011_more.sql"]
    assert await conn.fetchval("SELECT count(*) FROM applied_order") == 3
    assert await migrate(conn, load_migrations(directory)) == []


async def test_a_failing_migration_rolls_back_alone_and_releases_the_lock(
    conn: asyncpg.Connection, tmp_path: Path, empty_db: str
) -> None:
    directory = write_migrations(tmp_path / "m", {
        **FAKE,
        "0011_bad.sql": "CREATE TABLE half_done (x int);\nSELECT no_such_column FROM half_done;",
    })
    with pytest.raises(asyncpg.PostgresError):
        await migrate(conn, load_migrations(directory))
    assert set(await recorded(conn)) == {"0001_first.sql", "0002_second.sql", "0010_tenth.sql"}
    assert await conn.fetchval("SELECT to_regclass('half_done')") is None  # rolled back
    assert await lock_is_free(empty_db)

    # Not applied yet, so fixing the file is allowed; the next run applies it.
    write_migrations(directory, {"0011_bad.sql": "CREATE TABLE half_done (x int);"})
    assert await migrate(conn, load_migrations(directory)) == ["0011_bad.sql"]


@pytest.mark.parametrize(
    "files",
    [
        {"1_short.sql": "SELECT 1;"},
        {"0001-dash.sql": "SELECT 1;"},
        {"0001_Upper.sql": "SELECT 1;"},
        {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"},
    ],
)
def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path, files: dict[str, str]) -> None:
    with pytest.raises(MigrationError):
        load_migrations(write_migrations(tmp_path / "m", files))


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {**FAKE, "README.md": "notes", "x.sql~": ""})
    assert [m.name for m in load_migrations(directory)] == sorted(FAKE)


# --- drift --------------------------------------------------------------------------------


async def test_an_edited_applied_migration_is_refused(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    directory = write_migrations(tmp_path / "m", FAKE)
    await migrate(conn, load_migrations(directory))
    write_migrations(directory, {
        "0002_second.sql": "INSERT INTO applied_order (name) VALUES ('edited');",
        "0011_next.sql": "INSERT INTO applied_order (name) VALUES ('next');",
    })
    with pytest.raises(MigrationError, match=r"0002_second\.sql") as info:
        await migrate(conn, load_migrations(directory))
    assert "edited after it was applied" in info.value.message
    # Nothing else ran: the pending 0011 was not applied either.
    assert "0011_next.sql" not in await recorded(conn)
    assert await conn.fetchval("SELECT count(*) FROM applied_order") == 2
    with pytest.raises(MigrationError, match=r"0002_second\.sql"):
        await pending_migrations(conn, load_migrations(directory))


async def test_readyz_fails_on_drift_and_on_pending_migrations(
    db_url: str, config: Config
) -> None:
    """db_url is fully migrated from the real migrations directory; tamper with
    its records the way an edited file or a missing migration would look."""
    app = create_app(config, db_url)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 200, await resp.text()

        first = load_migrations()[0].name
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(
                "UPDATE schema_migrations SET checksum = 'edited' WHERE name = $1", first)
            resp = await client.get("/readyz")
            assert resp.status == 503
            body = await resp.json()
            assert first in body["reason"] and "edited" in body["reason"]
            assert (await client.get("/healthz")).status == 200  # alive, just not ready

            last = load_migrations()[-1]
            await conn.execute(
                "UPDATE schema_migrations SET checksum = $2 WHERE name = $1",
                first, load_migrations()[0].checksum)
            await conn.execute("DELETE FROM schema_migrations WHERE name = $1", last.name)
            resp = await client.get("/readyz")
            assert resp.status == 503
            assert (await resp.json())["pending"] == [last.name]
        finally:
            await conn.close()


def run_cli(args: list[str], dsn: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPATCHER_DATABASE_URL": dsn,
           "DISPATCHER_DATA_DIR": str(tmp_path / "data"), "DISPATCHER_LOG__LEVEL": "warning"}
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_migrate_and_serve_refuse_to_start_on_drift(db_url: str, tmp_path: Path) -> None:
    first = load_migrations()[0].name
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE name = $1", first)
    finally:
        await conn.close()
    for args in (["migrate"], ["serve", "--port", "0"]):
        result = await asyncio.to_thread(run_cli, args, db_url, tmp_path)
        assert result.returncode == 2, result
        assert result.stderr.startswith("error: "), result.stderr
        assert f"migration {first} was edited" in result.stderr


# --- concurrency --------------------------------------------------------------------------


async def test_two_processes_migrating_one_fresh_database_at_once(
    empty_db: str, tmp_path: Path
) -> None:
    """Hold the advisory lock while both processes start, so that both are
    provably waiting on it before either can run; then let them race."""
    env = {**os.environ, "DISPATCHER_DATABASE_URL": empty_db,
           "DISPATCHER_DATA_DIR": str(tmp_path / "data"), "DISPATCHER_LOG__LEVEL": "warning"}
    holder = await asyncpg.connect(empty_db)
    procs: list[asyncio.subprocess.Process] = []
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        for _ in range(2):
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dispatcher", "migrate", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE))
        async with asyncio.timeout(30):
            while await holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ) < 2:
                assert all(p.returncode is None for p in procs), "a migrate process exited early"
                await asyncio.sleep(0.05)
    finally:
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        results = [await p.communicate() for p in procs]
    try:
        outputs = sorted(out.decode().strip() for out, _ in results)
        for p, (_, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err.decode()
        names = [m.name for m in load_migrations()]
        # One process applied everything, the other found nothing to do.
        assert outputs == sorted(["applied: " + ", ".join(names), "already up to date"])
        rows = await holder.fetch("SELECT name, checksum FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in rows] == names  # each exactly once (name is the key)
        assert [r["checksum"] for r in rows] == [m.checksum for m in load_migrations()]
        assert await holder.fetchval("SELECT to_regclass('api_keys')") is not None
    finally:
        await holder.close()


# --- where the migrations come from -------------------------------------------------------


def test_migrations_resolve_from_the_source_checkout() -> None:
    assert migrations_dir() == ROOT / "migrations"
    names = [m.name for m in load_migrations()]
    assert names == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert names[0] == "0001_init.sql"


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:  # e.g. no network to fetch the build backend
        pytest.skip(f"could not build a wheel here: {result.stderr[-500:]}")
    (wheel,) = out.glob("dispatcher-*.whl")
    return wheel


def test_migrations_resolve_from_a_built_wheel(built_wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(built_wheel) as zf:
        zf.extractall(site)
    probe = (
        "import dispatcher, dispatcher.config as c\n"
        "from dispatcher.store.migrate import migrations_dir, load_migrations\n"
        "print(dispatcher.__file__)\n"
        "print(migrations_dir())\n"
        "print(','.join(m.name + ':' + m.checksum for m in load_migrations()))\n"
        "print(c.load_config(environ={}) == c.Config())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    module_file, directory, migrations, config_ok = result.stdout.splitlines()
    assert Path(module_file).is_relative_to(site)  # the wheel's copy, not the checkout
    assert Path(directory) == site / "dispatcher" / "migrations"
    shipped = dict(item.split(":") for item in migrations.split(","))
    assert shipped == {m.name: m.checksum for m in load_migrations(ROOT / "migrations")}
    assert config_ok == "True"  # config/ shipped beside config.py does not shadow it
    assert (site / "dispatcher" / "config" / "default.toml").is_file()

