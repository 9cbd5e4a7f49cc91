"""The TLS, OAuth2 and proxy test servers, exercised with pyreqwest directly: the
receivers and proxy behave as the delivery tests rely on, with the client the
transport uses."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import ConnectError
from pyreqwest.proxy import ProxyBuilder

from tests.support.forward_proxy import forward_proxy
from tests.support.oauth import basic_auth_receiver, bearer_receiver, token_server
from tests.support.receiver import Receiver
from tests.support.tls import CertificateAuthority, IssuedCertificate, tls_receiver

TIMEOUT = timedelta(seconds=2)


def builder(ca: CertificateAuthority | None = None,
            identity: IssuedCertificate | None = None) -> ClientBuilder:
    b = ClientBuilder().timeout(TIMEOUT).follow_redirects(False).no_proxy()
    if ca is not None:
        b = b.add_root_certificate_pem(ca.cert_pem)
    if identity is not None:
        b = b.identity_pem(identity.identity_pem)
    return b


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with builder().build() as c:
        yield c


async def post(c: Client, url: str, body: bytes = b"{}", authorization: str | None = None) -> int:
    req = c.post(url).body_bytes(body)
    if authorization is not None:
        req = req.header("authorization", authorization)
    return (await req.build().send()).status


# -- TLS ----------------------------------------------------------------------------

async def test_mtls_receiver_takes_a_client_certificate_from_its_ca_only() -> None:
    server_ca, client_ca, other_ca = (CertificateAuthority(n) for n in ("srv", "cli", "other"))
    async with tls_receiver(server_ca, client_ca) as hook:
        async with builder(server_ca, client_ca.issue_client("acme")).build() as c:
            assert await post(c, hook.url, b'{"a":1}') == 200
        assert [(r.peer_cn, r.body) for r in hook.requests] == [("acme", b'{"a":1}')]

        for identity in (None, other_ca.issue_client("acme")):
            async with builder(server_ca, identity).build() as c:
                with pytest.raises(ConnectError):
                    await post(c, hook.url)
        assert len(hook.requests) == 1


async def test_tls_receiver_is_trusted_through_its_ca_only(client: Client) -> None:
    ca = CertificateAuthority()
    async with tls_receiver(ca) as hook:
        with pytest.raises(ConnectError):
            await post(client, hook.url)
        async with builder(ca).build() as c:
            assert await post(c, hook.url) == 200
            assert await post(c, hook.url.replace("127.0.0.1", "localhost")) == 200
        assert [r.peer_cn for r in hook.requests] == [None, None]


def test_client_certificate_validity_and_pem_forms() -> None:
    ca = CertificateAuthority()
    leaf = ca.issue_client("expiring", valid_for=timedelta(days=10))
    left = leaf.cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=9) < left <= timedelta(days=10)
    assert leaf.subject_cn == "expiring"
    assert leaf.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    chain = x509.load_pem_x509_certificates(leaf.chain_pem)
    assert [c.subject for c in chain] == [leaf.cert.subject, ca.cert.subject]


# -- OAuth2 -------------------------------------------------------------------------

async def test_token_server_issues_counted_tokens_to_its_client_only(client: Client) -> None:
    async with token_server("cid", "s3cret", expires_in=120) as tokens:
        by_basic = await (client.post(tokens.url).basic_auth("cid", "s3cret")
                          .form({"grant_type": "client_credentials", "scope": "hooks:write"})
                          .build().send())
        assert await by_basic.json() == {"access_token": "tok-1", "token_type": "Bearer",
                                         "expires_in": 120}
        by_form = await (client.post(tokens.url)
                         .form({"grant_type": "client_credentials", "client_id": "cid",
                                "client_secret": "s3cret", "audience": "https://rx"})
                         .build().send())
        assert (await by_form.json())["access_token"] == "tok-2"
        wrong = await (client.post(tokens.url).basic_auth("cid", "nope")
                       .form({"grant_type": "client_credentials"}).build().send())
        assert wrong.status == 401
        tokens.fail_with = 503
        failing = await (client.post(tokens.url).basic_auth("cid", "s3cret")
                         .form({"grant_type": "client_credentials"}).build().send())
        assert failing.status == 503

        assert tokens.issued == ["tok-1", "tok-2"]
        assert [f.get("scope") for f in tokens.forms] == ["hooks:write", None, None, None]
        assert tokens.forms[1]["audience"] == "https://rx"
        assert tokens.requests[0].headers["content-type"] == "application/x-www-form-urlencoded"


async def test_bearer_receiver_takes_current_tokens_only(client: Client) -> None:
    async with token_server() as tokens, bearer_receiver(tokens) as hook:
        resp = await (client.post(tokens.url).basic_auth("client-id", "client-secret")
                      .form({"grant_type": "client_credentials"}).build().send())
        token = (await resp.json())["access_token"]
        assert await post(client, hook.url, authorization=f"Bearer {token}") == 200
        assert await post(client, hook.url, authorization="Bearer forged") == 401
        tokens.revoke(token)
        assert await post(client, hook.url, authorization=f"Bearer {token}") == 401
        assert len(hook.requests) == 3


async def test_basic_auth_receiver(client: Client) -> None:
    async with basic_auth_receiver("user", "pa:ss") as hook:
        good = "Basic " + base64.b64encode(b"user:pa:ss").decode()
        bad = "Basic " + base64.b64encode(b"user:x").decode()
        assert await post(client, hook.url, authorization=good) == 200
        assert await post(client, hook.url, authorization=bad) == 401
        assert await post(client, hook.url) == 401


# -- forward proxy --------------------------------------------------------------------

async def test_proxy_forwards_http_and_tunnels_https(receiver: Receiver) -> None:
    ca = CertificateAuthority()
    async with tls_receiver(ca) as tls_hook:
        async with forward_proxy() as proxy:
            # no_proxy() after proxy() would drop the proxy again: order matters.
            c = builder(ca).proxy(ProxyBuilder.all(proxy.url)).build()
            assert await post(c, receiver.url + "?n=1", b"plain") == 200
            assert await post(c, tls_hook.url, b"tls") == 200
            assert await post(c, tls_hook.url, b"tls again") == 200
        # The proxy has closed the tunnel c still holds: its exit did not wait for c.
        await c.close()
        assert (receiver.requests[0].path, receiver.requests[0].body) == ("/hook?n=1", b"plain")
        assert [r.body for r in tls_hook.requests] == [b"tls", b"tls again"]
        # Plain http goes in absolute form; https through one CONNECT per pooled connection.
        assert proxy.targets == [f"POST 127.0.0.1:{receiver.port}",
                                 f"CONNECT 127.0.0.1:{tls_hook.port}"]
        assert proxy.seen[0].path == "/hook?n=1"


async def test_proxy_requires_its_credentials(receiver: Receiver) -> None:
    ca = CertificateAuthority()
    async with forward_proxy(("pu", "pp")) as proxy, tls_receiver(ca) as tls_hook:
        async with builder(ca).proxy(ProxyBuilder.all(proxy.url)).build() as c:
            assert await post(c, receiver.url) == 407
            with pytest.raises(ConnectError):
                await post(c, tls_hook.url)
        authed = ProxyBuilder.all(proxy.url).basic_auth("pu", "pp")
        async with builder(ca).proxy(authed).build() as c:
            assert await post(c, receiver.url) == 200
            assert await post(c, tls_hook.url) == 200
        assert [r.refused for r in proxy.seen] == [407, 407, None, None]
        assert len(receiver.requests) == len(tls_hook.requests) == 1
