"""The sandbox for callback receivers: `sandbox capture --answer`, `sandbox send
--callback` (the decision the engine would record) and `check-receiver --callback`
(genuine callbacks get exactly ok/deny; forged ones a 4xx, never ok)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner, Result

from dispatcher.catalogue import builtin_event_types
from dispatcher.cli import main
from dispatcher.sandbox.capture import CaptureServer, make_verifier
from dispatcher.signing import SCHEMES, generate_secret
from tests.support.receiver import Receiver, Reply


async def invoke(*args: str) -> Result:
    """The CLI in-process, in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args),
                                   env={"DISPATCHER_LOG__LEVEL": "warning"})


def statuses(result: Result) -> dict[str, str]:
    return {c["id"]: c["status"] for c in json.loads(result.stdout)["checks"]}


@pytest.fixture
async def approver() -> AsyncIterator[list[CaptureServer]]:
    servers: list[CaptureServer] = []
    yield servers
    for s in servers:
        await s.stop()


async def answering(servers: list[CaptureServer], answer: str, scheme: str,
                    secret: str) -> CaptureServer:
    """What `sandbox capture --answer ... --secret ...` runs."""
    server = CaptureServer(answer=answer, verifier=make_verifier(scheme, secret, None))
    await server.start()
    servers.append(server)
    return server


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_verifying_approver_passes_every_callback_check(
    approver: list[CaptureServer], scheme: str
) -> None:
    secret = generate_secret(scheme)
    server = await answering(approver, "ok", scheme, secret)
    result = await invoke("check-receiver", server.url + "/cb", "--callback", "--secret", secret,
                          "--scheme", scheme, "--json")
    assert result.exit_code == 0, result.output
    expected = {"a": "pass", "b": "pass", "c": "pass", "d": "pass", "e": "pass", "f": "pass"}
    if scheme == "cobalt":
        expected["d"] = "skip"
    assert statuses(result) == expected
    assert [c.verified for c in server.requests][:2] == [True, True]
    assert not any(c.verified for c in list(server.requests)[2:])


async def test_an_approver_that_says_ok_to_anything_fails(receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(200, "ok"))
    secret = generate_secret("standard-v1")
    result = await invoke("check-receiver", receiver.url, "--callback", "--secret", secret,
                          "--json")
    assert result.exit_code == 1, result.output
    assert statuses(result) == {"a": "pass", "b": "pass", "c": "fail", "d": "fail",
                                "e": "fail", "f": "pass"}
    reasons = {c["id"]: c["reason"] for c in json.loads(result.stdout)["checks"]}
    assert "anyone could approve" in reasons["c"]


async def test_an_answer_that_is_not_a_decision_fails_the_genuine_checks(
    receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(200, "OK"))
    secret = generate_secret("standard-v1")
    result = await invoke("check-receiver", receiver.url, "--callback", "--secret", secret)
    assert result.exit_code == 1
    assert "FAIL  (a)" in result.stdout and "no_decision" in result.stdout
    assert "case matters" in result.stdout


async def test_send_callback_prints_the_decision(approver: list[CaptureServer]) -> None:
    secret = generate_secret("standard-v1")
    server = await answering(approver, "deny", "standard-v1", secret)
    result = await invoke("sandbox", "send", server.url + "/cb", "--callback",
                          "--secret", secret, "--data", '{"amount": "5"}')
    assert result.exit_code == 0, result.output
    assert "decision: deny (the engine would record Denied)" in result.stdout
    body = json.loads(server.requests[0].body)
    assert body["type"] == "withdrawal.approve" and body["data"] == {"amount": "5"}
    assert server.requests[0].verified is True


async def test_send_callback_with_cobo_sends_the_transaction_itself(
    approver: list[CaptureServer]
) -> None:
    secret = generate_secret("cobo")
    server = await answering(approver, "ok", "cobo", secret)
    result = await invoke("sandbox", "send", server.url + "/cb", "--callback", "--scheme",
                          "cobo", "--secret", secret, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["decision"] == "ok" and out["status_recorded"] == "Approved"
    sample = builtin_event_types()["wallets.transaction.created"].sample
    assert json.loads(server.requests[0].body) == sample
    assert server.requests[0].verified is True


@pytest.mark.parametrize(("reply", "reason"), [
    (Reply(200, "yes"), "no_decision"),
    (Reply(202, "ok"), "http_status"),
    (Reply(500, "ok"), "http_status"),
])
async def test_send_callback_exits_1_without_a_decision(
    receiver: Receiver, reply: Reply, reason: str
) -> None:
    receiver.reply_with(then=reply)
    result = await invoke("sandbox", "send", receiver.url, "--callback")
    assert result.exit_code == 1, result.output
    assert f"no decision ({reason}" in result.stdout
    assert "never approve" in result.stdout


async def test_send_without_type_or_callback_is_a_usage_error(receiver: Receiver) -> None:
    result = await invoke("sandbox", "send", receiver.url)
    assert result.exit_code == 2 and "--type" in result.output
    result = await invoke("sandbox", "send", receiver.url, "--callback", "--data", "[1]")
    assert result.exit_code != 0 and "JSON object" in result.output
    assert receiver.requests == []


async def test_capture_answer_never_says_ok_to_a_forged_request() -> None:
    secret = generate_secret("standard-v1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", "sandbox", "capture", "--port", "0",
        "--answer", "ok", "--secret", secret,
        env={**os.environ, "DISPATCHER_LOG__LEVEL": "warning"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert "(answering 200 ok)" in banner, banner
        url = banner.split()[2]
        good = await invoke("sandbox", "send", url + "/cb", "--callback", "--secret", secret)
        assert good.exit_code == 0 and "decision: ok" in good.stdout, good.output
        forged = await invoke("sandbox", "send", url + "/cb", "--callback",
                              "--secret", generate_secret("standard-v1"))
        assert forged.exit_code == 1 and "response: 401" in forged.stdout, forged.output
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    bad = await invoke("sandbox", "capture", "--port", "0", "--answer", "yes")
    assert bad.exit_code == 2 and "--answer" in bad.output
