"""`dispatcher listen --forward-to`: events taken on a local port or on stdin reach
a developer's local receiver as real, verifiable deliveries."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from click.testing import CliRunner, Result
from standardwebhooks.webhooks import Webhook

from dispatcher.catalogue import builtin_event_types
from dispatcher.cli import main
from dispatcher.sandbox.capture import CaptureServer
from dispatcher.sandbox.forward import sandbox_transport
from dispatcher.sandbox.listen import Forwarder
from dispatcher.sandbox.samples import build_event, signing_key
from dispatcher.signing import generate_secret
from dispatcher.verify import verify_cobo
from tests.support.receiver import Receiver, Reply


async def invoke(*args: str, input: str | None = None) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), input=input,
                                   env={"DISPATCHER_LOG__LEVEL": "warning"})


def lower(headers: object) -> dict[str, str]:
    return {k.lower(): v for k, v in dict(headers).items()}  # type: ignore[call-overload]


async def test_stdin_events_are_forwarded_signed(receiver: Receiver) -> None:
    secret = generate_secret("standard-v1")
    delivered = build_event("statuses", {"statuses": []})  # e.g. a captured real delivery
    lines = "\n".join([
        json.dumps({"type": "transaction"}),
        "",
        delivered.body.decode(),
        "{not json",
        json.dumps({"type": "invoice.paid", "data": {"id": "inv_1"}}),
        json.dumps({"type": "no.such.type"}),
    ]) + "\n"
    result = await invoke("listen", "--forward-to", receiver.url, "--secret", secret,
                          "--stdin", input=lines)
    assert len(receiver.requests) == 3
    for req in receiver.requests:
        Webhook(secret).verify(req.body, lower(req.headers))
    first, _, third = (json.loads(r.body) for r in receiver.requests)
    assert first["type"] == "transaction"
    assert first["data"] == builtin_event_types()["transaction"].sample
    assert receiver.requests[1].body == delivered.body  # an envelope is kept byte for byte
    assert receiver.requests[1].headers["webhook-id"] == str(delivered.id)
    assert third["data"] == {"id": "inv_1"}
    assert result.exit_code == 2  # two bad lines, reported and skipped
    assert "error: line 4: not valid JSON" in result.stderr
    assert "error: line 6: unknown event type 'no.such.type'" in result.stderr
    assert result.stdout.count("200 OK") == 3 and secret not in result.stdout


async def test_stdin_failures_exit_1_and_a_generated_cobo_key_is_printed(
        receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(status=500, body="boom"))
    result = await invoke("listen", "--forward-to", receiver.url, "--scheme", "cobo",
                          "--stdin", input=json.dumps({"type": "wallets.created"}) + "\n")
    assert result.exit_code == 1, result.output
    assert "failed: http_status" in result.stdout
    public = next(line.split()[2] for line in result.stdout.splitlines()
                  if line.startswith("public key:"))
    req = receiver.requests[0]
    verify_cobo(public, req.headers, req.body)


@pytest.fixture
async def forwarding(receiver: Receiver) -> AsyncIterator[tuple[CaptureServer, str]]:
    secret = generate_secret("standard-v1")
    async with sandbox_transport() as session:
        forwarder = Forwarder(session, receiver.url, signing_key("standard-v1", secret),
                              builtin_event_types())
        server = CaptureServer(respond=forwarder.respond)
        await server.start("127.0.0.1", 0)
        yield server, secret
        await server.stop()


async def test_events_posted_to_the_port_are_forwarded_and_answered_with_the_local_reply(
        receiver: Receiver, forwarding: tuple[CaptureServer, str]) -> None:
    server, secret = forwarding
    receiver.reply_with(Reply(status=200, body="thanks"), Reply(status=400, body="nope"))
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/anything",
                             json={"type": "messages", "data": {"messages": []}}) as resp:
            assert (resp.status, await resp.text()) == (200, "thanks")
        async with http.post(server.url, data=b'{"type": "errors"}') as resp:
            assert (resp.status, await resp.text()) == (400, "nope")
        async with http.post(server.url, data=b"[]") as resp:
            assert resp.status == 422
            assert (await resp.json())["error"]["field"] == "type"
        async with http.get(server.url + "/_requests") as resp:
            assert len((await resp.json())["data"]) == 3
    assert len(receiver.requests) == 2
    for req in receiver.requests:
        Webhook(secret).verify(req.body, lower(req.headers))
    await receiver.stop()
    async with aiohttp.ClientSession() as http, http.post(
            server.url, data=b'{"type": "errors"}') as resp:
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "forward_failed"


async def test_listen_command_serves_until_interrupted(receiver: Receiver) -> None:
    """The command as a developer runs it: a subprocess on a free port, Ctrl-C to stop."""
    secret = generate_secret("standard-v1")
    env = {**os.environ, "DISPATCHER_LOG__LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", "listen", "--forward-to", receiver.url,
        "--secret", secret, "--port", "0", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line.startswith("forwarding events POSTed to http://127.0.0.1:"), line
        url = line.split()[4]
        async with aiohttp.ClientSession() as http, http.post(
                url, json={"type": "transaction"}) as resp:
            assert resp.status == 200
        Webhook(secret).verify(receiver.requests[0].body, lower(receiver.requests[0].headers))
        printed = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        assert printed.startswith("transaction ") and "200 OK" in printed
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
