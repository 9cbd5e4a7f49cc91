"""The capture receiver (`dispatcher sandbox capture`): records every request,
verifies signatures when it has the key, answers with the configured status, and
serves the last requests as JSON at GET /_requests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result

from dispatcher.cli import main
from dispatcher.sandbox.capture import CaptureServer, make_verifier
from dispatcher.signing import generate_secret, public_key, public_key_pem


async def invoke(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args),
                                   env={"DISPATCHER_LOG__LEVEL": "warning"})


async def requests_of(server: CaptureServer) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/_requests") as resp:
        assert resp.status == 200
        data: list[dict[str, object]] = (await resp.json())["data"]
        return data


@pytest.mark.parametrize(("scheme", "how"), [("standard-v1", "secret"),
                                              ("standard-v1a", "public"),
                                              ("standard-v1a", "pem"),
                                              ("cobalt", "secret"), ("cobo", "public"),
                                              ("cobo", "pem"), ("cobo", "secret")])
async def test_sandbox_send_to_capture_verifies(tmp_path: Path, scheme: str, how: str) -> None:
    secret = generate_secret(scheme)
    public = {"secret": None, "public": public_key(scheme, secret),
              "pem": public_key_pem(secret) if how == "pem" else None}[how]
    server = CaptureServer(status=202, keep=2, save_dir=tmp_path / "saved",
                           verifier=make_verifier(scheme, secret if how == "secret" else None,
                                                  public))
    await server.start("127.0.0.1", 0)
    try:
        for _ in range(3):
            sent = await invoke("sandbox", "send", server.url + "/hook", "--scheme", scheme,
                                "--secret", secret, "--type", "transaction", "--json")
            assert sent.exit_code == 0, sent.output
            assert json.loads(sent.stdout)["status"] == 202
        async with aiohttp.ClientSession() as http, http.post(
                server.url + "/hook?x=1", data=b"forged") as resp:
            assert resp.status == 202
        got = await requests_of(server)
    finally:
        await server.stop()
    assert [r["n"] for r in got] == [3, 4]  # the last `keep`
    assert got[0]["verified"] is True and got[0]["verification_error"] is None
    assert got[0]["method"] == "POST" and got[0]["path"] == "/hook"
    assert json.loads(str(got[0]["body"]))["type"] == "transaction"
    assert got[1]["verified"] is False and got[1]["path"] == "/hook?x=1"
    assert got[1]["verification_error"] and got[1]["body"] == "forged"
    saved = sorted((tmp_path / "saved").iterdir())
    assert [p.name for p in saved] == ["000001.json", "000002.json", "000003.json",
                                       "000004.json"]
    assert json.loads(saved[0].read_text())["verified"] is True


async def test_without_a_key_nothing_is_verified_and_binary_bodies_survive() -> None:
    server = CaptureServer(status=204)
    await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http, http.put(
                server.url + "/x", data=b"\xff\x00") as resp:
            assert resp.status == 204
        got = await requests_of(server)
    finally:
        await server.stop()
    assert got[0]["verified"] is None and got[0]["body"] is None
    assert got[0]["body_base64"] == "/wA=" and got[0]["method"] == "PUT"


async def test_capture_command_prints_verifies_and_serves(tmp_path: Path) -> None:
    """The command as a user runs it: a subprocess, Ctrl-C to stop."""
    secret = generate_secret("standard-v1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", "sandbox", "capture", "--port", "0",
        "--status", "201", "--secret", secret, "--save", str(tmp_path / "out"),
        env={**os.environ, "DISPATCHER_LOG__LEVEL": "warning"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert banner.startswith("capturing on http://127.0.0.1:"), banner
        url = banner.split()[2]
        sent = await invoke("sandbox", "send", url + "/hook", "--secret", secret,
                            "--type", "messages")
        assert sent.exit_code == 0 and "response: 201" in sent.stdout, sent.output
        first = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        assert first.startswith("#1 POST /hook  signature: verified"), first
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    assert '"type": "messages"' in out.decode()  # the body, pretty-printed
    assert (tmp_path / "out" / "000001.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--scheme", "nope"], "unknown signing scheme 'nope'"),
    (["--secret", "whsec_***"], "invalid standard-v1 secret"),
    (["--public-key", "whpk_x"], "standard-v1 uses a shared secret"),
    (["--scheme", "cobo", "--public-key", "abcd"], "32 bytes"),
    (["--scheme", "standard-v1a", "--public-key", "deadbeef"], "starts with whpk_"),
    (["--scheme", "cobo", "--public-key", "-----BEGIN PUBLIC KEY-----\nxx\n"],
     "unreadable public key"),
    (["--scheme", "cobo", "--secret", "ab" * 32, "--public-key", "ab" * 32], "not both"),
])
async def test_bad_input_is_an_error(args: list[str], message: str) -> None:
    result = await invoke("sandbox", "capture", "--port", "0", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr


async def test_a_port_in_use_exits_1() -> None:
    server = CaptureServer()
    await server.start("127.0.0.1", 0)
    try:
        result = await invoke("sandbox", "capture", "--port", str(server.port))
    finally:
        await server.stop()
    assert result.exit_code == 1 and result.stderr.startswith("error: "), result.output
