"""`dispatcher listen --forward-to URL` connected to a daemon (two worker processes):
events published through the API arrive at a local receiver verified by the
`standardwebhooks` package and are recorded as the endpoint's attempts, a failed
answer is retried on the normal schedule, and stopping (or killing) the listener
leaves no endpoint behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
from standardwebhooks import Webhook

from dispatcher.config import Config
from dispatcher.relay import abandoned_listeners_job
from dispatcher.secretbox import load_secret_box
from dispatcher.store.listeners import mark_listener
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Receiver, Reply

if TYPE_CHECKING:  # imported by name, pytest would try to collect it here
    from tests.support.pg import TestPostgres

http = support.http
GRACE = 1.0


@pytest.fixture(scope="module")
def listen_server(pg: TestPostgres,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("listen")
    config = tmp / "dispatcher.toml"
    config.write_text('[delivery]\ndefault_retry_policy = "quick"\n'
                      '[retry_policies.quick]\nkind = "fixed"\ndelays = [0.3, 0.3]\n')
    yield from support.start_server(
        pg, tmp, DISPATCHER_CONFIG=str(config), DISPATCHER_SERVER__WORKERS="2",
        DISPATCHER_SERVER__LISTEN_GRACE_SECONDS=str(GRACE))


@pytest.fixture
async def api(http: aiohttp.ClientSession, listen_server: ApiServer) -> Api:
    return await support.new_api(http, listen_server)


class Listener:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def read_until(self, prefix: str, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"listener exited: {self.lines}"
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line


@pytest.fixture
async def start_listener(api: Api) -> AsyncIterator[Any]:
    started: list[Listener] = []

    async def start(*args: str, key: str | None = None) -> Listener:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        env.update({"DISPATCHER_URL": api.server.url, "DISPATCHER_API_KEY": key or api.key,
                    "DISPATCHER_LOG__LEVEL": "warning"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", "listen", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        listener = Listener(proc)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        if listener.proc.returncode is None:
            listener.proc.kill()
            await listener.proc.wait()


async def listen_endpoints(api: Api) -> list[dict[str, Any]]:
    reply = await api.get("/v1/endpoints")
    return [e for e in reply.body["data"] if e["url"].startswith("listen:")]


async def wait_until_gone(api: Api, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await listen_endpoints(api):
            await asyncio.sleep(0.1)


async def test_listen_forwards_verified_events_and_records_them(
    api: Api, receiver: Receiver, start_listener: Any
) -> None:
    receiver.reply_with(Reply(500))  # the first answer fails: retried on the schedule
    listener = await start_listener("--forward-to", receiver.url, "--events", "transaction")
    ready = await listener.read_until("Ready. Signing secret: ")
    secret = ready.split()[-1]
    assert secret.startswith("whsec_")
    (endpoint,) = await listen_endpoints(api)
    assert endpoint["event_types"] == ["transaction"]

    ids = [(await api.publish("transaction", {"n": n}))["id"] for n in range(4)]
    await api.publish("block", {"h": 1})  # not subscribed: never forwarded
    for event_id in ids:
        await api.wait_for_status(endpoint["id"], event_id, "Success", timeout=15)
    received = await receiver.wait_for(5)
    verifier = Webhook(secret)  # an independent verifier of the forwarded requests
    seen = [verifier.verify(r.body, dict(r.headers))["event_id"] for r in received]
    assert sorted(set(seen)) == sorted(ids) and len(seen) == 5  # one retried
    retried = next(e for e in ids if seen.count(e) == 2)
    logs = (await api.get(f"/v1/endpoints/{endpoint['id']}/events/{retried}/logs")).body
    assert [a["response"]["status"] for a in logs["data"]] == [500, 200]
    assert logs["data"][1]["request"]["headers"]["webhook-id"] == retried

    await listener.read_until("<-- 200 POST ")
    assert any(line == f"--> transaction [{ids[0]}]" for line in listener.lines)

    listener.proc.send_signal(signal.SIGINT)  # Ctrl-C: goodbye, removed at once
    assert await asyncio.wait_for(listener.proc.wait(), 10) == 0
    await wait_until_gone(api, timeout=5)


async def test_a_killed_listener_leaves_no_endpoint_and_its_deliveries_are_dropped(
    api: Api, receiver: Receiver, start_listener: Any
) -> None:
    listener = await start_listener("--forward-to", receiver.url)
    await listener.read_until("Ready. Signing secret: ")
    (endpoint,) = await listen_endpoints(api)
    listener.proc.kill()
    await listener.proc.wait()
    published = await api.publish("transaction", {"n": 1})  # while the endpoint waits
    assert [d["endpoint_id"] for d in published["deliveries"]] == [endpoint["id"]]
    await wait_until_gone(api, timeout=GRACE + 10)
    event = (await api.get(f"/v1/events/{published['id']}")).body
    assert event["deliveries"] == []  # pending deliveries went with the endpoint
    await asyncio.sleep(0.5)
    assert receiver.requests == []


async def test_listen_errors(api: Api, start_listener: Any, receiver: Receiver) -> None:
    bad_type = await start_listener("--forward-to", receiver.url, "--events", "no.such.type")
    wrong_key = await start_listener("--forward-to", receiver.url, key="dk_wrong")
    bad_url = await start_listener("--forward-to", "ftp://x")
    for listener, status in ((bad_type, 2), (wrong_key, 4), (bad_url, 2)):
        out, err = await asyncio.wait_for(listener.proc.communicate(), 15)
        assert listener.proc.returncode == status, (out, err)
        assert err.decode().startswith("error: ") and b"Traceback" not in err
    assert await listen_endpoints(api) == []


def test_listen_help_has_an_example() -> None:
    from click.testing import CliRunner

    from dispatcher.cli import main

    result = CliRunner().invoke(main, ["listen", "--help"])
    assert "Example:\n    dispatcher listen --forward-to" in result.output


async def test_maintenance_removes_a_listener_endpoint_whose_holder_died(
    pool: asyncpg.Pool, config: Config
) -> None:
    """The daemon process holding a listener died: nobody refreshes its endpoint, so
    the maintenance job removes it once the grace period and two refreshes passed."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    tenant = await make_tenant(pool)
    box = load_secret_box(config)
    dead, _ = await make_endpoint(pool, box, tenant, "listen:http://127.0.0.1:1/a")
    alive, _ = await make_endpoint(pool, box, tenant, "listen:http://127.0.0.1:1/b")
    kept, _ = await make_endpoint(pool, box, tenant, "https://example.com/hook")
    await mark_listener(pool, dead, uuid.uuid4(), now - timedelta(seconds=GRACE + 10.5))
    await mark_listener(pool, alive, uuid.uuid4(), now - timedelta(seconds=GRACE + 9.5))
    job = abandoned_listeners_job(GRACE)
    async with pool.acquire() as conn:
        assert await job(conn, now) == 1
    left = {r["id"] for r in await pool.fetch("SELECT id FROM endpoints")}
    assert left == {alive, kept}


