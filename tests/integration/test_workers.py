"""`dispatcher serve` with several worker processes: they share the port, /metrics
answers the totals of all of them, a killed worker is restarted and nothing it held
is lost, and the roles split API and delivery between daemons."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import TEST_ENV
from tests.integration.test_api_support import Api, ApiServer, new_api
from tests.support.daemon import DaemonProcess
from tests.support.receiver import Receiver, Reply

SRC = Path(__file__).resolve().parents[2] / "src" / "dispatcher"


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


async def wait_children(daemon: DaemonProcess, count: int, timeout: float = 20) -> list[int]:
    assert daemon.proc is not None
    async with asyncio.timeout(timeout):
        while len(pids := child_pids(daemon.proc.pid)) != count:
            await asyncio.sleep(0.1)
    return pids


async def tenant_api(http: aiohttp.ClientSession, daemon: DaemonProcess, dsn: str) -> Api:
    return await new_api(http, ApiServer(daemon.url, dsn, daemon))


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def test_workers_share_the_port_and_metrics_count_them_all(
    daemon_factory: Callable[..., Any], db_url: str, receiver: Receiver
) -> None:
    daemon: DaemonProcess = await daemon_factory(DISPATCHER_SERVER__WORKERS="3",
                                                 DISPATCHER_LOG__LEVEL="info")
    assert len(await wait_children(daemon, 3)) == 3
    async with aiohttp.ClientSession() as http:
        api = await tenant_api(http, daemon, db_url)
        await api.create_endpoint(receiver.url)
        # Separate connections, so the kernel spreads them over the workers.
        for n in range(60):
            async with aiohttp.ClientSession() as one:
                reply = await Api(one, api.server, api.key, api.tenant).publish(
                    "transaction", {"n": n})
                assert reply["id"]
        await receiver.wait_for(60, timeout=20)
        await asyncio.sleep(0.5)
        for _ in range(12):
            async with aiohttp.ClientSession() as one, one.get(daemon.url + "/metrics") as resp:
                text = await resp.text()
            assert metric(text, 'dispatcher_attempts_total{outcome="success"}') == 60
            assert metric(text, 'dispatcher_deliveries_finished_total{status="Success"}') == 60
    log = daemon.log()
    # More than one worker delivered: each process logs its engine start.
    assert log.count('"engine.started"') == 3


async def test_a_killed_worker_is_restarted_and_loses_nothing(
    daemon_factory: Callable[..., Any], db_url: str, receiver: Receiver
) -> None:
    daemon: DaemonProcess = await daemon_factory(DISPATCHER_SERVER__WORKERS="2",
                                                 DISPATCHER_LOG__LEVEL="info")
    before = await wait_children(daemon, 2)
    receiver.reply_with(then=Reply(delay=0.05))
    async with aiohttp.ClientSession() as http:
        api = await tenant_api(http, daemon, db_url)
        await api.create_endpoint(receiver.url, max_in_flight=20)
        for chunk in range(4):
            reply = await api.post("/v1/events/batch", {"events": [
                {"type": "transaction", "data": {"n": chunk * 250 + n}} for n in range(250)]})
            assert reply.status == 202, reply
        await receiver.wait_for(100, timeout=20)
        os.kill(before[0], signal.SIGKILL)
        # Its leases are released at once: everything arrives well before they expire (60 s).
        async with asyncio.timeout(30):
            while len({r.headers["webhook-id"] for r in receiver.requests}) < 1000:
                await asyncio.sleep(0.1)
        after = await wait_children(daemon, 2)
    assert before[0] not in after
    log = daemon.log()
    assert '"daemon.worker_died"' in log and '"daemon.leases_released"' in log
    # Still serving with both workers.
    async with aiohttp.ClientSession() as http, http.get(daemon.url + "/readyz") as resp:
        assert resp.status == 200


async def test_api_and_worker_roles_split_publishing_from_delivery(
    daemon_factory: Callable[..., Any], db_url: str, receiver: Receiver
) -> None:
    api_only: DaemonProcess = await daemon_factory(DISPATCHER_SERVER__ROLE="api",
                                                   DISPATCHER_SERVER__WORKERS="1")
    async with aiohttp.ClientSession() as http:
        api = await tenant_api(http, api_only, db_url)
        endpoint = await api.create_endpoint(receiver.url)
        event = await api.publish("transaction", {"x": 1})
        await asyncio.sleep(0.5)
        assert receiver.requests == []  # nobody delivers yet

        worker: DaemonProcess = await daemon_factory(DISPATCHER_SERVER__ROLE="worker",
                                                     DISPATCHER_SERVER__WORKERS="2")
        await receiver.wait_for(1)
        await api.wait_for_status(endpoint["id"], event["id"], "Success")
        # A delivery-only daemon serves probes and metrics, not the management API.
        async with http.get(worker.url + "/v1/endpoints",
                            headers={"Authorization": f"Bearer {api.key}"}) as resp:
            assert resp.status == 404
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(worker.url + path) as resp:
                assert resp.status == 200, path
    assert '"engine.started"' not in api_only.log()


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_api_and_the_engine_do_not_import_each_other() -> None:
    for package, forbidden in (("api", "dispatcher.engine"), ("engine", "dispatcher.api")):
        for path in (SRC / package).rglob("*.py"):
            bad = {m for m in imported_modules(path) if m.startswith(forbidden)}
            assert not bad, f"{path.relative_to(SRC)} imports {bad}"


async def test_a_first_start_that_cannot_listen_keeps_the_admin_key_for_the_next(
    daemon_factory: Callable[..., Any], db_url: str, tmp_path: Path
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    env = {**os.environ, **TEST_ENV, "DISPATCHER_DATABASE_URL": db_url,
           "DISPATCHER_DATA_DIR": str(tmp_path / "data")}
    try:
        failed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "dispatcher", "serve", "--port",
             str(busy.getsockname()[1])],
            env=env, capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert failed.returncode != 0
    assert "admin API key" not in failed.stderr + failed.stdout
    daemon: DaemonProcess = await daemon_factory()
    assert "admin API key (operator, shown once)" in daemon.log()


async def test_a_worker_whose_supervisor_died_while_it_started_exits_at_once(
    db_url: str, tmp_path: Path
) -> None:
    """Its parent is already init (or a subreaper) when it looks: it must not serve."""
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        env = {**os.environ, **TEST_ENV, "DISPATCHER_DATABASE_URL": db_url,
               "DISPATCHER_DATA_DIR": str(tmp_path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", "worker-process", "--fd", str(sock.fileno()),
            "--role", "all", "--owner", str(uuid.uuid4()), "--parent", str(gone.pid),
            env=env, pass_fds=(sock.fileno(),), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        try:
            async with asyncio.timeout(30):
                out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 1
    assert b"daemon.supervisor_gone" in out


async def test_a_worker_started_without_parent_serves(db_url: str, tmp_path: Path) -> None:
    """A supervisor of an earlier version passes no --parent (an upgrade in place):
    the worker takes its parent at start-up and serves."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {**os.environ, **TEST_ENV, "DISPATCHER_DATABASE_URL": db_url,
               "DISPATCHER_DATA_DIR": str(tmp_path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", "worker-process", "--fd", str(sock.fileno()),
            "--role", "api", "--owner", str(uuid.uuid4()),
            env=env, pass_fds=(sock.fileno(),), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            async with asyncio.timeout(30), aiohttp.ClientSession() as http:
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                            if resp.status == 200:
                                break
                    await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_workers_do_not_outlive_a_killed_supervisor(
    daemon_factory: Callable[..., Any]
) -> None:
    """The supervisor killed with SIGKILL: its workers exit by themselves (they hold
    the listening socket), so the next `serve` can bind the same port."""
    daemon: DaemonProcess = await daemon_factory(DISPATCHER_SERVER__WORKERS="2",
                                                 DISPATCHER_SERVER__GRACE_PERIOD_SECONDS="1")
    workers = await wait_children(daemon, 2)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(daemon.proc.wait)

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split()[2] != "Z"
        except FileNotFoundError:
            return False

    async with asyncio.timeout(20):  # grace (1 s) + the hard-exit margin (10 s), at most
        while any(alive(pid) for pid in workers):
            await asyncio.sleep(0.2)
    again = DaemonProcess(daemon.env, daemon.log_path)
    again.port = daemon.port
    await again.start()
    assert await again.stop() == 0
