"""Pieces the benchmarks share: the ~1 KB event payload, the local receivers (a raw
asyncio HTTP/1.1 server in its own process, or nginx), the raw-client ceilings
(aiohttp and pyreqwest), CPU accounting and stopping child processes.

Also runnable on its own, which is how the benchmarks start their helper processes:

    python bench/common.py receiver [--log FILE]   answers 200 at once; prints its port
    python bench/common.py hang                    accepts, reads, never answers
    python bench/common.py ceiling --url URL [--events 50000] [--concurrency 100]
                                   [--client aiohttp|pyreqwest]

A receiver given --log writes one line per request, `<time.monotonic()> <webhook-id>`,
flushed every 20 ms. time.monotonic() is one clock for every process on Linux, so
arrival times compare with times taken in the benchmark process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve()
EVENT_TYPE = "wallets.transaction.updated"


# A Cobo-style transaction, about 1 KB serialized: many small fields, like real event
# data, not one long string.
PAYLOAD: dict[str, Any] = {
    "data_type": "Transaction",
    "transaction_id": "aff0e1cb-15b2-4e1f-9b9d-a9133715986f",
    "cobo_id": "20231213122855000000000000000000",
    "request_id": "760a1955-e212-4dfb-a8d0-e66312a1a051",
    "wallet_id": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "type": "Deposit",
    "status": "Confirming",
    "chain_id": "ETH",
    "token_id": "ETH_USDT",
    "asset_id": "USDT",
    "source": {"source_type": "DepositFromAddress",
               "addresses": ["0x80c67432656d59144ceff962e8faf8926599bcf8"]},
    "destination": {"destination_type": "Address",
                    "address": "0x9d2ad5bf3a0b2ce3e1e1ef6ce0a2b4ae56b2a9f1",
                    "amount": "1024.500000"},
    "result": {"result_type": "Transaction", "tx_hash":
               "0x1ee5e0a1b5fbc8e2b3e7e6a35f5fa2a4a16b9d9c1fbc6b2ad3ee1f8e5c4b7a90"},
    "fee": {"fee_type": "EVM_EIP_1559", "token_id": "ETH", "fee_used": "0.000651"},
    "initiator": "api_key_3f8a", "initiator_type": "API",
    "confirmed_num": 12, "confirming_threshold": 64,
    "block_info": {"block_number": 18760812, "block_timestamp": 1701396866},
    "description": "",
    "created_timestamp": 1701396866000, "updated_timestamp": 1701396932000,
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (another process could take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- raw asyncio receiver (its own process) ---------------------------------------

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n"
            b"Connection: keep-alive\r\n\r\nok")


class _Http(asyncio.Protocol):
    """Counts requests by their end of headers and Content-Length (enough for the
    keep-alive POSTs aiohttp sends), logs each one's arrival and webhook-id, and
    answers 200 at once, or never (`answer=False`)."""

    def __init__(self, log: IO[str] | None, answer: bool) -> None:
        self.log = log
        self.answer = answer
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            i = head.find(b"\r\ncontent-length:")
            length = 0
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17:j if j > 0 else len(head)])
            total = head_end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            if self.log is not None:
                i = head.find(b"\r\nwebhook-id:")
                msg_id = b"-"
                if i >= 0:
                    j = head.find(b"\r\n", i + 2)
                    msg_id = head[i + 13:j if j > 0 else len(head)].strip() or b"-"
                self.log.write(f"{time.monotonic():.6f} {msg_id.decode('latin-1')}\n")
            if self.answer:
                self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def _receiver_main(log: IO[str] | None, answer: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(log, answer), "127.0.0.1", 0, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(server.sockets[0].getsockname()[1], flush=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
            if log is not None:
                log.flush()
    finally:
        server.close()
        if log is not None:
            log.close()


@dataclass
class Receiver:
    """A receiver process: where to POST, its arrival log (None: not logged) and the
    clock its log times are on (the benchmark takes its own times with `clock`)."""

    kind: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None
    clock: Callable[[], float] = time.monotonic
    workdir: Path | None = None

    def stop(self) -> None:
        stop_process(self.proc)


def start_python_receiver(log_path: Path | None = None, *, answer: bool = True) -> Receiver:
    """The raw asyncio receiver (or, answer=False, one that never answers)."""
    cmd = [sys.executable, str(HERE), "receiver" if answer else "hang"]
    if log_path is not None:
        cmd += ["--log", str(log_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
    try:
        port = int(_read_line(proc, 15))
    except BaseException:
        stop_process(proc)
        raise
    return Receiver("python-asyncio" if answer else "hang", f"http://127.0.0.1:{port}/hook",
                    proc, log_path)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line a child prints, within `timeout` seconds."""
    assert proc.stdout is not None
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"{proc.args!r} printed nothing within {timeout} s")
    line = proc.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"{proc.args!r} exited with {proc.wait(5)}")
    return line


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format arrivals '$msec $http_webhook_id';
    access_log {d}/access.log arrivals;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def start_nginx_receiver(workdir: Path) -> Receiver:
    """nginx answering 200 "ok", its access log `$msec $http_webhook_id` (wall-clock
    seconds, so this receiver's clock is time.time)."""
    nginx = shutil.which("nginx")
    assert nginx is not None
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # the free port may be taken meanwhile: try another
        port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=workdir, port=port))
        log = workdir / "access.log"
        log.touch()
        for extra in (["-e", str(workdir / "error.log")], []):  # -e: nginx 1.19.5+
            proc = subprocess.Popen([nginx, "-p", str(workdir), "-c", str(conf), *extra],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    start_new_session=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=0.2):
                    return Receiver("nginx", f"http://127.0.0.1:{port}/hook", proc, log,
                                    time.time, workdir)
                time.sleep(0.05)
            stop_process(proc)
    err = (workdir / "error.log").read_text() if (workdir / "error.log").exists() else ""
    raise RuntimeError(f"nginx did not start: {err[-2000:]}")


