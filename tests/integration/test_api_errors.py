"""Every error status of the API through real HTTP: 400, 401, 404, 405, 409, 413,
415, 422, always as {"error": {"code", "message", "field"}}, and nothing changed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from dispatcher.store.tenants import revoke_api_key
from dispatcher.web.keycache import AUTH_CACHE_SECONDS
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer

api_server, http, api, other = support.api_server, support.http, support.api, support.other

URL = "https://hooks.example.com/in"
MAX_BODY = 1048576


async def test_missing_bad_and_revoked_keys_are_401(api: Api, api_server: ApiServer) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"},
                    {"Authorization": "Bearer dk_not_a_real_key"},
                    {"Authorization": "Bearer " + "x" * 500}):
        for method, path in (("GET", "/v1/endpoints"), ("POST", "/v1/events"),
                             ("GET", "/v1/event-types"), ("GET", "/v1/signing-key"),
                             ("GET", "/v1/endpoints/not-a-uuid")):
            reply = await api.call(method, path, headers=headers, auth=False)
            assert reply.status == 401, (headers, path, reply)
            assert reply.error["code"] == "unauthorized"
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.get("/v1/endpoints")).status == 200
    conn = await asyncpg.connect(api_server.dsn)
    try:
        await revoke_api_key(conn, api.key)
    finally:
        await conn.close()
    # A daemon that has just seen the key may accept it for AUTH_CACHE_SECONDS more.
    deadline = asyncio.get_running_loop().time() + AUTH_CACHE_SECONDS + 1
    while (reply := await api.get("/v1/endpoints")).status != 401:
        assert asyncio.get_running_loop().time() < deadline, reply
        await asyncio.sleep(0.1)


async def test_lowercase_bearer_is_accepted(api: Api) -> None:
    reply = await api.get("/v1/endpoints", headers={"Authorization": f"bearer {api.key}"})
    assert reply.status == 200


async def test_malformed_json_is_400(api: Api) -> None:
    bodies = [b"{", b'{"url": }', b"\xff\xfe{}", b'{"url": NaN}', b"[" * 100 + b"]" * 100,
              b'{"url": "\\ud800"}', b"   "]
    for raw in bodies:
        for path in ("/v1/endpoints", "/v1/events", "/v1/events/batch", "/v1/event-types"):
            reply = await api.call("POST", path, data=raw,
                                   headers={"Content-Type": "application/json"})
            assert reply.status == 400, (raw, path, reply)
            assert reply.error["code"] == "bad_request"
    assert (await api.get("/v1/endpoints")).body["data"] == []


async def test_non_json_content_type_is_415(api: Api) -> None:
    body = json.dumps({"url": URL})
    for headers in ({"Content-Type": "text/plain"},
                    {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        reply = await api.call("POST", "/v1/endpoints", data=body.encode(), headers=headers)
        assert reply.status == 415, (headers, reply)
        assert reply.error["code"] == "unsupported_media_type"
    ok = await api.call("POST", "/v1/endpoints", data=body,
                        headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status == 201


async def test_body_over_the_limit_is_413(api: Api) -> None:
    big = json.dumps({"type": "transaction", "data": "x" * MAX_BODY}).encode()
    reply = await api.call("POST", "/v1/events", data=big,
                           headers={"Content-Type": "application/json"})
    assert reply.status == 413, reply
    assert reply.error["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: aiohttp's own limit
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    async with aiohttp.ClientSession() as session, session.post(
        api.server.url + "/v1/events", data=chunks(),
        headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
        err = (await resp.json())["error"]
        assert err["code"] == "payload_too_large"
    assert (await api.get("/v1/events")).body["data"] == []
    just_under = json.dumps({"type": "transaction", "data": "x" * (MAX_BODY - 100)})
    assert len(just_under) < MAX_BODY
    assert (await api.post("/v1/events", json.loads(just_under))).status == 202


async def test_wrong_method_is_405_and_unknown_route_404(api: Api) -> None:
    reply = await api.call("PUT", "/v1/endpoints")
    assert reply.status == 405
    assert reply.error["code"] == "method_not_allowed"
    assert "POST" in reply.headers["Allow"]
    reply = await api.call("DELETE", "/v1/events")
    assert reply.status == 405
    reply = await api.get("/v1/nothing-here")
    assert reply.status == 404 and reply.error["code"] == "not_found"


async def test_nul_in_query_is_422_not_500(api: Api) -> None:
    created = await api.create_endpoint(URL)
    reply = await api.get(f"/v1/endpoints/{created['id']}/events?type=a%00b")
    assert reply.status == 422 and reply.error["field"] == "type"
    reply = await api.get("/v1/event-types/a%00b")
    assert reply.status == 404


async def test_conflicts_are_409(api: Api) -> None:
    created = await api.post("/v1/event-types", {"name": "invoice.paid"})
    assert created.status == 201
    again = await api.post("/v1/event-types", {"name": "invoice.paid"})
    assert again.status == 409 and again.error["field"] == "name"
    builtin = await api.post("/v1/event-types", {"name": "transaction"})
    assert builtin.status == 409


async def raw_request(server: ApiServer, head: bytes, body: bytes) -> tuple[int, dict[str, object]]:
    """Bytes on the wire, for what aiohttp's client will not send (non-UTF-8 headers)."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


