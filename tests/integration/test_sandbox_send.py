"""`dispatcher sandbox send`: one sample event to a real local receiver, signed
exactly like the engine signs, checked with independent verifiers (the
`standardwebhooks` package, `cryptography`'s Ed25519 public keys, hmac)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

from dispatcher import __version__
from dispatcher.catalogue import builtin_event_types
from dispatcher.cli import main
from dispatcher.signing import generate_secret, public_key
from tests.support.forward_proxy import forward_proxy
from tests.support.receiver import Receiver, Reply


async def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None,
                 ) -> Result:
    """Run the CLI in-process, in a thread: it runs its own event loop while the
    test's loop serves the receivers."""
    full = {"DISPATCHER_LOG__LEVEL": "warning", **(env or {})}
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=full,
                                   input=input)


def sent(receiver: Receiver) -> tuple[dict[str, str], bytes]:
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    return {k.lower(): v for k, v in req.headers.items()}, req.body


async def test_standard_v1_verifies_with_the_standardwebhooks_package(
        receiver: Receiver) -> None:
    secret = generate_secret("standard-v1")
    result = await invoke("sandbox", "send", receiver.url, "--type", "transaction",
                          "--secret", secret)
    assert result.exit_code == 0, result.output
    headers, body = sent(receiver)
    Webhook(secret).verify(body, headers)  # raises if not genuine
    envelope = json.loads(body)
    assert envelope["type"] == "transaction"
    assert envelope["data"] == builtin_event_types()["transaction"].sample
    assert envelope["event_id"] == headers["webhook-id"]
    assert set(envelope) == {"event_id", "type", "created_timestamp", "data"}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"dispatcher/{__version__}"
    assert "response: 200" in result.stdout and "outcome: Success" in result.stdout
    assert secret not in result.stdout  # a secret the user gave is not echoed


async def test_a_generated_secret_is_printed_and_verifies(receiver: Receiver) -> None:
    result = await invoke("sandbox", "send", receiver.url, "--type", "messages", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["secret"].startswith("whsec_") and out["outcome"] == "Success"
    headers, body = sent(receiver)
    Webhook(out["secret"]).verify(body, headers)
    assert out["request_body"] == body.decode() and out["status"] == 200


async def test_cobo_verifies_with_the_ed25519_public_key(receiver: Receiver) -> None:
    secret = generate_secret("cobo")
    result = await invoke("sandbox", "send", receiver.url, "--scheme", "cobo", "--secret",
                          secret, "--type", "wallets.transaction.created")
    assert result.exit_code == 0, result.output
    public_hex = public_key("cobo", secret)
    assert public_hex is not None and f"public key: {public_hex}" in result.stdout
    headers, body = sent(receiver)
    ts = headers["biz-timestamp"]
    assert abs(int(ts) - time.time() * 1000) < 10_000
    digest = hashlib.sha256(hashlib.sha256(body + b"|" + ts.encode()).digest()).digest()
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
        bytes.fromhex(headers["biz-resp-signature"]), digest)


