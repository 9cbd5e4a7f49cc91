"""Fixtures for every test. The embedded PostgreSQL is started once per session;
each test that asks for `db_url` gets its own database cloned from a migrated
template."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatcher.config import Config, load_config
from dispatcher.store.pool import create_pool
from tests.support.daemon import DaemonProcess
from tests.support.pg import TestPostgres
from tests.support.receiver import Receiver

# What every test config allows: local receivers on random ports over plain http.
TEST_ENV = {
    "DISPATCHER_URLS__ALLOW_HTTP": "true",
    "DISPATCHER_URLS__ALLOW_ANY_PORT": "true",
    "DISPATCHER_URLS__ALLOW_PRIVATE_NETWORKS": "true",
    "DISPATCHER_DELIVERY__POLL_INTERVAL_SECONDS": "0.05",
    "DISPATCHER_LOG__LEVEL": "warning",
    # Tests fail authentication on purpose, all from 127.0.0.1; test_api_abuse.py
    # turns the per-address limit on for itself.
    "DISPATCHER_SERVER__AUTH_FAILURE_LIMIT": "0",
}


@pytest.fixture(scope="session")
def pg() -> Iterator[TestPostgres]:
    # Not under pytest's tmp dir: pytest resets that tree's permissions, and the
    # server runs as another user when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="dispatcher-test-pg-"))
    server = TestPostgres(root)
    server.build_template()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def db_url(pg: TestPostgres) -> AsyncIterator[str]:
    dsn = await pg.clone()
    yield dsn
    await pg.drop(dsn)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Config for tests; keyword arguments are DISPATCHER_* style overrides
    given as section__key=value strings (TOML literals)."""

    def make(**overrides: str) -> Config:
        env = {**TEST_ENV, "DISPATCHER_DATA_DIR": str(tmp_path / "data")}
        env.update({f"DISPATCHER_{k.upper()}": v for k, v in overrides.items()})
        return load_config(environ=env)

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
async def pool(db_url: str, config: Config) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(db_url, dataclasses.replace(config.database, pool_min_size=1))
    yield p
    await p.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def make_receiver() -> AsyncIterator[Callable[[], Any]]:
    started: list[Receiver] = []

    async def make() -> Receiver:
        r = Receiver()
        await r.start()
        started.append(r)
        return r

    yield make
    for r in started:
        await r.stop()


@pytest.fixture
async def daemon_factory(
    db_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Start daemon subprocesses on the test's database: `await daemon_factory(**env)`."""
    started: list[DaemonProcess] = []

    async def start(**env: str) -> DaemonProcess:
        full = {**TEST_ENV, "DISPATCHER_DATABASE_URL": db_url,
                "DISPATCHER_DATA_DIR": str(tmp_path / "data"), **env}
        d = DaemonProcess(full, tmp_path / f"daemon{len(started)}.log")
        await d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop()
