"""Worker memory under a large fan-out: one `dispatcher serve` (this checkout's code,
embedded PostgreSQL in a fresh data directory), N endpoints subscribed to one event
type, a few large events published through the API; reports the worker processes'
resident memory before publishing, at its peak, and once every delivery arrived.

    python bench/fanout_memory.py [--endpoints 300] [--events 6] [--size 1048576]
                                  [--workers N] [--settle 5] [--json-out FILE]
                                  [--backlog] [--claim-max-bytes N]

--backlog publishes with the engine off (`delivery.enabled = false`) and then starts
the daemon again with it on, so the claims meet a backlog of many large events at
once, which is where `delivery.claim_max_bytes` bounds what a worker holds; the
baseline is then the first start's workers, and the peak is best read from VmHWM
(the drain may begin before sampling does).

Numbers per worker process (`dispatcher worker-process`, the ones that claim and
send), from /proc/<pid>/status: `baseline` is VmRSS after start-up and endpoint
creation, `peak` the highest VmRSS sampled every 20 ms while delivering (and
VmHWM, the kernel's own high-water mark, which includes start-up), `final` VmRSS
`--settle` seconds after the last of the N x events deliveries arrived. With one
worker (`--workers 1`) the supervisor process itself is measured.

The receiver is the raw asyncio one of bench/common.py, logging one line per
request; the run ends when endpoints x events lines are there, or fails after a
timeout. Everything listens on and connects to 127.0.0.1 only; every process
started here is stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from common import EVENT_TYPE, Children, free_port, start_python_receiver, stop_process

KEY_LINE = re.compile(r"admin API key \(operator, shown once\): (dk_\S+)")
SRC = Path(__file__).resolve().parent.parent / "src"
SAMPLE_SECONDS = 0.02


def note(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def serve_env(data_dir: Path, max_body: int) -> dict[str, str]:
    """Defaults, this checkout's package first on the path, and what a receiver on
    127.0.0.1 over http and large events need."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update({
        "DISPATCHER_DATA_DIR": str(data_dir),
        "DISPATCHER_URLS__ALLOW_PRIVATE_NETWORKS": "true",
        "DISPATCHER_URLS__ALLOW_HTTP": "true",
        "DISPATCHER_URLS__ALLOW_ANY_PORT": "true",
        "DISPATCHER_SERVER__MAX_BODY_BYTES": str(max_body),
        "DISPATCHER_HEALTH__WINDOW_THRESHOLD": "100000",
        "DISPATCHER_HEALTH__TOTAL_THRESHOLD": "100000",
    })
    return env


def status_kib(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's `worker-process` children; the supervisor itself if none."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == supervisor and b"worker-process" in cmdline:
            pids.append(int(entry.name))
    return sorted(pids) or [supervisor]


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def start_serve(cmd: list[str], env: dict[str, str], logdir: Path,
                children: Children) -> subprocess.Popen[bytes]:
    with open(logdir / "serve.stdout.log", "ab") as out, \
            open(logdir / "serve.stderr.log", "ab") as err:
        return children.add(subprocess.Popen(cmd, env=env, stdout=out, stderr=err,
                                             stdin=subprocess.DEVNULL,
                                             start_new_session=True))


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


class Sampler:
    """The highest VmRSS of each pid, sampled until stopped."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for pid in self.pids:
            rss = status_kib(pid, "VmRSS")
            if rss is not None and rss > self.peak[pid]:
                self.peak[pid] = rss

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()


async def wait_ready(http: aiohttp.ClientSession, base: str, proc_alive: Any,
                     timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc_alive():
            raise RuntimeError("dispatcher serve exited during start-up")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=3)) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"dispatcher serve not ready in {timeout} s")


async def read_key(stderr: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = KEY_LINE.search(read_text(stderr))
        if found:
            return found.group(1)
        await asyncio.sleep(0.1)
    raise TimeoutError("no admin API key printed")


async def call(http: aiohttp.ClientSession, method: str, url: str, key: str,
               body: Any) -> Any:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with http.request(method, url, data=data, headers=headers) as r:
        text = await r.text()
        if r.status >= 300:
            raise RuntimeError(f"{method} {url}: {r.status} {text[:300]}")
        return json.loads(text) if text else None


async def wait_arrivals(log: Path, want: int, timeout: float) -> float:
    """Seconds until `want` requests are in the receiver's log (bounded)."""
    start = time.monotonic()
    while True:
        got = count_lines(log)
        if got >= want:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{got} of {want} deliveries arrived in {timeout} s")
        await asyncio.sleep(0.1)


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    children = Children()
    with tempfile.TemporaryDirectory(prefix="fanout-memory-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            return await _measure(args, tmp, children)
        finally:
            children.stop_all()


class Daemon:
    """One `dispatcher serve` on the run's data directory (each start a new port)."""

    def __init__(self, args: argparse.Namespace, tmp: Path, children: Children) -> None:
        self.args = args
        self.tmp = tmp
        self.children = children
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = ""

    async def start(self, http: aiohttp.ClientSession, delivery: bool) -> int:
        """Start and wait until ready; returns the supervisor's pid."""
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "dispatcher", "serve", "--host", "127.0.0.1",
               "--port", str(port)]
        if self.args.workers:
            cmd += ["--workers", str(self.args.workers)]
        env = serve_env(self.tmp / "data", max(4 * self.args.size, 1 << 20))
        env["DISPATCHER_DELIVERY__ENABLED"] = "true" if delivery else "false"
        if self.args.claim_max_bytes:
            env["DISPATCHER_DELIVERY__CLAIM_MAX_BYTES"] = str(self.args.claim_max_bytes)
        proc = self.proc = start_serve(cmd, env, self.tmp, self.children)
        await wait_ready(http, self.base, lambda: proc.poll() is None, 120)
        return proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 30.0)
            self.proc = None


