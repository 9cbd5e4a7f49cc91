"""The transport against real receivers on 127.0.0.1: mutual TLS with a private CA,
basic, bearer and OAuth2 client-credentials auth (token fetched once, refreshed once
on a 401 or at expiry, a failing token server is `auth_error`), custom headers,
redirects, the total timeout and the response cap, and a forward proxy that every
request and token fetch passes through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dispatcher.clock import SystemClock
from dispatcher.model import FailureReason
from dispatcher.transport import EndpointOptions, Exchange, Transport
from dispatcher.transport.addresses import AddressGuard
from dispatcher.transport.options import (
    BasicAuth,
    BearerAuth,
    ClientTls,
    OAuth2ClientCredentials,
)
from tests.support.forward_proxy import forward_proxy
from tests.support.oauth import basic_auth_receiver, bearer_receiver, running, token_server
from tests.support.receiver import Receiver, Reply
from tests.support.tls import CertificateAuthority, tls_receiver

BODY = b'{"event_id":"e1","type":"ping","data":{}}'
HEADERS = {"Content-Type": "application/json", "webhook-id": "e1"}


class Ticks:
    """A monotonic clock the test moves by hand (token lifetimes)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def send(transport: Transport, url: str, options: EndpointOptions | None = None,
               timeout: float = 5.0, body_limit: int = 4096) -> Exchange:
    return await transport.send(url, BODY, HEADERS, timeout=timeout, body_limit=body_limit,
                                started_at=SystemClock().now(),
                                options=options or EndpointOptions())


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    async with Transport(guarded=False) as t:
        yield t


@pytest.fixture(scope="module")
def server_ca() -> CertificateAuthority:
    return CertificateAuthority("receiver CA")


@pytest.fixture(scope="module")
def client_ca() -> CertificateAuthority:
    return CertificateAuthority("client CA")


def client_tls(client_ca: CertificateAuthority, server_ca: CertificateAuthority,
               cn: str = "acme") -> ClientTls:
    leaf = client_ca.issue_client(cn)
    return ClientTls(leaf.cert_pem.decode(), leaf.key_pem.decode(), server_ca.cert_pem.decode())


# ------------------------------------------------------------------ mutual TLS


async def test_a_receiver_requiring_a_client_certificate_gets_it(
    transport: Transport, server_ca: CertificateAuthority, client_ca: CertificateAuthority,
) -> None:
    async with tls_receiver(server_ca, client_ca) as hook:
        result = await send(transport, hook.url,
                            EndpointOptions(tls=client_tls(client_ca, server_ca)))
    assert result.status == 200, result
    assert result.failure is None
    assert [r.peer_cn for r in hook.requests] == ["acme"]
    assert hook.requests[0].body == BODY


async def test_without_a_client_certificate_or_with_another_cas_it_is_a_tls_error(
    transport: Transport, server_ca: CertificateAuthority, client_ca: CertificateAuthority,
) -> None:
    stranger = CertificateAuthority("someone else")
    async with tls_receiver(server_ca, client_ca) as hook:
        # The receiver's CA trusted, but a certificate it did not issue.
        wrong = await send(transport, hook.url,
                           EndpointOptions(tls=client_tls(stranger, server_ca)))
        # No options at all: no client certificate, and the private CA not trusted.
        bare = await send(transport, hook.url)
    assert wrong.failure == FailureReason.TLS_ERROR, wrong
    assert bare.failure == FailureReason.TLS_ERROR, bare
    assert wrong.status is None and bare.status is None
    assert hook.requests == []


async def test_a_private_ca_is_trusted_only_for_the_endpoint_that_names_it(
    transport: Transport, server_ca: CertificateAuthority, client_ca: CertificateAuthority,
) -> None:
    async with tls_receiver(server_ca, None) as hook:
        trusted = await send(transport, hook.url,
                             EndpointOptions(tls=client_tls(client_ca, server_ca)))
        untrusted = await send(transport, hook.url)
    assert trusted.status == 200, trusted
    assert untrusted.failure == FailureReason.TLS_ERROR
    assert untrusted.error_detail is not None and "certificate" in untrusted.error_detail


# ------------------------------------------------------------- receiver auth


async def test_basic_auth_is_sent_and_recorded_redacted(transport: Transport) -> None:
    async with basic_auth_receiver("acme", "s3cret:with colon") as hook:
        ok = await send(transport, hook.url,
                        EndpointOptions(auth=BasicAuth("acme", "s3cret:with colon")))
        wrong = await send(transport, hook.url, EndpointOptions(auth=BasicAuth("acme", "no")))
    assert ok.status == 200, ok
    assert wrong.status == 401 and wrong.failure == FailureReason.HTTP_STATUS
    assert ok.request_headers["Authorization"] == "[redacted]"
    assert "s3cret" not in ok.request_headers_json()


async def test_a_static_bearer_token_is_sent(transport: Transport, receiver: Receiver) -> None:
    result = await send(transport, receiver.url, EndpointOptions(auth=BearerAuth("tk_live_1")))
    assert result.status == 200
    assert receiver.requests[0].headers["Authorization"] == "Bearer tk_live_1"
    assert result.request_headers["Authorization"] == "[redacted]"