def start_receiver(workdir: Path, prefer_nginx: bool = True) -> Receiver:
    """nginx when it is on PATH, else the raw asyncio receiver; both log arrivals."""
    if prefer_nginx and shutil.which("nginx"):
        return start_nginx_receiver(workdir / "nginx")
    return start_python_receiver(workdir / "arrivals.log")


# -- ceiling: raw clients, the same POSTs without queue or database -------------------

CLIENTS = ("aiohttp", "pyreqwest")
RESPONSE_CAP = 4096  # bytes of an answer the pyreqwest ceiling reads, as the engine will


def delivery_body() -> bytes:
    """What the engine POSTs for one event of PAYLOAD: the same envelope and size."""
    from dispatcher.store.events import event_body

    return event_body(uuid.uuid4(), EVENT_TYPE, datetime.now(UTC), {**PAYLOAD, "seq": 0})


@dataclass
class CeilingRun:
    per_s: float  # successful requests per second
    cpu_s_per_10k: float  # this process's CPU (every thread) per 10,000 requests
    cpu_share: float  # of one core, over the timed window
    failed: int = 0  # requests that raised (timeouts, resets) or were not 2xx


Post = Callable[[bytes, dict[str, str]], Coroutine[Any, Any, bool]]


async def _drive(post: Post, n: int, conc: int, body: bytes) -> CeilingRun:
    """`n` signed POSTs of `body` through `post` (True: a 2xx), `conc` at a time."""
    secret = os.urandom(32)
    sem = asyncio.Semaphore(conc)
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        msg_id, ts = f"msg_{i}", str(int(time.time()))
        sig = base64.b64encode(hmac.new(secret, f"{msg_id}.{ts}.".encode() + body,
                                        hashlib.sha256).digest()).decode()
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": ts, "webhook-signature": "v1," + sig}
        async with sem:
            try:
                good = await post(body, headers)
            except Exception:  # a timeout or a reset counts as a failed request
                good = False
        ok += good  # not `ok += await ...`: that reads ok before the await

    cpu, t = time.process_time(), time.perf_counter()
    for i in range(0, n, 2000):
        await asyncio.gather(*(one(j) for j in range(i, min(n, i + 2000))))
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu
    return CeilingRun(ok / dt, cpu / n * 10_000, cpu / dt, n - ok)


async def ceiling_run(url: str, n: int, conc: int, client: str = "aiohttp",
                      body: bytes | None = None) -> CeilingRun:
    """Raw `client` POSTing `n` signed ~1 KB bodies, `conc` at a time, 2 s total
    timeout each; aiohttp reads whole answers, pyreqwest at most RESPONSE_CAP bytes."""
    body = body if body is not None else delivery_body()
    if client == "pyreqwest":
        from datetime import timedelta

        from pyreqwest.client import ClientBuilder

        # No redirects, proxies or decompression: what the engine's client is built with.
        builder = (ClientBuilder().timeout(timedelta(seconds=2)).follow_redirects(False)
                   .no_proxy().max_connections(conc)
                   .gzip(False).brotli(False).zstd(False).deflate(False))
        async with builder.build() as c:
            async def post_pyreqwest(data: bytes, headers: dict[str, str]) -> bool:
                async with c.post(url).body_bytes(data).headers(headers).build_streamed() as r:
                    left = RESPONSE_CAP
                    while left > 0 and (chunk := await r.body_reader.read(left)) is not None:
                        left -= len(chunk)
                    return 200 <= r.status < 300

            return await _drive(post_pyreqwest, n, conc, body)

    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc),
                                     timeout=aiohttp.ClientTimeout(total=2)) as s:
        async def post_aiohttp(data: bytes, headers: dict[str, str]) -> bool:
            async with s.post(url, data=data, headers=headers) as r:
                await r.read()
                return 200 <= r.status < 300

        return await _drive(post_aiohttp, n, conc, body)