async def publish(http: aiohttp.ClientSession, base: str, key: str,
                  args: argparse.Namespace) -> None:
    blob_bytes = args.size * 3 // 4  # base64 text of about `size` bytes
    for n in range(args.events):
        data = {"seq": n, "blob": base64.b64encode(os.urandom(blob_bytes)).decode()}
        await call(http, "POST", base + "/v1/events", key, {"type": EVENT_TYPE, "data": data})


async def _measure(args: argparse.Namespace, tmp: Path, children: Children) -> dict[str, Any]:
    arrivals = tmp / "arrivals.log"
    receiver = start_python_receiver(arrivals)
    children.add(receiver.proc)
    daemon = Daemon(args, tmp, children)
    want = args.endpoints * args.events
    try:
        async with aiohttp.ClientSession() as http:
            supervisor = await daemon.start(http, delivery=True)
            key = await read_key(tmp / "serve.stderr.log", 30)
            for i in range(args.endpoints):
                await call(http, "POST", daemon.base + "/v1/endpoints", key, {
                    "url": f"{receiver.url}/{i}", "event_types": [EVENT_TYPE],
                    "signing_scheme": "standard-v1"})
            pids = worker_pids(supervisor)
            await asyncio.sleep(args.settle)  # let start-up and endpoint creation settle
            baseline = [status_kib(pid, "VmRSS") for pid in pids]
            note(f"workers {pids}, baseline VmRSS MiB {[mib(v) for v in baseline]}")
            if args.backlog:
                # Published while no engine runs; the next start drains the backlog.
                daemon.stop()
                await daemon.start(http, delivery=False)
                await publish(http, daemon.base, key, args)
                daemon.stop()
                pids = worker_pids(await daemon.start(http, delivery=True))
                sampler = Sampler(pids)
                sampler.start()
            else:
                sampler = Sampler(pids)
                sampler.start()
                await publish(http, daemon.base, key, args)
            took = await wait_arrivals(arrivals, want, args.timeout)
            note(f"{want} deliveries arrived {took:.1f} s after the last publish")
            await asyncio.sleep(args.settle)
            await sampler.stop()
            final = {pid: status_kib(pid, "VmRSS") for pid in pids}
            hwm = {pid: status_kib(pid, "VmHWM") for pid in pids}
    finally:
        daemon.stop()
    workers = [{
        "pid": pid,
        "baseline_mib": mib(baseline[i]) if i < len(baseline) else None,
        "peak_mib": mib(sampler.peak[pid]),
        "hwm_mib": mib(hwm[pid]),
        "final_mib": mib(final[pid]),
    } for i, pid in enumerate(pids)]
    return {
        "endpoints": args.endpoints, "events": args.events, "event_bytes": args.size,
        "deliveries": want, "backlog": args.backlog,
        "claim_max_bytes": args.claim_max_bytes or "default",
        "delivery_seconds": round(took, 1), "settle_seconds": args.settle,
        "workers": workers,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=300)
    ap.add_argument("--events", type=int, default=6)
    ap.add_argument("--size", type=int, default=1 << 20, help="bytes of each event's data")
    ap.add_argument("--workers", type=int, default=0, help="0: the daemon's default")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--backlog", action="store_true",
                    help="publish with delivery off, then drain from a fresh start")
    ap.add_argument("--claim-max-bytes", type=int, default=0,
                    help="delivery.claim_max_bytes (0: the default)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    result = asyncio.run(run_bench(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print("\nworker   baseline  peak(sampled)  VmHWM  final   (MiB)")
    for w in result["workers"]:
        print(f"{w['pid']:>7}  {w['baseline_mib']:>8}  {w['peak_mib']:>13}  "
              f"{w['hwm_mib']:>5}  {w['final_mib']:>6}")


if __name__ == "__main__":
    main()
