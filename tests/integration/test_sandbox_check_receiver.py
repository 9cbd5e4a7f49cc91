"""`dispatcher check-receiver`: a correct receiver (written here with
`dispatcher.verify`) passes every check for every scheme; receivers that accept
everything, crash on bad signatures or forget duplicates fail the right checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from dispatcher.cli import main
from dispatcher.signing import SCHEMES, generate_secret, public_key
from dispatcher.verify import VerificationError, verify_cobalt, verify_cobo, verify_standard
from tests.support.receiver import Receiver, Reply


async def invoke(*args: str) -> Result:
    """The CLI in-process, in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args),
                                   env={"DISPATCHER_LOG__LEVEL": "warning"})


class GoodReceiver:
    """What the README tells a customer to write: verify the raw body, 401 if that
    fails, dedupe on event_id and acknowledge duplicates with 200."""

    def __init__(self, scheme: str, secret: str, *, bad_status: int = 401,
                 dedupe: bool = True) -> None:
        self.scheme = scheme
        self.key = public_key(scheme, secret) or secret
        self.bad_status = bad_status
        self.dedupe = dedupe
        self.seen: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def verify(self, headers: Any, body: bytes) -> None:
        if self.scheme == "cobalt":
            verify_cobalt(self.key, headers, body)
        elif self.scheme == "cobo":
            verify_cobo(self.key, headers, body)
        else:
            verify_standard(self.key, headers, body)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self.verify(request.headers, body)
        except VerificationError as exc:
            return web.Response(status=self.bad_status, text=str(exc))
        event_id = json.loads(body)["event_id"]
        if event_id in self.seen and not self.dedupe:
            return web.Response(status=409, text="already processed")
        self.seen.add(event_id)
        return web.Response(status=200, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def good_receiver() -> AsyncIterator[Callable[..., Any]]:
    started: list[GoodReceiver] = []

    async def make(scheme: str, secret: str, **kwargs: Any) -> GoodReceiver:
        r = GoodReceiver(scheme, secret, **kwargs)
        await r.start()
        started.append(r)
        return r

    yield make
    for r in started:
        await r.stop()


def statuses(result: Result) -> dict[str, str]:
    return {c["id"]: c["status"] for c in json.loads(result.stdout)["checks"]}


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_correct_receiver_passes_every_check(
        good_receiver: Callable[..., Any], scheme: str) -> None:
    secret = generate_secret(scheme)
    receiver = await good_receiver(scheme, secret)
    result = await invoke("check-receiver", receiver.url, "--secret", secret,
                          "--scheme", scheme, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True
    expected = {"a": "pass", "b": "pass", "c": "pass", "d": "pass", "e": "pass", "f": "pass"}
    if scheme == "cobalt":
        expected["d"] = "skip"
        d = next(c for c in report["checks"] if c["id"] == "d")
        assert "no timestamp" in d["reason"] and d["required"] is False
    assert statuses(result) == expected
    assert len(receiver.seen) == 1  # (a) and (b) are one event; no probe got past verification


async def test_a_receiver_that_accepts_everything_fails_c_d_e(receiver: Receiver) -> None:
    secret = generate_secret("standard-v1")
    result = await invoke("check-receiver", receiver.url, "--secret", secret, "--json")
    assert result.exit_code == 1, result.output
    assert statuses(result) == {"a": "pass", "b": "pass", "c": "fail", "d": "fail",
                                "e": "fail", "f": "pass"}
    assert json.loads(result.stdout)["passed"] is False
    # (a) and (b) are one event sent twice; (c), (d), (e) each a fresh id
    ids = [json.loads(r.body)["event_id"] for r in receiver.requests]
    assert len(ids) == 5 and ids[0] == ids[1] and len(set(ids)) == 4
    assert "webhook-signature" not in receiver.requests[4].headers


async def test_the_text_report_names_each_failure_with_a_reason(receiver: Receiver) -> None:
    result = await invoke("check-receiver", receiver.url, "--secret",
                          generate_secret("standard-v1"))
    assert result.exit_code == 1
    out = result.stdout
    assert "PASS  (a)" in out and "FAIL  (c)" in out and "FAIL  (d)" in out
    assert "does not verify the signature" in out and "does not check the signed timestamp" in out
    assert "does not require a signature" in out and "3 of 6 checks failed" in out


async def test_wrong_secret_crash_and_forgotten_duplicates(
        good_receiver: Callable[..., Any]) -> None:
    secret = generate_secret("standard-v1")
    other = await good_receiver("standard-v1", generate_secret("standard-v1"))
    wrong = await invoke("check-receiver", other.url, "--secret", secret, "--json")
    assert wrong.exit_code == 1
    a = json.loads(wrong.stdout)["checks"][0]
    assert a["status"] == "fail" and a["http_status"] == 401
    assert "check that the receiver verifies with" in a["reason"]

    crashing = await good_receiver("standard-v1", secret, bad_status=500)
    crash = await invoke("check-receiver", crashing.url, "--secret", secret, "--json")
    assert statuses(crash) == {"a": "pass", "b": "pass", "c": "fail", "d": "fail",
                               "e": "fail", "f": "pass"}
    assert "a 5xx says the receiver broke" in json.loads(crash.stdout)["checks"][2]["reason"]

    strict = await good_receiver("standard-v1", secret, dedupe=False)
    dup = await invoke("check-receiver", strict.url, "--secret", secret, "--json")
    assert dup.exit_code == 1 and statuses(dup)["b"] == "fail"


async def test_a_slow_or_dead_receiver(receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(delay=0.5))
    slow = await invoke("check-receiver", receiver.url, "--secret",
                        generate_secret("standard-v1"), "--timeout", "0.2", "--json")
    assert slow.exit_code == 1
    checks = json.loads(slow.stdout)["checks"]
    assert checks[0]["status"] == "fail" and "timeout" in checks[0]["reason"]
    assert checks[5]["status"] == "fail"
    await receiver.stop()
    dead = await invoke("check-receiver", receiver.url, "--secret",
                        generate_secret("standard-v1"))
    assert dead.exit_code == 1 and "connect_error" in dead.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["http://127.0.0.1:9/hook", "--secret", "whsec_!!"], "invalid standard-v1 secret"),
    (["http://127.0.0.1:9/hook", "--secret", "x", "--scheme", "hmac"], "unknown signing"),
    (["gopher://127.0.0.1/hook", "--secret", "x"], "url must use"),
    (["http://127.0.0.1:9/hook", "--secret", generate_secret("standard-v1"), "--type",
      "nope"], "unknown event type"),
    (["http://127.0.0.1:9/hook", "--secret", generate_secret("standard-v1"), "--data",
      "[1,"], "--data is not valid JSON"),
])
async def test_bad_input_is_an_error(args: list[str], message: str) -> None:
    result = await invoke("check-receiver", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