async def ceiling(url: str, n: int, conc: int, body: bytes | None = None) -> float:
    """Requests/s of raw aiohttp POSTing `n` signed ~1 KB bodies, `conc` at a time."""
    return (await ceiling_run(url, n, conc, "aiohttp", body)).per_s


async def ceiling_in_process(url: str, n: int, conc: int, timeout: float,
                             client: str = "aiohttp") -> CeilingRun:
    """The ceiling in a fresh process of its own (on uvloop when installed); killed
    if this is cancelled or takes longer than `timeout` seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE), "ceiling", "--url", url, "--events", str(n),
        "--concurrency", str(conc), "--client", client,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{client} ceiling exited with {proc.returncode}: "
                           f"{err.decode()[-2000:]}")
    return CeilingRun(**json.loads(out))


# -- CPU accounting -----------------------------------------------------------------

class CpuMeter:
    """Share of one core each group of processes used during the timed window. A
    group is some pids with all their descendants; `postgres=True` adds a group of
    every process named postgres (the server and its backends). Both are looked up
    again at the end, so processes started meanwhile (new database connections,
    worker processes) count too; those that ended meanwhile are missed."""

    def __init__(self, groups: dict[str, Iterable[int]], postgres: bool = False) -> None:
        import psutil

        self._psutil = psutil
        self._roots = {name: list(pids) for name, pids in groups.items()}
        self._postgres = postgres
        self._t0 = 0.0
        self._wall0 = 0.0
        self._c0: dict[tuple[int, float], float] = {}

    def _members(self) -> dict[str, list[Any]]:
        psutil = self._psutil
        out: dict[str, list[Any]] = {}
        for name, pids in self._roots.items():
            procs = []
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    procs += [p, *p.children(recursive=True)]
            out[name] = procs
        if self._postgres:
            out["postgres"] = [p for p in psutil.process_iter(["name"])
                               if p.info["name"] == "postgres"]
        return out

    def _cpu(self) -> dict[str, dict[tuple[int, float], float]]:
        out: dict[str, dict[tuple[int, float], float]] = {}
        for name, procs in self._members().items():
            seen = out[name] = {}
            for p in procs:
                try:
                    c = p.cpu_times()
                    seen[(p.pid, p.create_time())] = c.user + c.system
                except self._psutil.Error:
                    pass
        return out

    def start(self) -> None:
        self._wall0 = time.time()
        self._c0 = {k: v for seen in self._cpu().values() for k, v in seen.items()}
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        dt = time.perf_counter() - self._t0
        busy: dict[str, float] = {}
        for name, seen in self._cpu().items():
            total = 0.0
            for key, cpu in seen.items():
                if key in self._c0:
                    total += cpu - self._c0[key]
                elif key[1] >= self._wall0 - 1:  # started during the window
                    total += cpu
            busy[name] = round(total / dt, 2)
        return busy


# -- child processes ------------------------------------------------------------------

def stop_process(proc: subprocess.Popen[Any], grace: float = 15.0) -> int | None:
    """SIGTERM, wait up to `grace` s, then SIGKILL the process and its process group
    (children started with start_new_session=True lead their own group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    return proc.returncode


@dataclass
class Children:
    """Processes to stop at the end whatever happens, newest first."""

    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def add(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        while self.procs:
            stop_process(self.procs.pop())


# -- command line for the helper processes ------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receiver")
    r.add_argument("--log")
    h = sub.add_parser("hang")
    h.add_argument("--log")
    c = sub.add_parser("ceiling")
    c.add_argument("--url", required=True)
    c.add_argument("--events", type=int, default=50_000)
    c.add_argument("--concurrency", type=int, default=100)
    c.add_argument("--client", choices=CLIENTS, default="aiohttp")
    args = ap.parse_args()
    if args.cmd in ("receiver", "hang"):
        log = open(args.log, "a", buffering=1 << 20) if args.log else None  # noqa: SIM115
        run(_receiver_main(log, answer=args.cmd == "receiver"))
    else:
        result = run(ceiling_run(args.url, args.events, args.concurrency, args.client))
        print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