async def test_a_non_utf8_idempotency_key_is_400_and_stores_nothing(
    api: Api, api_server: ApiServer
) -> None:
    head = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + api.key.encode() + b"\r\nIdempotency-Key: caf\xe9\r\n")
    status, body = await raw_request(api_server, head, b'{"type": "transaction", "data": {}}')
    assert status == 400, body
    error = body["error"]
    assert isinstance(error, dict) and error["field"] == "Idempotency-Key"
    assert error["code"] == "bad_request"
    assert (await api.get("/v1/events")).body["data"] == []


@pytest.mark.parametrize("extra", [
    b"Dispatcher-Tenant: caf\xe9\r\n",  # a byte that is not UTF-8
    b"Dispatcher-Tenant: default\r\nDispatcher-Tenant: other\r\n",  # which one?
    b"Authorization: Bearer dk_second\r\n",  # a second credential
    b"Idempotency-Key: a\r\nIdempotency-Key: b\r\n",
])
async def test_a_malformed_or_repeated_auth_or_tenant_header_is_400_and_stores_nothing(
    api: Api, api_server: ApiServer, extra: bytes
) -> None:
    head = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + api.key.encode() + b"\r\n" + extra)
    status, body = await raw_request(api_server, head, b'{"type": "transaction", "data": {}}')
    assert status == 400, body
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "bad_request"
    assert error["field"] == extra.split(b":")[0].decode()
    assert (await api.get("/v1/events")).body["data"] == []


async def test_a_body_that_is_not_what_its_content_encoding_says_is_400(
    api: Api, api_server: ApiServer
) -> None:
    for encoding in (b"gzip", b"deflate"):
        head = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + api.key.encode() + b"\r\n"
                b"Content-Encoding: " + encoding + b"\r\n")
        status, body = await raw_request(api_server, head, b'{"type": "transaction"}')
        assert status == 400, (encoding, body)
        error = body["error"]
        assert isinstance(error, dict) and error["code"] == "bad_request"
    assert (await api.get("/v1/events")).body["data"] == []


async def test_a_bad_compressed_body_after_its_headers_is_400_at_once(
    api: Api, api_server: ApiServer
) -> None:
    """The body in a later TCP segment than the headers: the handler is already
    waiting for it when it fails to decode."""
    host, port = api_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + api.key.encode() + b"\r\n"
                     b"Content-Encoding: deflate\r\nContent-Length: 3\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"3zl")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", raw
    assert b"Connection: close" in head
    assert json.loads(body)["error"]["code"] == "bad_request"


async def test_an_unparsable_request_is_logged_in_one_line_without_its_headers(
    api_server: ApiServer,
) -> None:
    secret = "dk_ThisMustNeverReachTheLog"
    host, port = api_server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + secret.encode() + b" " + b"x" * 9000 + b"\r\n\r\n")
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    assert raw.split()[1] == b"400", raw[:100]
    await asyncio.sleep(0.2)
    log = api_server.daemon.log()
    assert "http.unparsable_request" in log
    assert secret not in log and "Traceback" not in log