async def test_standard_v1a_verifies_with_the_ed25519_public_key(receiver: Receiver) -> None:
    result = await invoke("sandbox", "send", receiver.url, "--scheme", "standard-v1a",
                          "--type", "statuses", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["secret"].startswith("whsk_") and out["verify_with"].startswith("whpk_")
    headers, body = sent(receiver)
    version, _, sig = headers["webhook-signature"].partition(",")
    assert version == "v1a"
    raw = base64.b64decode(out["verify_with"].removeprefix("whpk_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(sig), content)


async def test_cobalt_and_custom_data_from_a_file(receiver: Receiver, tmp_path: Path) -> None:
    secret = generate_secret("cobalt")
    data = tmp_path / "data.json"
    data.write_text('{"invoice_id": "inv_1", "note": "héllo"}')
    result = await invoke("sandbox", "send", receiver.url, "--scheme", "cobalt", "--secret",
                          secret, "--type", "invoice.paid", "--data", f"@{data}")
    assert result.exit_code == 0, result.output
    headers, body = sent(receiver)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-cobalt-signature"] == expected
    assert json.loads(body)["data"] == {"invoice_id": "inv_1", "note": "héllo"}
    assert "héllo".encode() in body  # non-ASCII unescaped, like the engine


async def test_a_failure_is_classified_like_the_engine_and_exits_1(receiver: Receiver) -> None:
    receiver.reply_with(Reply(status=302, headers={"Location": "http://127.0.0.1:9/x"}),
                        Reply(status=503, body="down"), Reply(status=410))
    redirect = await invoke("sandbox", "send", receiver.url, "--type", "transaction")
    assert redirect.exit_code == 1, redirect.output
    assert "outcome: failed: redirect" in redirect.stdout
    assert len(receiver.requests) == 1  # never followed
    down = await invoke("sandbox", "send", receiver.url, "--type", "transaction", "--json")
    assert down.exit_code == 1
    out = json.loads(down.stdout)
    assert (out["status"], out["failure_reason"], out["response_body"]) == (
        503, "http_status", "down")
    gone = await invoke("sandbox", "send", receiver.url, "--type", "transaction")
    assert gone.exit_code == 1 and "a 410 disables the endpoint" in gone.stdout


async def test_a_profile_narrowing_success_statuses_is_honoured(receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(status=202))
    result = await invoke("sandbox", "send", receiver.url, "--type", "transaction",
                          env={"DISPATCHER_DELIVERY__SUCCESS_STATUSES": "[200]"})
    assert result.exit_code == 1 and "failed: http_status" in result.stdout


async def test_timeout_and_connection_refused(receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(delay=1.0))
    slow = await invoke("sandbox", "send", receiver.url, "--type", "transaction",
                        "--timeout", "0.2")
    assert slow.exit_code == 1 and "failed: timeout" in slow.stdout
    await receiver.stop()
    refused = await invoke("sandbox", "send", receiver.url, "--type", "transaction")
    assert refused.exit_code == 1 and "failed: connect_error" in refused.stdout


BAD_INPUT: list[tuple[list[str], str]] = [
    (["--type", "no.such.type"], "unknown event type 'no.such.type'"),
    (["--type", "bad type"], "invalid event type"),
    (["--type", "transaction", "--scheme", "rot13"], "unknown signing scheme 'rot13'"),
    (["--type", "transaction", "--data", "{not json"], "--data is not valid JSON"),
    (["--type", "transaction", "--data", "@/nonexistent/data.json"], "cannot read --data"),
    (["--type", "transaction", "--secret", "whsec_%%%"], "invalid standard-v1 secret"),
    (["--type", "transaction", "--scheme", "cobo", "--secret", "abcd"],
     "invalid cobo secret"),
    (["--type", "transaction", "--scheme", "standard-v1a", "--secret",
      "whpk_" + "A" * 43 + "="], "not the public key"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
async def test_bad_input_is_an_error_and_sends_nothing(
        receiver: Receiver, args: list[str], message: str) -> None:
    result = await invoke("sandbox", "send", receiver.url, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert receiver.requests == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/hook", "not a url", "http:///nohost",
                                 "http://user:pw@127.0.0.1/hook"])
async def test_bad_url_is_an_error(url: str) -> None:
    result = await invoke("sandbox", "send", url, "--type", "transaction")
    assert result.exit_code == 2 and result.stderr.startswith("error: url"), result.output


async def test_send_and_check_receiver_go_through_a_proxy(receiver: Receiver) -> None:
    secret = generate_secret("standard-v1")
    async with forward_proxy() as proxy:
        result = await invoke("sandbox", "send", receiver.url, "--type", "transaction",
                              "--secret", secret, "--proxy", proxy.url)
        assert result.exit_code == 0, result.output
        assert proxy.targets == [f"POST 127.0.0.1:{receiver.port}"]
        checked = await invoke("check-receiver", receiver.url, "--secret", secret,
                               "--proxy", proxy.url, "--json")
    headers, body = receiver.requests[0].headers, receiver.requests[0].body
    Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})
    assert len(proxy.targets) == len(receiver.requests) > 1  # every probe went through it
    assert json.loads(checked.stdout)["url"] == receiver.url


@pytest.mark.parametrize("proxy", ["ftp://127.0.0.1:21", "http://127.0.0.1", "nonsense"])
async def test_a_bad_proxy_is_refused_before_anything_is_sent(
        proxy: str, receiver: Receiver) -> None:
    for command in (["sandbox", "send", receiver.url, "--type", "transaction"],
                    ["check-receiver", receiver.url, "--secret", generate_secret("standard-v1")]):
        result = await invoke(*command, "--proxy", proxy)
        assert result.exit_code != 0
        assert "--proxy must be an http://, https:// or socks5:// URL" in result.output
    assert receiver.requests == []