def oauth(url: str, **extra: str) -> EndpointOptions:
    return EndpointOptions(auth=OAuth2ClientCredentials(url, "client-id", "client-secret",
                                                        **extra))


async def test_many_deliveries_share_one_token_fetched_once() -> None:
    async with Transport(guarded=False) as transport, token_server() as tokens, \
            bearer_receiver(tokens) as hook:
        options = oauth(tokens.url, scope="webhooks:write", audience="https://bank.example")
        results = await asyncio.gather(*(send(transport, hook.url, options) for _ in range(20)))
        results.append(await send(transport, hook.url, options))
    assert [r.status for r in results] == [200] * 21
    assert tokens.issued == ["tok-1"]
    (form,) = tokens.forms
    assert form == {"grant_type": "client_credentials", "scope": "webhooks:write",
                    "audience": "https://bank.example"}
    assert {r.headers["Authorization"] for r in hook.requests} == {"Bearer tok-1"}
    assert all(r.request_headers["Authorization"] == "[redacted]" for r in results)


async def test_a_token_the_receiver_refuses_is_refreshed_exactly_once() -> None:
    async with Transport(guarded=False) as transport, token_server() as tokens, \
            bearer_receiver(tokens) as hook:
        first = await send(transport, hook.url, oauth(tokens.url))
        tokens.revoke()  # the receiver answers 401 to tok-1 from now on
        second = await send(transport, hook.url, oauth(tokens.url))
        third = await send(transport, hook.url, oauth(tokens.url))
    assert (first.status, second.status, third.status) == (200, 200, 200)
    assert tokens.issued == ["tok-1", "tok-2"]
    assert [r.headers["Authorization"] for r in hook.requests] == [
        "Bearer tok-1", "Bearer tok-1", "Bearer tok-2", "Bearer tok-2"]


async def test_a_fresh_token_refused_is_not_fetched_again_in_a_loop() -> None:
    async with Transport(guarded=False) as transport, token_server() as tokens, \
            running(Receiver()) as hook:
        hook.reply_with(then=Reply(401))
        result = await send(transport, hook.url, oauth(tokens.url))
    assert result.status == 401 and result.failure == FailureReason.HTTP_STATUS
    assert tokens.issued == ["tok-1"]
    assert len(hook.requests) == 1


async def test_a_token_is_fetched_again_shortly_before_it_expires() -> None:
    ticks = Ticks()
    async with Transport(guarded=False, clock=ticks) as transport, \
            token_server(expires_in=600) as tokens, bearer_receiver(tokens) as hook:
        await send(transport, hook.url, oauth(tokens.url))
        ticks.now += 600 - 61  # more than 60 s left: the cached token
        await send(transport, hook.url, oauth(tokens.url))
        assert tokens.issued == ["tok-1"]
        ticks.now += 2  # within 60 s of expiry: a new one
        result = await send(transport, hook.url, oauth(tokens.url))
    assert result.status == 200
    assert tokens.issued == ["tok-1", "tok-2"]


async def test_a_failing_token_server_is_an_auth_error_and_nothing_is_sent() -> None:
    async with Transport(guarded=False) as transport, token_server() as tokens, \
            bearer_receiver(tokens) as hook:
        tokens.fail_with = 500
        failed = await send(transport, hook.url, oauth(tokens.url))
        wrong_secret = await send(transport, hook.url, EndpointOptions(
            auth=OAuth2ClientCredentials(tokens.url, "client-id", "not-the-secret")))
    assert failed.failure == FailureReason.AUTH_ERROR
    assert failed.status is None
    assert failed.error_detail == "token endpoint answered 500"
    assert wrong_secret.failure == FailureReason.AUTH_ERROR
    assert wrong_secret.error_detail == "token endpoint answered 401"
    assert "secret" not in (failed.error_detail + wrong_secret.error_detail)
    assert hook.requests == []


async def test_an_unreachable_token_server_is_an_auth_error(transport: Transport,
                                                            receiver: Receiver) -> None:
    result = await send(transport, receiver.url, oauth("http://127.0.0.1:9/token"))
    assert result.failure == FailureReason.AUTH_ERROR
    assert result.error_detail is not None
    assert result.error_detail.startswith("token endpoint unreachable: connect_error")
    assert receiver.requests == []


async def test_the_token_url_is_guarded_like_a_delivery(receiver: Receiver) -> None:
    async with Transport(guarded=True) as transport, token_server() as tokens:
        result = await send(transport, "https://hooks.example.com/x", oauth(tokens.url))
    assert result.failure == FailureReason.AUTH_ERROR
    assert "blocked_address" in str(result.error_detail)
    assert tokens.requests == []


# ------------------------------------------------------------ headers, limits


