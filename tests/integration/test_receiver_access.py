"""Deliveries through a running daemon to receivers that accept only what they
issued: a client certificate from their CA, basic credentials, an OAuth2 token,
custom headers. What each receiver got, and the attempt log, which shows custom
headers as sent and credentials as [redacted]."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.console import ConsoleUser
from tests.support.oauth import basic_auth_receiver, bearer_receiver, token_server
from tests.support.receiver import Receiver
from tests.support.tls import CertificateAuthority, tls_receiver

http, api_server, api = support.http, support.api_server, support.api

pytestmark = pytest.mark.usefixtures("api_server")


async def delivered(api: Api, endpoint: dict[str, Any], event: dict[str, Any],
                    status: str = "Success") -> list[dict[str, Any]]:
    """The event's attempts at the endpoint once it reached `status`."""
    await api.wait_for_status(endpoint["id"], event["id"], status)
    logs = await api.get(f"/v1/endpoints/{endpoint['id']}/events/{event['id']}/logs")
    assert logs.status == 200, logs
    attempts: list[dict[str, Any]] = logs.body["data"]
    return attempts


def request_headers(attempt: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = attempt["request"]["headers"]
    return headers


async def test_mutual_tls_with_the_receivers_private_ca(api: Api) -> None:
    server_ca, client_ca = CertificateAuthority("bank CA"), CertificateAuthority("bank clients")
    leaf = client_ca.issue_client("acme-payments")
    async with tls_receiver(server_ca, client_ca) as bank:
        ep = await api.create_endpoint(bank.url, retry_policy="none", tls={
            "client_certificate": leaf.cert_pem.decode(), "client_key": leaf.key_pem.decode(),
            "ca_certificate": server_ca.cert_pem.decode()})
        event = await api.publish("transaction", {"amount": "1.00"})
        await delivered(api, ep, event)
        # Without the certificate the bank refuses the handshake.
        await api.patch(f"/v1/endpoints/{ep['id']}", {"tls": None})
        refused = await api.publish("transaction", {"amount": "2.00"})
        (attempt,) = await delivered(api, ep, refused, "Failed")
    assert [r.peer_cn for r in bank.requests] == ["acme-payments"]
    assert attempt["failure_reason"] == "tls_error"


async def test_basic_auth_and_custom_headers_arrive_and_the_log_redacts(api: Api) -> None:
    async with basic_auth_receiver("acme", "pa55-word") as bank:
        ep = await api.create_endpoint(
            bank.url, auth={"type": "basic", "username": "acme", "password": "pa55-word"},
            headers={"X-Partner-Id": "acme-42"})
        event = await api.publish("transaction", {"amount": "1.00"})
        (attempt,) = await delivered(api, ep, event)
    got = bank.requests[0].headers
    assert got["X-Partner-Id"] == "acme-42"
    sent = request_headers(attempt)
    assert sent["Authorization"] == "[redacted]"
    assert sent["X-Partner-Id"] == "acme-42"
    assert "pa55-word" not in str(attempt)


async def test_oauth2_one_token_for_many_deliveries_then_auth_error(api: Api) -> None:
    async with token_server(expires_in=3600) as tokens, bearer_receiver(tokens) as bank:
        ep = await api.create_endpoint(bank.url, retry_policy="none", auth={
            "type": "oauth2_client_credentials", "token_url": tokens.url,
            "client_id": tokens.client_id, "client_secret": tokens.client_secret,
            "scope": "webhooks"})
        events = [await api.publish("transaction", {"n": n}) for n in range(10)]
        for event in events:
            await delivered(api, ep, event)
        # The test daemon runs two worker processes: each fetches its own token.
        assert 1 <= len(tokens.issued) <= 2
        assert len(bank.requests) == 10
        # Rotated credentials the token server does not know: auth_error.
        await api.patch(f"/v1/endpoints/{ep['id']}", {"auth": {
            "type": "oauth2_client_credentials", "token_url": tokens.url,
            "client_id": tokens.client_id, "client_secret": "revoked"}})
        failed = await api.publish("transaction", {"n": 10})
        (attempt,) = await delivered(api, ep, failed, "Failed")
    assert attempt["failure_reason"] == "auth_error"
    assert "token endpoint answered 401" in str(attempt)
    assert len(bank.requests) == 10
    issued = len(tokens.issued)
    assert [f.get("scope") for f in tokens.forms[:issued]] == ["webhooks"] * issued


async def test_custom_headers_cannot_replace_ours(api: Api, receiver: Receiver) -> None:
    reply = await api.post("/v1/endpoints", {"url": receiver.url,
                                             "headers": {"webhook-signature": "v1,forged"}})
    assert reply.status == 422
    assert reply.body["error"]["field"] == "headers.webhook-signature"


async def test_the_consoles_sample_send_uses_the_endpoints_options(
    api: Api, api_server: support.ApiServer,
) -> None:
    async with basic_auth_receiver("acme", "pa55-word") as bank:
        ep = await api.create_endpoint(
            bank.url, auth={"type": "basic", "username": "acme", "password": "pa55-word"},
            headers={"X-Partner-Id": "acme-42"})
        user = ConsoleUser(api_server.url)
        try:
            await user.sign_in(api.key)
            page = await user.submit("/console/sandbox", "/console/sandbox/send",
                                     {"endpoint_id": ep["id"], "type": "transaction"})
        finally:
            await user.close()
    assert page.status == 200, page.text
    assert ": 200 OK in" in page.text and "pa55-word" not in page.text
    assert len(bank.requests) == 1  # accepted: the credentials went with it
    assert bank.requests[0].headers["X-Partner-Id"] == "acme-42"