class CuttableProxy:
    """A TCP proxy to the daemon whose open connections can be cut, as a network
    failure would; new connections still go through."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()


async def test_a_dropped_connection_is_resumed_within_the_grace_period(
    api: Api, receiver: Receiver, listen_server: ApiServer
) -> None:
    proxy = CuttableProxy(listen_server.daemon.port)
    await proxy.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update({"DISPATCHER_URL": f"http://127.0.0.1:{proxy.port}",
                "DISPATCHER_API_KEY": api.key, "DISPATCHER_LOG__LEVEL": "warning"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", "listen", "--forward-to", receiver.url, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    listener = Listener(proc)
    try:
        secret = (await listener.read_until("Ready. Signing secret: ")).split()[-1]
        (endpoint,) = await listen_endpoints(api)
        proxy.cut()
        await listener.read_until("connection lost; reconnecting")
        await listener.read_until("Reconnected.")
        await asyncio.sleep(GRACE + 1)  # past the grace period: the endpoint stayed
        assert [e["id"] for e in await listen_endpoints(api)] == [endpoint["id"]]
        published = await api.publish("transaction", {"n": 1})
        await api.wait_for_status(endpoint["id"], published["id"], "Success", timeout=15)
        (req,) = await receiver.wait_for(1)
        Webhook(secret).verify(req.body, dict(req.headers))  # the same secret as before
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await wait_until_gone(api, timeout=5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proxy.stop()


async def test_odd_result_frames_are_recorded_as_answers_and_keep_the_connection(
    api: Api, http: aiohttp.ClientSession,
) -> None:
    """A listener may send anything: a status out of range is a protocol error, NUL in
    a header is stored replaced, a duration of NaN is 0; each is an attempt in the log
    and the connection carries the retry."""
    url = api.server.url + "/v1/listen?forward_to=http://127.0.0.1:9/hook"
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {api.key}"}) as ws:
        ready = await ws.receive_json(timeout=10)
        event = await api.publish("transaction", {"n": 1})
        first = await ws.receive_json(timeout=10)
        assert first["type"] == "delivery" and first["event_id"] == event["id"]
        await ws.send_str(  # NaN is not JSON, but json.loads takes it
            f'{{"type": "result", "delivery_id": {first["delivery_id"]}, "status": {10**30},'
            ' "headers": {"x-odd": "a\\u0000b"}, "duration_ms": NaN}')
        again = await ws.receive_json(timeout=10)  # retried on the endpoint's schedule
        assert again["delivery_id"] == first["delivery_id"] and again["attempt"] == 2
        await ws.send_json({"type": "result", "delivery_id": again["delivery_id"],
                            "status": 200, "headers": {"x-odd\u0000": "a\u0000b"},
                            "body": "ok\u0000", "duration_ms": 3})
        logs: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(logs) < 2:
                await asyncio.sleep(0.05)
                reply = await api.get(f"/v1/endpoints/{ready['endpoint_id']}/events/"
                                      f"{event['id']}/logs")
                logs = reply.body["data"]
        await ws.send_json({"type": "bye"})
    assert logs[0]["failure_reason"] == "protocol_error" and logs[0]["response"] is None
    assert "outside 100-599" in logs[0]["error"] and logs[0]["duration_ms"] == 0
    assert logs[1]["failure_reason"] is None and logs[1]["response"]["status"] == 200
    assert logs[1]["response"]["headers"] == {"x-odd\ufffd": "a\ufffdb"}
    assert logs[1]["response"]["body"] == "ok\ufffd"
