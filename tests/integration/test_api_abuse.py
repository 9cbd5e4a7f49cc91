"""A careless or hostile client against `dispatcher serve`: key guessing is logged and
slowed per address (X-Forwarded-For only from trusted proxies), half-sent requests
are cut off, connections are capped, and the parser's refusals are JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer

if TYPE_CHECKING:  # imported by name, pytest would try to collect it here
    from tests.support.pg import TestPostgres

http, api = support.http, support.api

LIMIT = 5
HEADER_TIMEOUT = 0.5
MAX_CONNECTIONS = 30


@pytest.fixture(scope="module")
def api_server(pg: TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from support.start_server(
        pg, tmp_path_factory.mktemp("abuse"),
        DISPATCHER_SERVER__WORKERS="1",
        DISPATCHER_SERVER__AUTH_FAILURE_LIMIT=str(LIMIT),
        DISPATCHER_SERVER__TRUSTED_PROXIES='["127.0.0.1/32"]',
        DISPATCHER_SERVER__HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        DISPATCHER_SERVER__BODY_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        DISPATCHER_SERVER__MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )


async def _open(server: ApiServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def _parse(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_guessing_keys_is_logged_then_refused_429_for_that_address_only(
    api: Api, api_server: ApiServer
) -> None:
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    for n in range(LIMIT):
        reply = await api.get("/v1/endpoints", key=f"dk_guess{n}_SECRETPART", headers=guesser)
        assert reply.status == 401, reply
    refused = await api.get("/v1/endpoints", key="dk_guess_again", headers=guesser)
    assert refused.status == 429 and refused.error["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The address is refused even with a valid key; probes still answer.
    assert (await api.get("/v1/endpoints", headers=guesser)).status == 429
    assert (await api.get("/healthz", headers=guesser, auth=False)).status == 200
    # Another client behind the same trusted proxy is not affected ...
    assert (await api.get("/v1/endpoints", headers={"X-Forwarded-For": "198.51.100.8"})
            ).status == 200
    # ... and a forged X-Forwarded-For left of the proxy's entry does not help.
    forged = {"X-Forwarded-For": "203.0.113.1, 198.51.100.7"}
    assert (await api.get("/v1/endpoints", headers=forged)).status == 429

    await asyncio.sleep(0.2)
    log = api_server.daemon.log()
    failures = [json.loads(line) for line in log.splitlines()
                if line.startswith("{") and '"auth.failed"' in line]
    assert len(failures) == LIMIT
    assert {f["remote"] for f in failures} == {"198.51.100.7"}
    assert failures[0]["key_prefix"] == "dk_guess0_S"[: len(failures[0]["key_prefix"])]
    assert "SECRETPART" not in log


async def test_a_half_sent_request_is_answered_408_and_closed(api_server: ApiServer) -> None:
    reader, writer = await _open(api_server)
    try:
        writer.write(b"GET /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bea")
        await writer.drain()
        t0 = asyncio.get_running_loop().time()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
        waited = asyncio.get_running_loop().time() - t0
    finally:
        writer.close()
    status, body = _parse(raw)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert HEADER_TIMEOUT * 0.8 <= waited < HEADER_TIMEOUT + 2


async def test_a_body_that_stops_arriving_is_answered_408(api: Api, api_server: ApiServer
                                                          ) -> None:
    reader, writer = await _open(api_server)
    try:
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + api.key.encode() + b"\r\n"
                     b"Content-Length: 100\r\n\r\n{\"type\": ")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    status, body = _parse(raw)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert (await api.get("/v1/events")).body["data"] == []


async def test_keep_alive_requests_are_not_cut_off_between_requests(api_server: ApiServer
                                                                    ) -> None:
    reader, writer = await _open(api_server)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.split()[1] == b"200"
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            await asyncio.sleep(HEADER_TIMEOUT * 2)  # idle, not half-sent: stays open
    finally:
        writer.close()


async def test_connections_beyond_the_cap_are_answered_503(api_server: ApiServer) -> None:
    held = [await _open(api_server) for _ in range(MAX_CONNECTIONS)]
    try:
        reader, writer = await _open(api_server)
        raw = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        status, body = _parse(raw)
        assert status == 503 and body["error"]["code"] == "too_many_connections"
    finally:
        for _, w in held:
            w.close()
    for _ in range(50):  # the held ones are gone: new connections are served again
        await asyncio.sleep(0.05)
        reader, writer = await _open(api_server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await reader.read()
        writer.close()
        if raw.split()[1] == b"200":
            break
    else:
        raise AssertionError("still refused after the held connections closed")


async def test_a_header_past_8_kb_gets_the_json_error_body(api_server: ApiServer) -> None:
    reader, writer = await _open(api_server)
    try:
        writer.write(b"GET /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dk_"
                     + b"x" * 9000 + b"\r\n\r\n")
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    status, body = _parse(raw)
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert set(body["error"]) == {"code", "message", "field"}
    assert "xxxx" not in body["error"]["message"]