async def test_custom_headers_arrive_exactly(transport: Transport, receiver: Receiver) -> None:
    options = EndpointOptions(headers=(("X-Api-Key", "k_123"), ("X-Tenant", "acme  corp")))
    result = await send(transport, receiver.url, options)
    got = receiver.requests[0].headers
    assert (got["X-Api-Key"], got["X-Tenant"]) == ("k_123", "acme  corp")
    assert got["Content-Type"] == "application/json" and got["webhook-id"] == "e1"
    assert got["User-Agent"].startswith("dispatcher/")
    assert got["Accept-Encoding"] == "identity"
    assert result.request_headers["X-Api-Key"] == "k_123"


async def test_redirects_are_never_followed(transport: Transport, receiver: Receiver) -> None:
    receiver.reply_with(Reply(302, headers={"Location": "/elsewhere"}))
    result = await send(transport, receiver.url)
    assert result.status == 302 and result.failure == FailureReason.REDIRECT
    assert len(receiver.requests) == 1


async def test_the_response_body_is_capped(transport: Transport, receiver: Receiver) -> None:
    receiver.reply_with(Reply(200, b"x" * 1_000_000))
    result = await send(transport, receiver.url, body_limit=4096)
    assert result.status == 200
    assert result.response_body == "x" * 4096


async def test_the_timeout_covers_a_body_trickled_slowly(transport: Transport) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        try:
            for _ in range(100):  # one byte every 50 ms: 5 s in all
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await send(transport, f"http://127.0.0.1:{port}/", timeout=1.0,
                            body_limit=4096)
    assert result.failure == FailureReason.TIMEOUT, result
    assert 900 <= result.duration_ms < 2500


# ----------------------------------------------------------------- the proxy


async def test_every_delivery_and_token_fetch_goes_through_the_proxy(
    server_ca: CertificateAuthority, client_ca: CertificateAuthority,
) -> None:
    async with forward_proxy() as proxy, token_server() as tokens, \
            bearer_receiver(tokens) as hook, tls_receiver(server_ca, client_ca) as secure, \
            Transport(guarded=False, proxy_url=proxy.url) as transport:
        plain = await send(transport, hook.url, oauth(tokens.url))
        mtls = await send(transport, secure.url,
                          EndpointOptions(tls=client_tls(client_ca, server_ca)))
    assert (plain.status, mtls.status) == (200, 200)
    assert proxy.targets == [f"POST 127.0.0.1:{tokens.port}", f"POST 127.0.0.1:{hook.port}",
                             f"CONNECT 127.0.0.1:{secure.port}"]
    assert secure.requests[0].peer_cn == "acme"  # mutual TLS through the tunnel


async def test_behind_a_proxy_a_blocked_literal_is_refused_before_reaching_it(
    receiver: Receiver,
) -> None:
    async with forward_proxy() as proxy:
        guard = AddressGuard(True, proxied=True, blocked=lambda a: a != "127.0.0.1")
        async with Transport(guarded=True, proxy_url=proxy.url, guard=guard) as transport:
            refused = await send(transport, "http://10.0.0.1/hook")
            allowed = await send(transport, receiver.url)
    assert refused.failure == FailureReason.BLOCKED_ADDRESS
    assert allowed.status == 200
    assert proxy.targets == [f"POST 127.0.0.1:{receiver.port}"]


async def test_proxy_environment_variables_are_never_used(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver,
) -> None:
    async with forward_proxy() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with Transport(guarded=False) as transport:
            result = await send(transport, receiver.url)
    assert result.status == 200
    assert proxy.seen == []


async def test_a_socks5_proxy_carries_deliveries_and_token_fetches(
    server_ca: CertificateAuthority, client_ca: CertificateAuthority,
) -> None:
    async with forward_proxy(required_auth=("egress", "pw")) as proxy, token_server() as tokens, \
            bearer_receiver(tokens) as hook, tls_receiver(server_ca, client_ca) as secure:
        socks = f"socks5://egress:pw@127.0.0.1:{proxy.port}"
        async with Transport(guarded=False, proxy_url=socks) as transport:
            plain = await send(transport, hook.url, oauth(tokens.url))
            mtls = await send(transport, secure.url,
                              EndpointOptions(tls=client_tls(client_ca, server_ca)))
    assert (plain.status, mtls.status) == (200, 200), (plain, mtls)
    assert proxy.targets == [f"SOCKS 127.0.0.1:{tokens.port}", f"SOCKS 127.0.0.1:{hook.port}",
                             f"SOCKS 127.0.0.1:{secure.port}"]


async def test_proxy_credentials_in_the_url_are_used(receiver: Receiver) -> None:
    async with forward_proxy(required_auth=("egress", "pw")) as proxy:
        url = f"http://egress:pw@127.0.0.1:{proxy.port}"
        async with Transport(guarded=False, proxy_url=url) as transport:
            ok = await send(transport, receiver.url)
        async with Transport(guarded=False, proxy_url=proxy.url) as transport:
            refused = await send(transport, receiver.url)
    assert ok.status == 200
    assert refused.status == 407 and refused.failure == FailureReason.HTTP_STATUS
    assert len(receiver.requests) == 1
