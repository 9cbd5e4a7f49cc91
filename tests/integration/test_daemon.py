"""The daemon as a real process: health endpoints, the first-start admin key,
readiness when the database goes away, graceful shutdown, and the embedded
PostgreSQL that keeps its data across restarts (and crashes)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatcher.store.embedded import EmbeddedPostgres
from dispatcher.store.tenants import authenticate
from tests.conftest import TEST_ENV
from tests.support.daemon import DaemonProcess

KEY_LINE = re.compile(r"admin API key \(operator, shown once\): (dk_\S+)")


async def get(url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as resp:
        return resp.status, await resp.json()


def admin_key(daemon: DaemonProcess) -> str | None:
    found = KEY_LINE.findall(daemon.log())
    assert len(found) <= 1
    return found[0] if found else None


async def wait_for_log(daemon: DaemonProcess, text: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while text not in daemon.log():
            await asyncio.sleep(0.02)


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the PostgreSQL running on `pgdata`, or None when it is stopped."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def kill_leftover_postgres(pgdata: Path) -> None:
    """Teardown for a failed test: never leave a server running."""
    pid = postmaster_pid(pgdata)
    if pid is not None:
        os.kill(pid, signal.SIGQUIT)


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A directory for an embedded PostgreSQL of the test's own. Not under pytest's
    tmp tree: pytest resets that tree's permissions (at the start of any other pytest
    session, too), and when the tests run as root the server runs as another user."""
    root = Path(tempfile.mkdtemp(prefix="dispatcher-test-"))
    yield root
    kill_leftover_postgres(root / "own" / "pg")
    kill_leftover_postgres(root / "data" / "pg")
    shutil.rmtree(root, ignore_errors=True)


# --- health -------------------------------------------------------------------------------


async def test_healthz_and_readyz(daemon_factory: Callable[..., Any]) -> None:
    daemon: DaemonProcess = await daemon_factory()
    assert await get(daemon.url + "/healthz") == (200, {"status": "ok"})
    assert await get(daemon.url + "/readyz") == (200, {"status": "ok"})
    async with aiohttp.ClientSession() as http:
        async with http.get(daemon.url + "/healthz", headers={"X-Request-Id": "abc123"}) as r:
            assert r.headers["X-Request-Id"] == "abc123"
        async with http.get(daemon.url + "/nope") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"


async def test_first_start_prints_an_admin_key_and_later_starts_do_not(
    daemon_factory: Callable[..., Any], db_url: str
) -> None:
    first: DaemonProcess = await daemon_factory()
    key = admin_key(first)
    assert key is not None, first.log()
    assert first.log().count(key) == 1  # shown once, never in the structured log lines
    assert await first.stop() == 0

    second: DaemonProcess = await daemon_factory()
    assert admin_key(second) is None
    assert "admin API key" not in second.log()

    conn = await asyncpg.connect(db_url)
    try:
        tenant_id = await authenticate(conn, key)
        assert tenant_id is not None
        assert await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tenant_id) == "default"
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1
    finally:
        await conn.close()


async def test_readyz_goes_503_when_the_database_stops(
    daemon_factory: Callable[..., Any], pg_home: Path
) -> None:
    """Its own embedded server, so that the session's server is left alone."""
    server = EmbeddedPostgres(pg_home / "own")
    dsn = await asyncio.to_thread(server.start)
    try:
        daemon: DaemonProcess = await daemon_factory(DISPATCHER_DATABASE_URL=dsn)
        assert (await get(daemon.url + "/readyz"))[0] == 200

        await asyncio.to_thread(server.stop)
        started = time.monotonic()
        status, body = await get(daemon.url + "/readyz")
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["reason"].startswith("database")
        assert time.monotonic() - started < 3  # answers promptly, does not hang
        assert await get(daemon.url + "/healthz") == (200, {"status": "ok"})  # still alive
        # Publishing meanwhile: 503 with a code and Retry-After, so publishers retry.
        key = admin_key(daemon)
        async with aiohttp.ClientSession() as http, http.post(
                daemon.url + "/v1/events", json={"type": "transaction", "data": {}},
                headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "database_unavailable"
            assert int(resp.headers["Retry-After"]) >= 1

        # The database comes back: readiness follows without a restart.
        assert await asyncio.to_thread(server.start) == dsn
        async with asyncio.timeout(10):
            while (await get(daemon.url + "/readyz"))[0] != 200:
                await asyncio.sleep(0.1)
        assert await daemon.stop() == 0
    finally:
        await asyncio.to_thread(server.stop)
        kill_leftover_postgres(server.pgdata)


# --- graceful shutdown --------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_gracefully_within_the_grace_period(
    daemon_factory: Callable[..., Any], sig: int
) -> None:
    grace = 3.0
    daemon: DaemonProcess = await daemon_factory(
        DISPATCHER_SERVER__GRACE_PERIOD_SECONDS=str(grace), DISPATCHER_LOG__LEVEL="info")
    async with aiohttp.ClientSession() as http:
        # An idle keep-alive connection must not hold the shutdown for the grace period.
        async with http.get(daemon.url + "/healthz") as resp:
            assert resp.status == 200
        started = time.monotonic()
        assert await daemon.stop(sig) == 0
        assert time.monotonic() - started < grace
    log = daemon.log()
    assert log.index('"daemon.stopping"') < log.index('"daemon.stopped"')
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(daemon.url + "/healthz")


