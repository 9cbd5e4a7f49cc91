"""Shared by the API tests (holds no tests itself): one daemon subprocess per test
module on its own database, and per test a fresh tenant with an API key, so tests
sharing a daemon cannot see each other's objects."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest

from dispatcher.store.tenants import create_api_key, create_operator_key
from tests.conftest import TEST_ENV
from tests.support.daemon import DaemonProcess

if TYPE_CHECKING:  # imported by name, pytest would try to collect it here
    from tests.support.pg import TestPostgres


@dataclass
class ApiServer:
    url: str
    dsn: str
    daemon: DaemonProcess


@dataclass
class Reply:
    status: int
    body: Any  # parsed JSON, or text when the answer is not JSON
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "error" in self.body, self.body
        err: dict[str, Any] = self.body["error"]
        assert set(err) == {"code", "message", "field"}, err
        return err


class Api:
    """An HTTP client for one tenant."""

    def __init__(self, http: aiohttp.ClientSession, server: ApiServer, key: str,
                 tenant: str) -> None:
        self.http = http
        self.server = server
        self.key = key
        self.tenant = tenant

    async def call(self, method: str, path: str, *, json_body: Any = None,
                   data: bytes | str | None = None, headers: dict[str, str] | None = None,
                   key: str | None = None, auth: bool = True) -> Reply:
        sent = dict(headers or {})
        if auth:
            sent.setdefault("Authorization", f"Bearer {key or self.key}")
        if json_body is not None:
            data = json.dumps(json_body)
            sent.setdefault("Content-Type", "application/json")
        async with self.http.request(method, self.server.url + path, data=data,
                                     headers=sent) as resp:
            raw = await resp.read()
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            return Reply(resp.status, body, dict(resp.headers))

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json_body=body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)

    async def create_endpoint(self, url: str, **fields: Any) -> dict[str, Any]:
        reply = await self.post("/v1/endpoints", {"url": url, **fields})
        assert reply.status == 201, reply
        body: dict[str, Any] = reply.body
        return body

    async def publish(self, type_: str, data: Any, **kw: Any) -> dict[str, Any]:
        reply = await self.post("/v1/events", {"type": type_, "data": data}, **kw)
        assert reply.status == 202, reply
        body: dict[str, Any] = reply.body
        return body

    async def wait_for_status(self, endpoint_id: str, event_id: str, status: str,
                              timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            reply = await self.get(f"/v1/endpoints/{endpoint_id}/events/{event_id}")
            assert reply.status == 200, reply
            if reply.body["status"] == status:
                body: dict[str, Any] = reply.body
                return body
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"still {reply.body['status']}, wanted {status}")
            await asyncio.sleep(0.05)


def start_server(pg: TestPostgres, tmp: Path, **env: str) -> Iterator[ApiServer]:
    dsn = asyncio.run(pg.clone())
    full = {**TEST_ENV, "DISPATCHER_DATABASE_URL": dsn, "DISPATCHER_DATA_DIR": str(tmp / "data"),
            **env}
    daemon = DaemonProcess(full, tmp / "daemon.log")
    asyncio.run(daemon.start())
    try:
        yield ApiServer(daemon.url, dsn, daemon)
    finally:
        asyncio.run(daemon.stop())
        asyncio.run(pg.drop(dsn))


@pytest.fixture(scope="module")
def api_server(pg: TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One daemon for the test module (delivery engine on, private networks allowed)."""
    yield from start_server(pg, tmp_path_factory.mktemp("api"))


async def new_api(http: aiohttp.ClientSession, server: ApiServer) -> Api:
    tenant = "t-" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(server.dsn)
    try:
        key = await create_api_key(conn, tenant)
    finally:
        await conn.close()
    return Api(http, server, key, tenant)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(http: aiohttp.ClientSession, api_server: ApiServer) -> Api:
    """A fresh tenant with its own key on the module's daemon."""
    return await new_api(http, api_server)


@pytest.fixture
async def other(http: aiohttp.ClientSession, api_server: ApiServer) -> Api:
    """A second tenant, for isolation checks."""
    return await new_api(http, api_server)


@pytest.fixture
async def op(http: aiohttp.ClientSession, api_server: ApiServer) -> Api:
    """An operator key (its `tenant` is where `new_tenant` names things)."""
    conn = await asyncpg.connect(api_server.dsn)
    try:
        key = await create_operator_key(conn, "test")
    finally:
        await conn.close()
    return Api(http, api_server, key, "default")
