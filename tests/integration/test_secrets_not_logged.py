"""No secret ever reaches the log. A daemon at debug level is driven through every
error path a secret travels near: bad and revoked keys, a header too long to parse,
bad bodies, deliveries that fail in each way, secret rotation and reveal, cobo
signing, receiver credentials (basic, bearer, OAuth2 with a token server that fails,
then answers), a client certificate's key, bad option updates. Then its raw output
(both workers, stderr and all) is searched for every secret it holds: API keys,
endpoint secrets (current and previous), receiver passwords, tokens, client
secrets and private keys, the tenant's Ed25519 private key, and the master key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import asyncpg
import pytest

from dispatcher.config import load_config
from dispatcher.secretbox import load_secret_box
from dispatcher.store.secrets import tenant_signing_key
from dispatcher.store.tenants import revoke_api_key
from tests.conftest import TEST_ENV
from tests.integration import test_api_support as support
from tests.integration.test_api_support import ApiServer
from tests.support.oauth import token_server
from tests.support.receiver import Receiver, Reply
from tests.support.tls import CertificateAuthority

if TYPE_CHECKING:  # imported by name, pytest would try to collect it here
    from tests.support.pg import TestPostgres

http = support.http


@pytest.fixture(scope="module")
def api_server(pg: TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from support.start_server(pg, tmp_path_factory.mktemp("secrets"),
                                    DISPATCHER_LOG__LEVEL="debug")


async def _raw(server: ApiServer, request: bytes) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


async def test_no_secret_reaches_the_log(http: object, api_server: ApiServer,
                                         receiver: Receiver) -> None:
    api = await support.new_api(http, api_server)  # type: ignore[arg-type]
    doomed = await support.new_api(http, api_server)  # type: ignore[arg-type]
    secrets: set[str] = {api.key, doomed.key}

    # Endpoints with every scheme, failing in different ways.
    receiver.reply_with(Reply(500, b"nope"), Reply(302, b"", {"Location": "http://x/"}),
                        then=Reply(200))
    endpoints = []
    for scheme in ("standard-v1", "standard-v1a", "cobalt", "cobo"):
        ep = await api.create_endpoint(receiver.url, signing_scheme=scheme,
                                       retry_policy="none")
        endpoints.append(ep)
        if ep.get("secret"):
            secrets.add(ep["secret"])
    closed = await api.create_endpoint("http://127.0.0.1:9/", retry_policy="none")
    secrets.add(closed["secret"])
    for ep in [*endpoints, closed]:
        rotated = await api.post(f"/v1/endpoints/{ep['id']}/rotate-secret", {})
        if rotated.status == 200 and rotated.body.get("secret"):
            secrets.add(rotated.body["secret"])
        revealed = await api.get(f"/v1/endpoints/{ep['id']}/secret")
        if revealed.status == 200:
            secrets.update(v for v in revealed.body.values()
                           if isinstance(v, str) and len(v) >= 16)
    # Receiver credentials and a client certificate; the token server fails first.
    leaf = CertificateAuthority().issue_client("acme")
    key_pem = leaf.key_pem.decode()
    key_body = "".join(key_pem.splitlines()[1:-1])
    credentials = {"password": "pw-" + "p" * 20, "token": "bearer-" + "t" * 20,
                   "client_secret": "oauth-" + "s" * 20}
    secrets.update(credentials.values())
    secrets.update({key_body, key_body[:64]})
    async with token_server(client_secret=credentials["client_secret"]) as tokens:
        tokens.fail_with = 500
        auths = [
            {"type": "basic", "username": "acme", "password": credentials["password"]},
            {"type": "bearer", "token": credentials["token"]},
            {"type": "oauth2_client_credentials", "token_url": tokens.url,
             "client_id": "client-id", "client_secret": credentials["client_secret"]},
        ]
        for auth in auths:
            await api.create_endpoint(receiver.url, retry_policy="none", auth=auth,
                                      headers={"X-Api-Key": "not-a-secret"})
        await api.create_endpoint(receiver.url, retry_policy="none",
                                  tls={"client_certificate": leaf.cert_pem.decode(),
                                       "client_key": key_pem})
        bad = await api.patch(f"/v1/endpoints/{endpoints[0]['id']}", {"auth": {
            "type": "basic", "username": "a:b", "password": credentials["password"]}})
        assert bad.status == 422, bad
        other_key = CertificateAuthority().issue_client("other").key_pem.decode()
        secrets.add("".join(other_key.splitlines()[1:-1]))
        bad = await api.post("/v1/endpoints", {"url": receiver.url, "tls": {
            "client_certificate": leaf.cert_pem.decode(), "client_key": other_key}})
        assert bad.status == 422, bad
        for n in range(3):
            await api.publish("transaction", {"n": n})
        # 4 signing schemes and basic, bearer, mTLS: 7 endpoints x 3 events arrive.
        await receiver.wait_for(21, timeout=15)
        tokens.fail_with = None
        await api.publish("transaction", {"n": 3})
        await receiver.wait_for(29, timeout=15)
        secrets.update(f"Bearer {t}" for t in tokens.issued)
        assert tokens.issued, "the OAuth2 endpoint fetched a token"

    # Error paths with keys in them.
    for path in ("/v1/endpoints", "/v1/events"):
        await api.get(path, key=api.key + "x")
        await api.get(path, key=api.key[:-1])
    conn = await asyncpg.connect(api_server.dsn)
    try:
        await revoke_api_key(conn, doomed.key)
        tenant_id: UUID = await conn.fetchval("SELECT id FROM tenants WHERE name = $1",
                                              api.tenant)
        config = load_config(environ={**TEST_ENV, "DISPATCHER_DATA_DIR":
                                      api_server.daemon.env["DISPATCHER_DATA_DIR"]})
        box = load_secret_box(config)
        secrets.add(await tenant_signing_key(conn, box, tenant_id))
    finally:
        await conn.close()
    data_dir = Path(api_server.daemon.env["DISPATCHER_DATA_DIR"])
    secrets.add((data_dir / "master.key").read_text().strip())
    await asyncio.sleep(2.5)  # past the key cache
    await api.get("/v1/endpoints", key=doomed.key)
    await _raw(api_server, b"GET /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + api.key.encode() + b" " + b"x" * 9000 + b"\r\n\r\n")
    await _raw(api_server, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + api.key.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz")
    await api.post("/v1/events", {"type": "transaction", "data": {"secret": "x"}},
                   headers={"Idempotency-Key": "k" * 300})
    await api.post("/v1/endpoints", {"url": "ftp://" + api.key})

    await asyncio.sleep(0.5)
    log = api_server.daemon.log()
    assert "auth.failed" in log or "http.unparsable_request" in log  # the paths ran
    assert len(log) > 1000
    secrets.discard("")
    leaked = [s[:12] + "..." for s in secrets if s in log]
    assert not leaked, f"secrets in the log: {leaked}"