async def test_in_flight_requests_finish_and_new_ones_are_refused_during_shutdown(
    daemon_factory: Callable[..., Any], db_url: str
) -> None:
    """Hold a lock that /readyz's query waits on, so a request is provably in flight
    when SIGTERM arrives; release it and that request still gets its answer."""
    daemon: DaemonProcess = await daemon_factory(
        DISPATCHER_SERVER__GRACE_PERIOD_SECONDS="5", DISPATCHER_LOG__LEVEL="info")
    conn = await asyncpg.connect(db_url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        in_flight = asyncio.create_task(get(daemon.url + "/readyz"))
        async with asyncio.timeout(5):  # wait until the daemon's query is blocked on us
            while not await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                " WHERE c.relname = 'schema_migrations' AND NOT l.granted"
            ):
                await asyncio.sleep(0.02)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        await wait_for_log(daemon, '"daemon.stopping"')
        async with asyncio.timeout(3):  # the listening socket closes right after that line
            while True:
                try:
                    await get(daemon.url + "/healthz")
                except aiohttp.ClientConnectionError:
                    break  # no longer accepting
                await asyncio.sleep(0.02)
        assert not in_flight.done()
        await tx.rollback()  # let the in-flight request finish
        assert await in_flight == (200, {"status": "ok"})
        assert await daemon.stop() == 0
        assert time.monotonic() - started < 5
    finally:
        await conn.close()
    assert '"daemon.stopped"' in daemon.log()


# --- embedded PostgreSQL ------------------------------------------------------------------


@pytest.fixture
async def embedded_daemon(
    pg_home: Path,
) -> AsyncIterator[Callable[[Path, Path], DaemonProcess]]:
    """Daemons on the embedded server of a data directory; any still running when the
    test ends (a failed assertion) are stopped before pg_home's teardown."""
    made: list[DaemonProcess] = []

    def make(data_dir: Path, log: Path) -> DaemonProcess:
        # An empty DISPATCHER_DATABASE_URL means "no URL": use the embedded server.
        env = {**TEST_ENV, "DISPATCHER_DATABASE_URL": "", "DISPATCHER_DATA_DIR": str(data_dir),
               "DISPATCHER_LOG__LEVEL": "info"}
        made.append(DaemonProcess(env, log))
        return made[-1]

    yield make
    for daemon in made:
        await daemon.stop(signal.SIGKILL)


async def key_works(data_dir: Path, key: str) -> bool:
    """Attach to the daemon's running embedded server (shared, not restarted)."""
    server = EmbeddedPostgres(data_dir)
    dsn = await asyncio.to_thread(server.start)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            return await authenticate(conn, key) is not None
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)  # leaves it running for the daemon


async def test_without_a_database_url_the_embedded_server_keeps_data_across_restarts(
    tmp_path: Path, pg_home: Path,
    embedded_daemon: Callable[[Path, Path], DaemonProcess],
) -> None:
    data = pg_home / "data"
    pgdata = data / "pg"
    first = embedded_daemon(data, tmp_path / "run1.log")
    await first.start(timeout=60)
    key = admin_key(first)
    assert key is not None, first.log()
    assert (pgdata / "PG_VERSION").is_file()  # initdb'd inside DISPATCHER_DATA_DIR
    assert postmaster_pid(pgdata) is not None
    assert await first.stop() == 0
    assert postmaster_pid(pgdata) is None  # stopped with the daemon
    assert '"embedded_postgres.stopped"' in first.log()

    second = embedded_daemon(data, tmp_path / "run2.log")
    await second.start(timeout=60)
    assert admin_key(second) is None  # found its data: not a first start
    assert await key_works(data, key)
    assert postmaster_pid(pgdata) is not None
    assert await second.stop() == 0
    assert postmaster_pid(pgdata) is None


async def test_after_a_crash_the_next_daemon_reuses_and_then_stops_the_embedded_server(
    tmp_path: Path, pg_home: Path,
    embedded_daemon: Callable[[Path, Path], DaemonProcess],
) -> None:
    data = pg_home / "data"
    pgdata = data / "pg"
    first = embedded_daemon(data, tmp_path / "run1.log")
    await first.start(timeout=60)
    key = admin_key(first)
    assert key is not None
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    orphan = postmaster_pid(pgdata)
    assert orphan is not None  # a killed daemon cannot stop its server

    second = embedded_daemon(data, tmp_path / "run2.log")
    await second.start(timeout=60)
    assert postmaster_pid(pgdata) == orphan  # reused, not a second server
    assert await key_works(data, key)
    assert await second.stop() == 0
    assert postmaster_pid(pgdata) is None  # and stopped on a clean shutdown


async def test_two_daemons_share_one_embedded_server_until_the_last_one_stops(
    tmp_path: Path, pg_home: Path,
    embedded_daemon: Callable[[Path, Path], DaemonProcess],
) -> None:
    """Several processes on one machine (one per core) may share a data directory."""
    data = pg_home / "data"
    pgdata = data / "pg"
    first = embedded_daemon(data, tmp_path / "a.log")
    await first.start(timeout=60)
    second = embedded_daemon(data, tmp_path / "b.log")
    await second.start(timeout=60)
    server_pid = postmaster_pid(pgdata)
    assert server_pid is not None
    assert admin_key(first) is not None and admin_key(second) is None

    assert await first.stop() == 0
    assert postmaster_pid(pgdata) == server_pid  # still needed by the second
    assert (await get(second.url + "/readyz"))[0] == 200
    assert await second.stop() == 0
    assert postmaster_pid(pgdata) is None  # the last one out stops it
