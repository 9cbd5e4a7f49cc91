"""Per-endpoint delivery options (custom headers, receiver auth, client TLS) through
every front end against a real daemon: the API refuses bad input naming the field
and changing nothing, shows only public views, stores secrets encrypted, replaces
each option on PATCH; the engine's cache decrypts them exactly; the CLI, the
Python client and the console set the same; the health view warns of a client
certificate about to expire."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from dispatcher.client import Client, SyncClient, basic_auth, bearer_auth, client_tls
from dispatcher.config import Config
from dispatcher.engine.endpoints import EndpointCache
from dispatcher.retry import load_policies
from dispatcher.secretbox import SecretBox, load_key_file
from dispatcher.store.pool import create_pool
from dispatcher.transport.options import (
    NO_OPTIONS,
    BasicAuth,
    BearerAuth,
    ClientTls,
    EndpointOptions,
    OAuth2ClientCredentials,
)
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer
from tests.support.console import ConsoleUser
from tests.unit.test_delivery_option_validation import Identity, make_identity

api_server, http, api, other = support.api_server, support.http, support.api, support.other

URL = "https://bank.example.com/hooks"
TOKEN_URL = "https://auth.example.com/oauth/token"
PASSWORD = "pw-Zq8vXk2m"
TOKEN = "tok-Hc5rT9wQ"
CLIENT_SECRET = "cs-Lm3nB7yP"
REFUSED = ["Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection",
           "Keep-Alive", "Upgrade", "TE", "Trailer", "Proxy-Authorization", "Proxy-Connection",
           "Authorization", "webhook-id", "webhook-timestamp", "webhook-signature",
           "x-cobalt-signature", "Biz-Timestamp", "Biz-Resp-Signature", "traceparent",
           "tracestate"]


@pytest.fixture(scope="module")
def identity() -> Identity:
    return make_identity(intermediate=True)


def key_marker(ident: Identity) -> str:
    """A line from the middle of the key's PEM: only the key itself contains it."""
    lines = ident.key_pem().splitlines()
    return lines[len(lines) // 2]


def secrets_of(ident: Identity) -> list[str]:
    return [PASSWORD, TOKEN, CLIENT_SECRET, key_marker(ident)]


def assert_no_secret(text: str, ident: Identity) -> None:
    for secret in secrets_of(ident):
        assert secret not in text, secret
    assert "PRIVATE KEY" not in text


async def _endpoint_value(server: ApiServer, column: str, endpoint_id: str) -> Any:
    conn = await asyncpg.connect(server.dsn)
    try:
        return await conn.fetchval(f"SELECT {column} FROM endpoints e WHERE id = $1::uuid",
                                   endpoint_id)
    finally:
        await conn.close()


async def row_text(server: ApiServer, endpoint_id: str) -> str:
    text: str = await _endpoint_value(server, "e::text", endpoint_id)
    return text


async def version_of(server: ApiServer, endpoint_id: str) -> int:
    version: int = await _endpoint_value(server, "version", endpoint_id)
    return version


def full_options(ident: Identity) -> dict[str, Any]:
    return {"headers": {"X-Api-Key": "k1", "x-tenant": "acme"},
            "auth": {"type": "basic", "username": "bank", "password": PASSWORD},
            "tls": ident.body(ca_certificate=ident.ca_pem)}


# --- API: refusals -----------------------------------------------------------------------


async def test_every_refused_header_name_is_a_422_naming_it(api: Api) -> None:
    ep = await api.create_endpoint(URL)
    for name in REFUSED:
        body = {"headers": {"X-Fine": "1", name: "v"}}
        created = await api.post("/v1/endpoints", {"url": URL, **body})
        assert created.status == 422, (name, created)
        assert created.error["field"] == f"headers.{name}", created.error
        assert created.error["code"] == "validation_error"
        patched = await api.patch(f"/v1/endpoints/{ep['id']}", body)
        assert patched.status == 422 and patched.error["field"] == f"headers.{name}"
    authz = await api.post("/v1/endpoints", {"url": URL, "headers": {"Authorization": "x"}})
    assert "use `auth`" in authz.error["message"]
    listed = (await api.get("/v1/endpoints")).body["data"]
    assert [e["id"] for e in listed] == [ep["id"]] and listed[0]["headers"] == {}


async def test_bad_auth_and_tls_are_422_naming_the_field_and_change_nothing(
    api: Api, api_server: ApiServer, identity: Identity
) -> None:
    ep = await api.create_endpoint(URL, **full_options(identity))
    before = (await api.get(f"/v1/endpoints/{ep['id']}")).body
    version = await version_of(api_server, ep["id"])
    other_key = make_identity()
    cases = [
        ({"auth": "bearer x"}, "auth"),
        ({"auth": {"type": "digest"}}, "auth.type"),
        ({"auth": {"type": "basic", "username": "u"}}, "auth.password"),
        ({"auth": {"type": "basic", "username": "a:b", "password": "p"}}, "auth.username"),
        ({"auth": {"type": "bearer", "token": "t", "extra": 1}}, "auth.extra"),
        ({"auth": {"type": "bearer", "token": "a\nb"}}, "auth.token"),
        ({"auth": {"type": "oauth2_client_credentials", "token_url": "ftp://a.example.com/t",
                   "client_id": "c", "client_secret": "s"}}, "auth.token_url"),
        ({"auth": {"type": "oauth2_client_credentials", "token_url": TOKEN_URL,
                   "client_secret": "s"}}, "auth.client_id"),
        ({"tls": "PEM"}, "tls"),
        ({"tls": {"client_certificate": identity.chain_pem}}, "tls.client_key"),
        ({"tls": identity.body(client_certificate="nope")}, "tls.client_certificate"),
        ({"tls": identity.body(ca_certificate="nope")}, "tls.ca_certificate"),
        ({"tls": identity.body(extra="x")}, "tls.extra"),
        ({"tls": {"client_certificate": identity.chain_pem,
                  "client_key": other_key.key_pem()}}, "tls.client_key"),
        # A bad option next to good fields: the good ones are not written either.
        ({"description": "changed", "headers": {"X-New": "1"}, "tls": "x"}, "tls"),
        ({"headers": {"Host": "evil.example.com"}, "description": "changed"}, "headers.Host"),
    ]
    for body, field in cases:
        reply = await api.patch(f"/v1/endpoints/{ep['id']}", body)
        assert reply.status == 422, (body, reply)
        assert reply.error["field"] == field, (body, reply.error)
        created = await api.post("/v1/endpoints", {"url": URL, **body})
        assert created.status == 422 and created.error["field"] == field, (body, created)
    assert (await api.get(f"/v1/endpoints/{ep['id']}")).body == before
    assert await version_of(api_server, ep["id"]) == version
    assert len((await api.get("/v1/endpoints")).body["data"]) == 1


async def test_a_key_that_does_not_match_or_is_encrypted_is_refused(
    api: Api, identity: Identity
) -> None:
    mismatch = await api.post("/v1/endpoints", {"url": URL, "tls": {
        "client_certificate": identity.chain_pem, "client_key": make_identity().key_pem()}})
    assert mismatch.status == 422 and mismatch.error["field"] == "tls.client_key"
    assert "does not match" in mismatch.error["message"]
    encrypted = identity.key_pem(password=b"secret-pass")
    assert "ENCRYPTED" in encrypted
    refused = await api.post("/v1/endpoints", {"url": URL, "tls": {
        "client_certificate": identity.chain_pem, "client_key": encrypted}})
    assert refused.status == 422 and refused.error["field"] == "tls.client_key"
    assert "encrypted" in refused.error["message"]
    assert (await api.get("/v1/endpoints")).body["data"] == []


# --- API: public views and storage -------------------------------------------------------


async def test_create_shows_public_views_only_and_stores_secrets_encrypted(
    api: Api, api_server: ApiServer, identity: Identity
) -> None:
    basic = await api.create_endpoint(URL, **full_options(identity))
    bearer = await api.create_endpoint(URL, auth={"type": "bearer", "token": TOKEN})
    oauth = await api.create_endpoint(URL, auth={
        "type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "cid",
        "client_secret": CLIENT_SECRET, "scope": "hooks"})
    leaf = identity.leaf
    assert basic["headers"] == {"X-Api-Key": "k1", "x-tenant": "acme"}
    assert basic["auth"] == {"type": "basic", "username": "bank"}
    assert basic["tls"] == {
        "client_certificate": {
            "subject": "CN=dispatcher-client,O=Example Bank",
            "issuer": "CN=Example Issuing CA,O=Example Bank",
            "not_after": leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fingerprint_sha256": basic["tls"]["client_certificate"]["fingerprint_sha256"]},
        "ca_certificate": {
            "subject": "CN=Example Root CA,O=Example Bank",
            "not_after": identity.ca.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    assert len(basic["tls"]["client_certificate"]["fingerprint_sha256"]) == 64
    assert bearer["auth"] == {"type": "bearer"} and bearer["tls"] is None
    assert bearer["headers"] == {}
    assert oauth["auth"] == {"type": "oauth2_client_credentials", "token_url": TOKEN_URL,
                             "client_id": "cid", "scope": "hooks", "audience": None}
    shown = [(await api.get(f"/v1/endpoints/{e['id']}")).body for e in (basic, bearer, oauth)]
    assert shown[0]["auth"] == basic["auth"] and shown[0]["tls"] == basic["tls"]
    listed = await api.get("/v1/endpoints")
    for text in (json.dumps([basic, bearer, oauth]), json.dumps(shown), json.dumps(listed.body)):
        assert_no_secret(text, identity)
    for ep in (basic, bearer, oauth):
        row = await row_text(api_server, ep["id"])
        for secret in secrets_of(identity):
            assert secret not in row and secret.encode().hex() not in row, secret
        assert "PRIVATE KEY" not in row and b"PRIVATE KEY".hex() not in row
    assert "\\x" in await row_text(api_server, basic["id"])  # the encrypted blobs are there
    assert_no_secret(api_server.daemon.log(), identity)


async def test_patch_replaces_each_option_and_null_removes_it(
    api: Api, api_server: ApiServer, identity: Identity
) -> None:
    ep = await api.create_endpoint(URL, **full_options(identity))
    path = f"/v1/endpoints/{ep['id']}"
    v0 = await version_of(api_server, ep["id"])

    headers = await api.patch(path, {"headers": {"X-Only": "2"}})
    assert headers.status == 200 and headers.body["headers"] == {"X-Only": "2"}  # not merged
    assert headers.body["auth"] == ep["auth"] and headers.body["tls"] == ep["tls"]
    v1 = await version_of(api_server, ep["id"])
    assert v1 > v0
    same = await api.patch(path, {"headers": {"X-Only": "2"}})
    assert same.status == 200 and await version_of(api_server, ep["id"]) == v1

    bearer = await api.patch(path, {"auth": {"type": "bearer", "token": TOKEN}})
    assert bearer.body["auth"] == {"type": "bearer"}
    v2 = await version_of(api_server, ep["id"])
    assert v2 > v1
    new_tls = make_identity(cn="rotated-client")
    tls = await api.patch(path, {"tls": new_tls.body(), "description": "rotated"})
    assert tls.body["tls"]["client_certificate"]["subject"] == "CN=rotated-client,O=Example Bank"
    assert tls.body["tls"]["ca_certificate"] is None and tls.body["description"] == "rotated"
    v3 = await version_of(api_server, ep["id"])
    assert v3 > v2

    removed = await api.patch(path, {"headers": None, "auth": None, "tls": None})
    assert removed.status == 200
    assert (removed.body["headers"], removed.body["auth"], removed.body["tls"]) == ({}, None, None)
    v4 = await version_of(api_server, ep["id"])
    assert v4 > v3
    again = await api.patch(path, {"auth": None, "tls": None, "headers": {}})
    assert again.status == 200 and await version_of(api_server, ep["id"]) == v4
    conn = await asyncpg.connect(api_server.dsn)
    try:
        row = await conn.fetchrow("SELECT headers::text, auth, auth_secret_enc, tls, "
                                  "tls_secret_enc FROM endpoints WHERE id = $1::uuid", ep["id"])
    finally:
        await conn.close()
    assert row is not None and row["headers"] == "[]"
    assert [row[k] for k in ("auth", "auth_secret_enc", "tls", "tls_secret_enc")] == [None] * 4


# --- the engine --------------------------------------------------------------------------


@pytest.fixture
async def engine_pool(api_server: ApiServer, config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(api_server.dsn, config.database)
    yield pool
    await pool.close()


def daemon_box(server: ApiServer) -> SecretBox:
    return SecretBox(load_key_file(Path(server.daemon.env["DISPATCHER_DATA_DIR"]) / "master.key"))


async def test_the_engine_cache_loads_the_decrypted_options(
    api: Api, api_server: ApiServer, identity: Identity, config: Config,
    engine_pool: asyncpg.Pool,
) -> None:
    ep = await api.create_endpoint(URL, headers={"X-Api-Key": "k1", "x-tenant": "acme"},
                                   auth={"type": "oauth2_client_credentials",
                                         "token_url": TOKEN_URL, "client_id": "cid",
                                         "client_secret": CLIENT_SECRET, "audience": "aud"},
                                   tls=identity.body(ca_certificate=identity.ca_pem))
    plain = await api.create_endpoint(URL)
    cache = EndpointCache(daemon_box(api_server), load_policies(config),
                          config.delivery.default_retry_policy)
    uuids = [UUID(ep["id"]), UUID(plain["id"])]
    async with engine_pool.acquire() as conn:
        await cache.load(conn, uuids, datetime.now(UTC))
    target = cache.get(uuids[0])
    assert target is not None and target.usable
    assert target.options == EndpointOptions(
        headers=(("X-Api-Key", "k1"), ("x-tenant", "acme")),
        auth=OAuth2ClientCredentials(token_url=TOKEN_URL, client_id="cid",
                                     client_secret=CLIENT_SECRET, scope=None, audience="aud"),
        tls=ClientTls(client_certificate=identity.chain_pem, client_key=identity.key_pem(),
                      ca_certificate=identity.ca_pem))
    untouched = cache.get(uuids[1])
    assert untouched is not None and untouched.usable and untouched.options == NO_OPTIONS

    await api.patch(f"/v1/endpoints/{ep['id']}", {
        "auth": {"type": "basic", "username": "bank", "password": PASSWORD}, "tls": None})
    async with engine_pool.acquire() as conn:
        assert cache.stale([(uuids[0], await conn.fetchval(
            "SELECT version FROM endpoints WHERE id = $1", uuids[0]))], datetime.now(UTC))
        await cache.load(conn, uuids[:1], datetime.now(UTC))
        target = cache.get(uuids[0])
        assert target is not None and target.options.auth == BasicAuth("bank", PASSWORD)
        assert target.options.tls is None

        # A blob moved to another endpoint's row does not decrypt: that endpoint is
        # unusable (its deliveries wait) exactly like one whose signing secret fails.
        await conn.execute("UPDATE endpoints SET auth = '{\"type\": \"basic\"}', "
                           "auth_secret_enc = (SELECT auth_secret_enc FROM endpoints "
                           "WHERE id = $1), version = version + 1 WHERE id = $2", *uuids)
        await cache.load(conn, uuids[1:], datetime.now(UTC))
    broken = cache.get(uuids[1])
    assert broken is not None and not broken.usable and broken.options == NO_OPTIONS


# --- CLI ---------------------------------------------------------------------------------


def run_cli(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    full.update({"DISPATCHER_LOG__LEVEL": "warning", **env})
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=full,
                          capture_output=True, text=True, timeout=60)


async def cli(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DISPATCHER_URL": api.server.url, "DISPATCHER_API_KEY": api.key}
    return await asyncio.to_thread(run_cli, args, env)


def pem_files(tmp_path: Path, ident: Identity) -> tuple[str, str, str]:
    paths = (tmp_path / "client.pem", tmp_path / "client.key", tmp_path / "ca.pem")
    for path, text in zip(paths, (ident.chain_pem, ident.key_pem(), ident.ca_pem), strict=True):
        path.write_text(text)
    return str(paths[0]), str(paths[1]), str(paths[2])


async def test_cli_flags_set_the_same_options(
    api: Api, identity: Identity, tmp_path: Path
) -> None:
    cert, key, ca = pem_files(tmp_path, identity)
    made = await cli(api, "endpoints", "add", URL, "--header", "X-Api-Key: k1",
                     "--header", "x-tenant: acme", "--auth-basic", f"bank:{PASSWORD}",
                     "--client-cert", cert, "--client-key", key, "--ca-cert", ca, "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    by_api = await api.create_endpoint(URL, **full_options(identity))
    for option in ("headers", "auth", "tls"):
        assert created[option] == by_api[option], option
    human = await cli(api, "endpoints", "show", created["id"])
    assert human.returncode == 0, human.stderr
    assert "X-Api-Key: k1" in human.stdout and "basic (username bank)" in human.stdout
    assert "CN=dispatcher-client" in human.stdout
    for out in (made.stdout, human.stdout):
        assert_no_secret(out, identity)

    ep = created["id"]
    updated = await cli(api, "endpoints", "update", ep, "--header", "X-New: 1",
                        "--auth-bearer", TOKEN, "--clear-tls", "--json")
    assert updated.returncode == 0, updated.stderr
    body = json.loads(updated.stdout)
    assert (body["headers"], body["auth"], body["tls"]) == ({"X-New": "1"}, {"type": "bearer"},
                                                            None)
    oauth = await cli(api, "endpoints", "update", ep, "--oauth2-token-url", TOKEN_URL,
                      "--oauth2-client-id", "cid", "--oauth2-client-secret", CLIENT_SECRET,
                      "--oauth2-scope", "hooks", "--json")
    assert oauth.returncode == 0, oauth.stderr
    assert json.loads(oauth.stdout)["auth"] == {
        "type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "cid",
        "scope": "hooks", "audience": None}
    cleared = await cli(api, "endpoints", "update", ep, "--clear-headers", "--clear-auth",
                        "--json")
    assert cleared.returncode == 0, cleared.stderr
    assert (json.loads(cleared.stdout)["headers"], json.loads(cleared.stdout)["auth"]) == (
        {}, None)

    before = (await api.get(f"/v1/endpoints/{ep}")).body
    bad = await asyncio.gather(
        cli(api, "endpoints", "update", ep, "--header", "Host: evil.example.com"),
        cli(api, "endpoints", "update", ep, "--header", "no colon"),
        cli(api, "endpoints", "update", ep, "--auth-basic", "u:p", "--auth-bearer", "t"),
        cli(api, "endpoints", "update", ep, "--auth-basic", "no-password"),
        cli(api, "endpoints", "update", ep, "--oauth2-token-url", TOKEN_URL),
        cli(api, "endpoints", "update", ep, "--client-cert", cert),
        cli(api, "endpoints", "update", ep, "--client-cert", cert, "--client-key", ca),
        cli(api, "endpoints", "update", ep, "--clear-tls", "--client-key", key),
        cli(api, "endpoints", "add", URL, "--auth-bearer", "a\tb"))
    for result in bad:
        assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
        assert result.stderr.startswith(("error: ", "Usage:")) and result.stdout == ""
        assert "Traceback" not in result.stderr
    assert "headers.Host" in bad[0].stderr and "tls.client_key" in bad[6].stderr
    assert "--oauth2-client-id" in bad[4].stderr
    assert (await api.get(f"/v1/endpoints/{ep}")).body == before
    assert len((await api.get("/v1/endpoints")).body["data"]) == 2


# --- Python client -----------------------------------------------------------------------


async def test_the_python_client_round_trips_the_options(
    api: Api, identity: Identity, tmp_path: Path
) -> None:
    cert, key, _ = pem_files(tmp_path, identity)
    async with Client(api.server.url, api.key) as client:
        ep = await client.create_endpoint(URL, headers={"X-Api-Key": "k1"},
                                          auth=basic_auth("bank", PASSWORD),
                                          tls=client_tls(Path(cert), Path(key)))
        assert ep.headers == {"X-Api-Key": "k1"}
        assert ep.auth == {"type": "basic", "username": "bank"}
        assert ep.tls is not None
        assert ep.tls["client_certificate"]["subject"] == "CN=dispatcher-client,O=Example Bank"
        shown = await client.get_endpoint(ep.id)
        assert (shown.headers, shown.auth, shown.tls) == (ep.headers, ep.auth, ep.tls)
        changed = await client.update_endpoint(ep.id, auth=bearer_auth(TOKEN), tls=None)
        assert (changed.auth, changed.tls, changed.headers) == ({"type": "bearer"}, None,
                                                                {"X-Api-Key": "k1"})
        assert_no_secret(json.dumps(changed.raw), identity)

    def blocking() -> None:
        with SyncClient(api.server.url, api.key) as sync:
            again = sync.update_endpoint(ep.id, headers=None, auth=None)
            assert (again.headers, again.auth) == ({}, None)

    await asyncio.to_thread(blocking)


# --- console -----------------------------------------------------------------------------


@pytest.fixture
async def signed_in(api_server: ApiServer, api: Api) -> AsyncIterator[ConsoleUser]:
    user = ConsoleUser(api_server.url)
    page = await user.sign_in(api.key)
    assert page.status == 200, page
    yield user
    await user.close()


async def test_console_shows_the_options_and_never_a_secret(
    signed_in: ConsoleUser, api: Api, identity: Identity
) -> None:
    ep = await api.create_endpoint(URL, **full_options(identity))
    path = f"/console/endpoints/{ep['id']}"
    page = await signed_in.get(path)
    assert page.status == 200
    assert "X-Api-Key: k1" in page.text and "x-tenant: acme" in page.text
    assert "basic" in page.text and "<code>bank</code>" in page.text
    cert = ep["tls"]["client_certificate"]
    for text in ("CN=dispatcher-client,O=Example Bank", "CN=Example Issuing CA,O=Example Bank",
                 cert["not_after"], cert["fingerprint_sha256"], "CN=Example Root CA"):
        assert text in page.text, text
    assert_no_secret(page.text, identity)
    listing = await signed_in.get("/console/endpoints")
    assert_no_secret(listing.text, identity)


async def test_console_edit_sets_keeps_and_removes_the_options(
    signed_in: ConsoleUser, api: Api, identity: Identity
) -> None:
    ep = await api.create_endpoint(URL)
    path = f"/console/endpoints/{ep['id']}"
    base = {"url": URL, "description": "", "event_types": "*"}

    page = await signed_in.submit(path, path, {
        **base, "headers": "X-Api-Key: k1\r\nX-Tenant: acme\r\n", "auth_type": "bearer",
        "auth_token": TOKEN, "tls_client_certificate": identity.chain_pem,
        "tls_client_key": identity.key_pem(), "tls_ca_certificate": ""})
    assert page.status == 200 and "Endpoint updated" in page.text, page.text
    shown = (await api.get(f"/v1/endpoints/{ep['id']}")).body
    assert shown["headers"] == {"X-Api-Key": "k1", "X-Tenant": "acme"}
    assert shown["auth"] == {"type": "bearer"}
    assert shown["tls"]["client_certificate"]["subject"] == "CN=dispatcher-client,O=Example Bank"
    assert_no_secret(page.text, identity)

    # Blank auth and TLS fields keep what is stored; the headers textarea replaces.
    page = await signed_in.submit(path, path, {**base, "headers": "X-Api-Key: k2",
                                               "auth_type": "basic", "auth_username": "",
                                               "auth_password": "", "tls_client_key": ""})
    assert page.status == 200
    kept = (await api.get(f"/v1/endpoints/{ep['id']}")).body
    assert kept["headers"] == {"X-Api-Key": "k2"}
    assert (kept["auth"], kept["tls"]) == (shown["auth"], shown["tls"])

    page = await signed_in.submit(path, path, {**base, "auth_type": "basic",
                                               "auth_username": "bank",
                                               "auth_password": f" {PASSWORD}"})
    assert (await api.get(f"/v1/endpoints/{ep['id']}")).body["auth"] == {
        "type": "basic", "username": "bank"}
    assert_no_secret(page.text, identity)

    # Refused input: the page says why and nothing changes.
    before = (await api.get(f"/v1/endpoints/{ep['id']}")).body
    for data, words in [({"headers": "Host: evil.example.com"}, "headers.Host"),
                        ({"headers": "just text"}, "Name: value"),
                        ({"auth_type": "basic", "auth_username": "bank"}, "auth.password"),
                        ({"tls_client_certificate": identity.chain_pem,
                          "tls_client_key": make_identity().key_pem()}, "does not match")]:
        page = await signed_in.submit(path, path, {**base, **data})
        assert page.status == 422 and words in page.text, (data, page.status)
        assert_no_secret(page.text, identity)
    assert (await api.get(f"/v1/endpoints/{ep['id']}")).body == before

    page = await signed_in.submit(path, path, {**base, "headers": "", "auth_remove": "1",
                                               "tls_remove": "1"})
    assert page.status == 200
    gone = (await api.get(f"/v1/endpoints/{ep['id']}")).body
    assert (gone["headers"], gone["auth"], gone["tls"]) == ({}, None, None)


# --- health ------------------------------------------------------------------------------


async def test_health_warns_of_a_client_certificate_expiring_within_30_days(
    api: Api, signed_in: ConsoleUser
) -> None:
    soon, later = make_identity(days=10), make_identity(days=365)
    expiring = await api.create_endpoint(URL, tls=soon.body())
    fine = await api.create_endpoint(URL, tls=later.body())
    health = (await api.get(f"/v1/endpoints/{expiring['id']}/health")).body
    not_after = soon.leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [(w["code"], w["not_after"]) for w in health["warnings"]] == [
        ("client_certificate_expiring", not_after)]
    assert not_after in health["warnings"][0]["message"]
    assert (health["failures_in_window"], health["held"]) == (0, 0)  # the rest unchanged
    assert (await api.get(f"/v1/endpoints/{fine['id']}/health")).body["warnings"] == []
    page = await signed_in.get(f"/console/endpoints/{expiring['id']}")
    assert health["warnings"][0]["message"] in page.text
    shown = await cli(api, "endpoints", "show", expiring["id"])
    assert shown.returncode == 0 and health["warnings"][0]["message"] in shown.stdout
    assert "client_certificate_expiring" not in (
        await signed_in.get(f"/console/endpoints/{fine['id']}")).text


async def test_cli_secrets_can_come_from_files(
    api: Api, api_server: ApiServer, config: Config, engine_pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    basic, bearer, client_secret = (tmp_path / "basic", tmp_path / "bearer", tmp_path / "cs")
    basic.write_text(f"bank:{PASSWORD}\n")
    bearer.write_text(TOKEN)
    client_secret.write_text(CLIENT_SECRET + "\n")
    made = await cli(api, "endpoints", "add", URL, "--auth-basic", f"@{basic}", "--json")
    assert made.returncode == 0, made.stderr
    ep = json.loads(made.stdout)["id"]
    cache = EndpointCache(daemon_box(api_server), load_policies(config),
                          config.delivery.default_retry_policy)

    async def stored_auth() -> object:
        async with engine_pool.acquire() as conn:
            await cache.load(conn, [UUID(ep)], datetime.now(UTC))
        target = cache.get(UUID(ep))
        assert target is not None
        return target.options.auth

    assert await stored_auth() == BasicAuth("bank", PASSWORD)
    updated = await cli(api, "endpoints", "update", ep, "--auth-bearer", f"@{bearer}")
    assert updated.returncode == 0, updated.stderr
    assert await stored_auth() == BearerAuth(TOKEN)
    updated = await cli(api, "endpoints", "update", ep, "--oauth2-token-url", TOKEN_URL,
                        "--oauth2-client-id", "cid", "--oauth2-client-secret",
                        f"@{client_secret}")
    assert updated.returncode == 0, updated.stderr
    assert await stored_auth() == OAuth2ClientCredentials(TOKEN_URL, "cid", CLIENT_SECRET)
    missing = await cli(api, "endpoints", "update", ep, "--auth-bearer",
                        f"@{tmp_path / 'nope'}")
    assert missing.returncode == 2 and "--auth-bearer: cannot read" in missing.stderr
    assert await stored_auth() == OAuth2ClientCredentials(TOKEN_URL, "cid", CLIENT_SECRET)


async def test_console_create_takes_the_options(
    signed_in: ConsoleUser, api: Api, identity: Identity
) -> None:
    form = {"url": URL, "description": "", "event_types": "*", "kind": "webhook",
            "headers": "X-Api-Key: k1\r\n", "auth_type": "basic", "auth_username": "bank",
            "auth_password": PASSWORD, "tls_client_certificate": identity.chain_pem,
            "tls_client_key": identity.key_pem()}
    page = await signed_in.submit("/console/endpoints", "/console/endpoints", form)
    assert page.status == 200 and "Endpoint created" in page.text, page.text
    assert_no_secret(page.text, identity)
    (created,) = (await api.get("/v1/endpoints")).body["data"]
    assert created["headers"] == {"X-Api-Key": "k1"}
    assert created["auth"] == {"type": "basic", "username": "bank"}
    assert created["tls"]["client_certificate"]["subject"] == "CN=dispatcher-client,O=Example Bank"

    # Refused: the form comes back with the headers kept, no secret, nothing created.
    page = await signed_in.submit("/console/endpoints", "/console/endpoints",
                                  {**form, "headers": "X-Keep: 1\r\nHost: evil.example.com"})
    assert page.status == 422 and "headers.Host" in page.text
    assert "X-Keep: 1" in page.text
    assert_no_secret(page.text, identity)
    assert len((await api.get("/v1/endpoints")).body["data"]) == 1
