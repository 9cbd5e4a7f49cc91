"""`dispatcher serve` measured as users run it: the console script as a subprocess on
the embedded PostgreSQL in a fresh data directory (fsync on, default config), events
published only through the HTTP API, arrivals counted at a local receiver by
`webhook-id`. Next to it, in the same run, the raw-client ceilings.

    python bench/serve_bench.py [--events 50000] [--quick] [--only a,b,...]
                                [--workers N] [--dsn postgresql://...] [--json-out FILE]
                                [--scale-out] [--peers FILE]

Scenarios (letters for --only; the default runs all of a-g):

  g  ceiling: raw aiohttp (uvloop when installed), one process, no queue, no database,
     100 requests in flight, the same receiver and the same ~1.1 KB signed bodies;
     measured at the start and at the end of the run, ratios are to the mean (the
     two differ when the machine's load changed during the run). Next to it the
     same for raw pyreqwest (2 s total timeout, no redirects, no proxy, answers read
     up to 4 KiB from the streamed body), measured right after aiohttp at the start
     and right before it at the end; for each, the client process's CPU seconds
     (all its threads) per 10,000 requests, and pyreqwest's ratios to aiohttp.
  a  drain: N events published with delivery off, the daemon stopped and started
     again with delivery on; N / (start -> last arrival), and N / (first -> last
     arrival), the sustained rate without start-up.
  b  publish and deliver at once: N events in batches of 200 from 4 concurrent
     publishers while delivery runs; N / (first publish call -> last arrival).
  c  the publish API alone (delivery off): events/s through POST /v1/events/batch
     (batches of 200, 4 publishers) and through POST /v1/events (8 at a time).
     Measured in the publish half of (a): 2,000 of its N events go one per call.
  d  latency, API call start -> arrival at the receiver, p50/p99/max: one
     POST /v1/events per event paced at 200/s, then batches paced at 80% of the
     sustained drain rate of (a) (per event, from the start of its batch call).
  e  isolation: a healthy endpoint's latency at 200/s, alone and then with a second
     endpoint of the same tenant, subscribed to the same events (max_in_flight 100,
     pause thresholds out of reach), whose receiver accepts and never answers, so
     every attempt to it times out after 2 s; then, in a fresh daemon, next to such
     an endpoint with the default max_in_flight (10).
  f  (a) again with 1,000,000 finished events, deliveries and attempts already in
     the tables (seeded with SQL, then VACUUM ANALYZE as autovacuum would); the
     ratio to (a).
  --scale-out (not in the default run): 4 `dispatcher serve` processes on one
     PostgreSQL, 100,000 events published through their four APIs; each event id
     must arrive exactly once. Delivery is at least once, so duplicates are
     reported as they are, not hidden.

--peers FILE: the output of `../shared/bench/peers/run_all.sh` from the same sitting
(e.g. `PEERS="pgqueuer limit" bash run_all.sh 50000 > peers.txt`): the table then
shows (a), (b) and (d) as ratios to PgQueuer's lines too, and the JSON keeps them.

How to read it: the machine is shared and noisy, so compare each rate's ratio to
the ceiling (g) measured in the same run, not absolute numbers across runs. All
rates are events (= deliveries: one endpoint) per second. The daemon, PostgreSQL,
the receiver and this driver share the machine's cores; `cpu` shows the share of
one core each used during a drain. Only --workers and the environment needed to
allow a receiver on 127.0.0.1 differ from the defaults; the healthy endpoint is
created with max_in_flight 100 (default 10). The batch size is 200 because 500
events of ~1 KB exceed the default request body limit (256 KiB).

The default run takes about 3 minutes on 2 cores (--quick: under 30 s).

The receiver is nginx when it is on PATH (return 200, access log of $msec and the
webhook-id header), else a raw asyncio HTTP server in its own process. Everything
listens on and connects to 127.0.0.1 only; every process started here is stopped at
the end (SIGTERM, then SIGKILL), also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import structlog

from common import (
    CLIENTS,
    EVENT_TYPE,
    PAYLOAD,
    Children,
    CpuMeter,
    Receiver,
    ceiling_in_process,
    delivery_body,
    free_port,
    run,
    start_python_receiver,
    start_receiver,
    stop_process,
)

SCENARIOS = "abcdefg"
BATCH = 200  # events per batch call; 500 x ~1 KB is over the 256 KiB body limit
PUBLISHERS = 4  # concurrent batch publishers
SINGLE_CONCURRENCY = 8  # concurrent single-event publishers in (c)
ENDPOINT_MAX_IN_FLIGHT = 100
DEAD_MAX_IN_FLIGHT = 100  # = delivery.max_concurrency, the process's limit
DEFAULT_MAX_IN_FLIGHT = 10  # delivery.default_max_in_flight
LATENCY_RATE = 200.0  # events/s in (d) and (e)
PACED_CALL_INTERVAL = 0.05  # seconds between batch calls at 80% of the drain rate
STALL_SECONDS = 30.0  # a wait with no new arrival for this long fails
KEY_LINE = re.compile(r"admin API key \(operator, shown once\): (dk_\S+)")


def note(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Params:
    events: int
    seed_rows: int
    ceiling_events: int
    latency_events: int
    paced_seconds: float
    scale_events: int
    singles: int  # of the events of (a)/(c), published one per call


# -- arrivals at the receiver --------------------------------------------------------

class Arrivals:
    """Tails a receiver's arrival log (`<time> <webhook-id>` per line): the first
    arrival time of every id, and how many times more each arrived."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (open for the whole run)
        self._rest = b""
        self.first: dict[str, float] = {}
        self.repeats: Counter[str] = Counter()

    def poll(self) -> None:
        data = self._rest + self._f.read()
        cut = data.rfind(b"\n") + 1
        self._rest = data[cut:]
        for line in data[:cut].splitlines():
            t, _, msg_id = line.partition(b" ")
            key = msg_id.decode("latin-1").strip()
            if key in self.first:
                self.repeats[key] += 1
            else:
                self.first[key] = float(t)

    def reset(self) -> None:
        self.poll()
        self.first = {}
        self.repeats = Counter()

    async def wait_for(self, n: int, what: str, cap: float) -> None:
        """Until `n` distinct ids arrived; fails after STALL_SECONDS without a new
        one, or after `cap` seconds in all."""
        start = last_change = time.monotonic()
        seen = -1
        while True:
            self.poll()
            if len(self.first) >= n:
                return
            now = time.monotonic()
            if len(self.first) != seen:
                seen, last_change = len(self.first), now
            if now - last_change > STALL_SECONDS or now - start > cap:
                raise TimeoutError(f"{what}: {len(self.first)} of {n} arrived "
                                   f"(no progress for {now - last_change:.0f} s)")
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self._f.close()


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


# -- the daemon --------------------------------------------------------------------------

def dispatcher_command() -> list[str]:
    script = Path(sys.executable).parent / "dispatcher"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dispatcher"]


# --telemetry RATIO (tracing on in every daemon, exporting to bench/otlp_sink.py) and
# --env NAME=VALUE: settings every daemon of the run gets.
TELEMETRY_ENV: dict[str, str] = {}


def base_env() -> dict[str, str]:
    """The caller's environment without any DISPATCHER_* setting (defaults only),
    plus what a receiver on 127.0.0.1:<port> over http needs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISPATCHER_", "OTEL_"))}
    env.update(TELEMETRY_ENV)
    env.update({
        "DISPATCHER_URLS__ALLOW_PRIVATE_NETWORKS": "true",
        "DISPATCHER_URLS__ALLOW_HTTP": "true",
        "DISPATCHER_URLS__ALLOW_ANY_PORT": "true",
    })
    return env


class Serve:
    """One `dispatcher serve` process, its output in files under `logdir`."""

    def __init__(self, ctx: Ctx, name: str, env: dict[str, str], delivery: bool) -> None:
        self.ctx = ctx
        self.name = name
        self.env = {**env, "DISPATCHER_DELIVERY__ENABLED": "true" if delivery else "false"}
        self.out = ctx.logdir / f"{name}.stdout.log"
        self.err = ctx.logdir / f"{name}.stderr.log"
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_start = 0.0

    def start(self) -> float:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*self.ctx.dispatcher, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               *self.ctx.workers_args]
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.t_start = self.ctx.clock()
            self.proc = self.ctx.children.add(subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                start_new_session=True))
        return self.t_start

    def tail(self, n: int = 3000) -> str:
        text = ""
        for path in (self.err, self.out):
            with contextlib.suppress(OSError):
                text += f"--- {path.name}\n" + path.read_text(errors="replace")[-n:]
        return text

    async def ready(self, want_key: bool, timeout: float = 90.0) -> str | None:
        """Wait for /readyz to answer 200; on a first start, also for the admin key."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        retries = 3
        while True:
            if self.proc.poll() is not None:
                # The free port was taken between our look and the daemon's bind.
                if retries and "address already in use" in self.tail().lower():
                    retries -= 1
                    self.start()
                    continue
                raise RuntimeError(f"{self.name}: dispatcher serve exited with "
                                   f"{self.proc.returncode}\n{self.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.ctx.http.get(self.url + "/readyz",
                                             timeout=aiohttp.ClientTimeout(total=3)) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: not ready in {timeout} s\n{self.tail()}")
            await asyncio.sleep(0.05)
        if not want_key:
            return None
        if retries < 3:
            # A first start that failed to bind had already made the admin key, and
            # exited before printing it: the next start prints none. Make another.
            return await self.create_key()
        while True:
            found = KEY_LINE.search(self.err.read_text(errors="replace"))
            if found:
                return found.group(1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no admin API key printed\n{self.tail()}")
            await asyncio.sleep(0.05)

    async def create_key(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.ctx.dispatcher, "keys", "create", "--tenant", "default", "--json",
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise RuntimeError(f"dispatcher keys create: {err.decode()[-1000:]}")
        # stdout has the daemon's JSON log lines too; the key is in the indented JSON.
        found = re.search(r'"key": "(dk_[^"]+)"', out.decode())
        if found is None:
            raise RuntimeError(f"dispatcher keys create printed no key: {out.decode()[-1000:]}")
        return found.group(1)

    async def stop(self) -> None:
        if self.proc is not None:
            code = await asyncio.to_thread(stop_process, self.proc, 30.0)
            if code not in (0, None):
                note(f"{self.name}: dispatcher serve exited with {code}")
            pgdata = self.env.get("DISPATCHER_DATA_DIR")
            if pgdata and not self.env.get("DISPATCHER_DATABASE_URL"):
                await asyncio.to_thread(stop_leftover_postgres, Path(pgdata))


def stop_leftover_postgres(data_dir: Path) -> None:
    """The embedded server a killed daemon left running (a clean stop stops it)."""
    import psutil

    pidfile = data_dir / "pg" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n")[0])
        proc = psutil.Process(pid)
        if str(data_dir / "pg") not in " ".join(proc.cmdline()):
            return
    except (OSError, ValueError, psutil.Error):
        return
    note(f"stopping the embedded PostgreSQL left running in {data_dir}")
    with contextlib.suppress(psutil.Error):
        proc.send_signal(2)  # SIGINT: fast shutdown
        try:
            proc.wait(15)
        except psutil.TimeoutExpired:
            proc.send_signal(3)  # SIGQUIT: immediate shutdown
            proc.wait(10)


def embedded_dsn(data_dir: Path) -> str:
    """The running embedded server's DSN, from pg/postmaster.pid (line 4 is the port,
    line 5 the socket directory)."""
    lines = (data_dir / "pg" / "postmaster.pid").read_text().split("\n")
    return f"postgresql://postgres@/postgres?host={quote(lines[4])}&port={lines[3]}"


# -- the API ---------------------------------------------------------------------------

class ApiError(RuntimeError):
    pass


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, key: str) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        async with self.http.request(method, self.base + path, data=data,
                                     headers=self.headers) as r:
            text = await r.text()
            if r.status >= 300:
                raise ApiError(f"{method} {path}: {r.status} {text[:500]}")
            return json.loads(text) if text else None

    async def create_endpoint(self, url: str, **fields: Any) -> str:
        body = {"url": url, "event_types": [EVENT_TYPE], "signing_scheme": "standard-v1",
                "max_in_flight": ENDPOINT_MAX_IN_FLIGHT, **fields}
        endpoint_id: str = (await self.call("POST", "/v1/endpoints", body))["id"]
        return endpoint_id

    async def publish_batch(self, events: list[dict[str, Any]]) -> list[str]:
        answer = await self.call("POST", "/v1/events/batch", {"events": events})
        return [e["id"] for e in answer["data"]]

    async def publish_one(self, event: dict[str, Any]) -> str:
        event_id: str = (await self.call("POST", "/v1/events", event))["id"]
        return event_id


def make_events(start: int, n: int) -> list[dict[str, Any]]:
    return [{"type": EVENT_TYPE, "data": {**PAYLOAD, "seq": i}} for i in range(start, start + n)]


@dataclass
class Published:
    ids: list[str] = field(default_factory=list)
    call_start: dict[str, float] = field(default_factory=dict)  # event id -> its call's start
    call_ms: list[float] = field(default_factory=list)  # each API call's duration
    t_first: float = 0.0
    t_last: float = 0.0  # the last answer
    late_calls: int = 0  # paced calls started more than one interval late

    @property
    def seconds(self) -> float:
        return self.t_last - self.t_first


async def publish_batches(apis: list[Api], n: int, clock: Callable[[], float],
                          publishers: int = PUBLISHERS, batch: int = BATCH) -> Published:
    """`n` events in batch calls from `publishers` concurrent callers, spread round
    robin over `apis`."""
    out = Published()
    starts = list(range(0, n, batch))
    it = iter(starts)

    async def publisher(k: int) -> None:
        api = apis[k % len(apis)]
        for start in it:
            events = make_events(start, min(batch, n - start))
            t = clock()
            ids = await api.publish_batch(events)
            out.ids += ids
            out.call_start.update(dict.fromkeys(ids, t))
            out.call_ms.append((clock() - t) * 1000)

    out.t_first = clock()
    await asyncio.gather(*(publisher(k) for k in range(publishers)))
    out.t_last = clock()
    return out


async def publish_singles(api: Api, n: int, clock: Callable[[], float], first_seq: int = 0,
                          concurrency: int = SINGLE_CONCURRENCY) -> Published:
    out = Published()
    it = iter(range(first_seq, first_seq + n))

    async def publisher() -> None:
        for seq in it:
            t = clock()
            event_id = await api.publish_one(make_events(seq, 1)[0])
            out.ids.append(event_id)
            out.call_start[event_id] = t
            out.call_ms.append((clock() - t) * 1000)

    out.t_first = clock()
    await asyncio.gather(*(publisher() for _ in range(concurrency)))
    out.t_last = clock()
    return out


async def publish_paced(api: Api, rate: float, n: int, batch: int,
                        clock: Callable[[], float], max_outstanding: int = 64) -> Published:
    """`n` events at `rate` events/s: a call of `batch` events (batch 1: one
    POST /v1/events) every batch/rate seconds, not waiting for earlier answers."""
    out = Published()
    interval = batch / rate
    sem = asyncio.Semaphore(max_outstanding)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    async def call(seq: int, size: int) -> None:
        try:
            t = clock()
            if size == 1:
                ids = [await api.publish_one(make_events(seq, 1)[0])]
            else:
                ids = await api.publish_batch(make_events(seq, size))
            out.ids += ids
            out.call_start.update(dict.fromkeys(ids, t))
            out.call_ms.append((clock() - t) * 1000)
        finally:
            sem.release()

    t0 = loop.time()
    out.t_first = clock()
    for k, seq in enumerate(range(0, n, batch)):
        due = t0 + k * interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -interval:
            out.late_calls += 1
        await sem.acquire()
        tasks.append(asyncio.create_task(call(seq, min(batch, n - seq))))
    await asyncio.gather(*tasks)
    out.t_last = clock()
    return out


# -- statistics ------------------------------------------------------------------------

def ms_text(value: float) -> str:
    """Milliseconds as read in a table: one decimal below 100 ms."""
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latencies(pub: Published, arrivals: Arrivals) -> dict[str, Any]:
    ms = sorted((arrivals.first[i] - pub.call_start[i]) * 1000 for i in pub.ids)
    calls = sorted(pub.call_ms)
    return {"events": len(ms), "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(ms[-1], 1) if ms else None,
            "api_calls": len(calls), "api_call_p50_ms": round(percentile(calls, 50), 1),
            "api_call_p99_ms": round(percentile(calls, 99), 1)}


def check_arrivals(pub_ids: list[str], arrivals: Arrivals) -> dict[str, int]:
    """Missing, duplicated and unexpected ids (0, 0, 0 when all is well)."""
    expected = set(pub_ids)
    arrived = set(arrivals.first)
    return {"missing": len(expected - arrived),
            "duplicate_ids": sum(1 for i in expected if arrivals.repeats.get(i)),
            "extra_deliveries": sum(arrivals.repeats[i] for i in expected if i in arrivals.repeats),
            "unexpected_ids": len(arrived - expected)}


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else math.nan


# -- the run -----------------------------------------------------------------------------

@dataclass
class Ctx:
    params: Params
    tmp: Path
    logdir: Path
    receiver: Receiver
    arrivals: Arrivals
    http: aiohttp.ClientSession
    children: Children
    dispatcher: list[str]
    workers_args: list[str]
    external_dsn: str
    created_databases: list[str] = field(default_factory=list)

    @property
    def clock(self) -> Callable[[], float]:
        return self.receiver.clock

    async def database_env(self, name: str) -> dict[str, str]:
        """A fresh place for one scenario's data: a new embedded data directory, or
        (--dsn) a new database on that server."""
        data_dir = self.tmp / name
        data_dir.mkdir()
        env = {**base_env(), "DISPATCHER_DATA_DIR": str(data_dir)}
        if self.external_dsn:
            env["DISPATCHER_DATABASE_URL"] = await self.create_database(name)
        return env

    async def create_database(self, name: str) -> str:
        db = f"dispatcher_bench_{name}_{os.getpid()}"
        conn = await asyncpg.connect(self.external_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{db}"')
        finally:
            await conn.close()
        self.created_databases.append(db)
        parts = urlsplit(self.external_dsn)
        return urlunsplit(parts._replace(path="/" + db))

    async def drop_databases(self) -> None:
        if not self.created_databases:
            return
        conn = await asyncpg.connect(self.external_dsn)
        try:
            for db in self.created_databases:
                with contextlib.suppress(asyncpg.PostgresError):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()

    async def wait_all(self, n: int, what: str) -> None:
        await self.arrivals.wait_for(n, what, cap=120 + n / 100)


@contextlib.asynccontextmanager
async def serving(ctx: Ctx, name: str, env: dict[str, str], delivery: bool,
                  want_key: bool = False) -> AsyncIterator[tuple[Serve, str | None]]:
    serve = Serve(ctx, name, env, delivery)
    serve.start()
    try:
        key = await serve.ready(want_key)
        yield serve, key
    finally:
        await serve.stop()


async def drain_scenario(ctx: Ctx, name: str, seed_rows: int, drain: bool,
                         singles: int) -> dict[str, Any]:
    """Publish N events with delivery off (the publish rate), optionally with
    `seed_rows` finished rows seeded first; then restart with delivery on and time
    the drain to the receiver."""
    p = ctx.params
    env = await ctx.database_env(name)
    res: dict[str, Any] = {"events": p.events}
    async with serving(ctx, f"{name}-publish", env, delivery=False, want_key=True) as (srv, key):
        assert key is not None
        api = Api(ctx.http, srv.url, key)
        endpoint = await api.create_endpoint(ctx.receiver.url)
        if seed_rows:
            dsn = (env.get("DISPATCHER_DATABASE_URL")
                   or embedded_dsn(Path(env["DISPATCHER_DATA_DIR"])))
            note(f"({name}) seeding {seed_rows:,} finished events, deliveries and attempts")
            res["seed"] = await seed_finished(dsn, endpoint, seed_rows)
        note(f"({name}) publishing {p.events:,} events, delivery off")
        batched = await publish_batches([api], p.events - singles, ctx.clock)
        res["publish_batch"] = {"events": len(batched.ids), "seconds": round(batched.seconds, 2),
                                "per_s": round(rate(len(batched.ids), batched.seconds))}
        ids = batched.ids
        if singles:
            one = await publish_singles(api, singles, ctx.clock, first_seq=p.events)
            res["publish_single"] = {"events": len(one.ids), "seconds": round(one.seconds, 2),
                                     "per_s": round(rate(len(one.ids), one.seconds))}
            ids = ids + one.ids
    if not drain:
        return res
    ctx.arrivals.reset()
    note(f"({name}) restarting with delivery on; draining {len(ids):,}")
    serve = Serve(ctx, f"{name}-drain", env, delivery=True)
    serve.start()
    try:
        await serve.ready(want_key=False)
        t_start, t_ready = serve.t_start, ctx.clock()
        meter = CpuMeter({"serve": [serve.proc.pid] if serve.proc else [],
                          "receiver": [ctx.receiver.proc.pid]},
                         postgres=not ctx.external_dsn)
        meter.start()
        await ctx.wait_all(len(ids), f"({name}) drain")
        cpu = meter.stop()
    finally:
        await serve.stop()
    times = [ctx.arrivals.first[i] for i in ids]
    t_first, t_last = min(times), max(times)
    res.update({
        "drain_events": len(ids),
        "ready_s": round(t_ready - t_start, 2),
        "first_arrival_s": round(t_first - t_start, 2),
        "last_arrival_s": round(t_last - t_start, 2),
        "per_s_from_start": round(rate(len(ids), t_last - t_start)),
        "per_s_first_to_last": round(rate(len(ids), t_last - t_first)),
        "cpu": cpu,
        **check_arrivals(ids, ctx.arrivals),
    })
    return res


SEED_SQL = """
CREATE TEMP TABLE seed (id uuid, at timestamptz) ON COMMIT DROP;
INSERT INTO seed SELECT gen_random_uuid(), $1::timestamptz - g * interval '100 ms'
    FROM generate_series($2::int, $3::int) AS g;
INSERT INTO events (id, tenant_id, type, body, created_at)
    SELECT id, (SELECT tenant_id FROM endpoints WHERE id = $1::uuid), $2, $3, at FROM seed;
INSERT INTO deliveries (event_id, endpoint_id, status, attempts, retries_left, next_attempt_at,
                        last_attempt_at, created_at, updated_at)
    SELECT id, $1::uuid, 2, 1, 7, at, at + interval '3 ms', at, at + interval '3 ms' FROM seed;
"""

SEED_ATTEMPTS_SQL = """
INSERT INTO attempts (delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                      request_headers, response_status, response_headers, response_body)
SELECT d.id, d.endpoint_id, 1, d.last_attempt_at, 2.5,
       jsonb_build_object('Content-Type', 'application/json', 'webhook-id', d.event_id::text,
                          'webhook-timestamp', extract(epoch FROM d.created_at)::bigint::text,
                          'webhook-signature', $3::text),
       200, '{"Content-Type": "text/plain", "Content-Length": "2"}'::jsonb, 'ok'
FROM deliveries d WHERE d.endpoint_id = $1 AND d.status = 2 AND d.id % 2 = $2
"""


async def seed_finished(dsn: str, endpoint_id: str, rows: int) -> dict[str, Any]:
    """`rows` events delivered successfully in the past 28 hours (within retention):
    one event, one Success delivery and one attempt each, for `endpoint_id`, in two
    parallel connections (the machine has two cores)."""
    t = time.monotonic()
    body = delivery_body()
    signature = "v1," + base64.b64encode(os.urandom(32)).decode()
    conns = [await asyncpg.connect(dsn) for _ in range(2)]
    try:
        now = await conns[0].fetchval("SELECT now() - interval '1 minute'")
        half = rows // 2

        async def part(conn: asyncpg.Connection, lo: int, hi: int) -> None:
            async with conn.transaction():
                stmts = [s for s in SEED_SQL.split(";") if s.strip()]
                await conn.execute(stmts[0])
                await conn.execute(stmts[1], now, lo, hi)
                await conn.execute(stmts[2], endpoint_id, EVENT_TYPE, body)
                await conn.execute(stmts[3], endpoint_id)

        await asyncio.gather(part(conns[0], 1, half), part(conns[1], half + 1, rows))
        await asyncio.gather(*(c.execute(SEED_ATTEMPTS_SQL, endpoint_id, k, signature)
                               for k, c in enumerate(conns)))
        seeded = time.monotonic() - t
        for table in ("events", "deliveries", "attempts"):
            await conns[0].execute(f"VACUUM ANALYZE {table}")
        sizes = {r["relname"]: round(r["bytes"] / 2**20)
                 for r in await conns[0].fetch(
                     "SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class "
                     "WHERE relname IN ('events', 'deliveries', 'attempts')")}
    finally:
        for c in conns:
            await c.close()
    return {"rows": rows, "insert_s": round(seeded, 1),
            "with_vacuum_s": round(time.monotonic() - t, 1), "table_mb": sizes}


async def scenario_b(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    env = await ctx.database_env("b")
    async with serving(ctx, "b", env, delivery=True, want_key=True) as (srv, key):
        assert key is not None
        api = Api(ctx.http, srv.url, key)
        await api.create_endpoint(ctx.receiver.url)
        ctx.arrivals.reset()
        note(f"(b) publishing {p.events:,} in batches of {BATCH} while delivering")
        meter = CpuMeter({"serve": [srv.proc.pid] if srv.proc else [],
                          "receiver": [ctx.receiver.proc.pid]}, postgres=not ctx.external_dsn)
        meter.start()
        pub = await publish_batches([api], p.events, ctx.clock)
        await ctx.wait_all(len(pub.ids), "(b)")
        cpu = meter.stop()
    t_last = max(ctx.arrivals.first[i] for i in pub.ids)
    return {"events": len(pub.ids), "publishers": PUBLISHERS, "batch": BATCH,
            "publish_s": round(pub.seconds, 2),
            "publish_per_s": round(rate(len(pub.ids), pub.seconds)),
            "last_arrival_s": round(t_last - pub.t_first, 2),
            "per_s": round(rate(len(pub.ids), t_last - pub.t_first)),
            "latency": latencies(pub, ctx.arrivals), "cpu": cpu,
            **check_arrivals(pub.ids, ctx.arrivals)}


async def paced_latency(ctx: Ctx, api: Api, rate_per_s: float, n: int, batch: int,
                        what: str) -> dict[str, Any]:
    ctx.arrivals.reset()
    pub = await publish_paced(api, rate_per_s, n, batch, ctx.clock)
    await ctx.wait_all(len(pub.ids), what)
    return {"rate_per_s": round(rate_per_s), "batch": batch,
            "achieved_publish_per_s": round(rate(len(pub.ids), pub.seconds)),
            "late_calls": pub.late_calls, **latencies(pub, ctx.arrivals),
            **check_arrivals(pub.ids, ctx.arrivals)}


async def scenario_d(ctx: Ctx, drain_rate: float | None) -> dict[str, Any]:
    p = ctx.params
    env = await ctx.database_env("d")
    res: dict[str, Any] = {}
    async with serving(ctx, "d", env, delivery=True, want_key=True) as (srv, key):
        assert key is not None
        api = Api(ctx.http, srv.url, key)
        await api.create_endpoint(ctx.receiver.url)
        note(f"(d) {p.latency_events:,} single POST /v1/events at {LATENCY_RATE:.0f}/s")
        res["at_200"] = await paced_latency(ctx, api, LATENCY_RATE, p.latency_events, 1,
                                            "(d) 200/s")
        if drain_rate is None or not drain_rate > 0:
            res["at_80pct"] = {"skipped": "needs the drain rate of (a)"}
            return res
        r = 0.8 * drain_rate
        batch = max(1, min(BATCH, round(r * PACED_CALL_INTERVAL)))
        n = max(batch, int(r * p.paced_seconds) // batch * batch)
        note(f"(d) {n:,} events at {r:,.0f}/s (80% of the drain rate), batches of {batch}")
        res["at_80pct"] = await paced_latency(ctx, api, r, n, batch, "(d) 80%")
        res["at_80pct"]["drain_rate_per_s"] = round(drain_rate)
    return res


async def with_dead_endpoint(ctx: Ctx, api: Api, hang_log: Path, hang_url: str,
                             max_in_flight: int, what: str) -> dict[str, Any]:
    """The healthy endpoint's latency at 200/s while a never-answering endpoint of the
    same tenant gets the same events; its pause thresholds are out of reach, so it
    stays active (and failing) for the whole phase."""
    p = ctx.params
    dead = await api.create_endpoint(
        hang_url, max_in_flight=max_in_flight,
        pause_window_threshold=10_000_000, pause_total_threshold=10_000_000)
    note(f"(e) {what}: {p.latency_events:,} at {LATENCY_RATE:.0f}/s next to a never-answering "
         f"endpoint with max_in_flight {max_in_flight}")
    before = count_lines(hang_log)
    t = time.monotonic()
    res = await paced_latency(ctx, api, LATENCY_RATE, p.latency_events, 1, f"(e) {what}")
    health = await api.call("GET", f"/v1/endpoints/{dead}/health")
    res["dead_endpoint"] = {
        "max_in_flight": max_in_flight, "seconds": round(time.monotonic() - t, 1),
        "requests_received": count_lines(hang_log) - before,
        "failures_recorded": health.get("failures_in_window"), "state": health.get("state")}
    return res


async def scenario_e(ctx: Ctx) -> dict[str, Any]:
    """Alone, then next to a dead endpoint with max_in_flight 100; then, in a fresh
    daemon (no backlog left over), next to one with the default max_in_flight. The
    last tells a limit that is too generous from isolation that does not work."""
    p = ctx.params
    res: dict[str, Any] = {}
    hang_log = ctx.tmp / "hang.log"
    hang = start_python_receiver(hang_log, answer=False)
    ctx.children.add(hang.proc)
    try:
        env = await ctx.database_env("e")
        async with serving(ctx, "e", env, delivery=True, want_key=True) as (srv, key):
            assert key is not None
            api = Api(ctx.http, srv.url, key)
            await api.create_endpoint(ctx.receiver.url)
            note(f"(e) healthy endpoint alone, {p.latency_events:,} at {LATENCY_RATE:.0f}/s")
            res["alone"] = await paced_latency(ctx, api, LATENCY_RATE, p.latency_events, 1,
                                               "(e) alone")
            res["with_dead"] = await with_dead_endpoint(ctx, api, hang_log, hang.url,
                                                        DEAD_MAX_IN_FLIGHT, "with dead")
        env = await ctx.database_env("e2")
        async with serving(ctx, "e2", env, delivery=True, want_key=True) as (srv, key):
            assert key is not None
            api = Api(ctx.http, srv.url, key)
            await api.create_endpoint(ctx.receiver.url)
            res["with_dead_default_limit"] = await with_dead_endpoint(
                ctx, api, hang_log, hang.url, DEFAULT_MAX_IN_FLIGHT, "with dead, default limit")
    finally:
        hang.stop()
    return res


async def scenario_scale(ctx: Ctx, n_serves: int = 4) -> dict[str, Any]:
    """n_serves daemons on one PostgreSQL; every event must arrive exactly once."""
    p = ctx.params
    embedded = None
    if ctx.external_dsn:
        dsn = await ctx.create_database("scale")
    else:
        from dispatcher.store.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(ctx.tmp / "scale-pg")
        dsn = await asyncio.to_thread(embedded.start)
    master_key = base64.b64encode(os.urandom(32)).decode()
    serves: list[Serve] = []
    try:
        for i in range(n_serves):
            data_dir = ctx.tmp / f"scale-{i}"
            data_dir.mkdir()
            env = {**base_env(), "DISPATCHER_DATABASE_URL": dsn,
                   "DISPATCHER_MASTER_KEY": master_key, "DISPATCHER_DATA_DIR": str(data_dir)}
            serves.append(Serve(ctx, f"scale-{i}", env, delivery=True))
        serves[0].start()
        key = await serves[0].ready(want_key=True)
        assert key is not None
        for s in serves[1:]:
            s.start()
        await asyncio.gather(*(s.ready(want_key=False) for s in serves[1:]))
        apis = [Api(ctx.http, s.url, key) for s in serves]
        await apis[0].create_endpoint(ctx.receiver.url)
        ctx.arrivals.reset()
        note(f"(scale-out) publishing {p.scale_events:,} through {n_serves} daemons")
        meter = CpuMeter({f"serve{i}": [s.proc.pid] for i, s in enumerate(serves) if s.proc},
                         postgres=embedded is not None)
        meter.start()
        pub = await publish_batches(apis, p.scale_events, ctx.clock, publishers=2 * n_serves)
        await ctx.wait_all(len(pub.ids), "(scale-out)")
        cpu = meter.stop()
        t_last = max(ctx.arrivals.first[i] for i in pub.ids)
        await asyncio.sleep(3)  # late duplicates, if any
        ctx.arrivals.poll()
        conn = await asyncpg.connect(dsn)
        try:
            statuses = {str(r["status"]): r["n"] for r in await conn.fetch(
                "SELECT status, count(*) AS n FROM deliveries GROUP BY 1 ORDER BY 1")}
            attempts = await conn.fetchval("SELECT count(*) FROM attempts")
        finally:
            await conn.close()
        return {"daemons": n_serves, "events": len(pub.ids),
                "publish_per_s": round(rate(len(pub.ids), pub.seconds)),
                "per_s": round(rate(len(pub.ids), t_last - pub.t_first)),
                "delivered_distinct": sum(1 for i in pub.ids if i in ctx.arrivals.first),
                **check_arrivals(pub.ids, ctx.arrivals),
                "delivery_rows_by_status": statuses, "attempt_rows": attempts, "cpu": cpu}
    finally:
        await asyncio.gather(*(s.stop() for s in serves))
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


# -- driver ---------------------------------------------------------------------------

def serve_has_workers_option(cmd: list[str]) -> bool:
    out = subprocess.run([*cmd, "serve", "--help"], capture_output=True, text=True,
                         timeout=60, env=base_env())
    return "--workers" in out.stdout


def dispatcher_version(cmd: list[str]) -> str:
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60,
                         env=base_env())
    return out.stdout.strip()


async def run_all(args: argparse.Namespace, params: Params, selected: str, scale: bool,
                  tmp: Path, children: Children) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    # SIGTERM cancels the run like Ctrl-C does, so every process is still stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    dispatcher = dispatcher_command()
    has_workers = serve_has_workers_option(dispatcher)
    if args.workers is not None and not has_workers and args.workers != 1:
        print("error: this `dispatcher serve` has no --workers option (it runs one process)",
              file=sys.stderr)
        raise SystemExit(2)
    workers_args = ["--workers", str(args.workers)] if has_workers and args.workers else []
    logdir = tmp / "logs"
    logdir.mkdir()
    receiver = start_receiver(tmp)
    children.add(receiver.proc)
    assert receiver.log_path is not None
    arrivals = Arrivals(receiver.log_path)
    doc["config"] = {
        "dispatcher": dispatcher_version(dispatcher),
        "events": params.events, "quick": args.quick,
        "scenarios": selected + ("+scale-out" if scale else ""),
        "cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "serve_workers_option": has_workers,
        "workers": args.workers if workers_args else ("serve default" if has_workers else 1),
        "database": "external (--dsn)" if args.dsn else "embedded, fresh data dir per scenario",
        "receiver": receiver.kind,
        "client": "aiohttp (dispatcher.transport)",
        "event_data_bytes": len(json.dumps(PAYLOAD, separators=(",", ":"))),
        "delivered_body_bytes": len(delivery_body()),
        "batch": BATCH, "publishers": PUBLISHERS, "endpoint_max_in_flight": ENDPOINT_MAX_IN_FLIGHT,
    }
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as http:
        ctx = Ctx(params, tmp, logdir, receiver, arrivals, http, children, dispatcher,
                  workers_args, args.dsn)
        errors: dict[str, str] = {}
        ceiling_wanted = "g" in selected or scale or bool(set(selected) & set("abcf"))

        async def attempt(key: str, make: Callable[[], Any]) -> Any:
            try:
                doc[key] = await make()
                return doc[key]
            except Exception as exc:
                note(f"({key}) failed: {exc}")
                traceback.print_exc()
                errors[key] = f"{type(exc).__name__}: {exc}"[:2000]
                return None

        try:
            if ceiling_wanted:
                doc["g"] = {"requests": params.ceiling_events, "concurrency": 100}
                await measure_ceilings(ctx, doc["g"], "start", CLIENTS, errors)
            if "a" in selected or "c" in selected:
                singles = params.singles if "c" in selected else 0
                await attempt("a", lambda: drain_scenario(ctx, "a", 0, drain="a" in selected,
                                                          singles=singles))
                a = doc.get("a") or {}
                if "c" in selected and a:
                    doc["c"] = {"batch": {**a.pop("publish_batch"), "batch": BATCH,
                                          "publishers": PUBLISHERS},
                                "single": {**a.pop("publish_single"),
                                           "concurrency": SINGLE_CONCURRENCY}}
                    if "a" not in selected:
                        del doc["a"]
            if "f" in selected:
                await attempt("f", lambda: drain_scenario(ctx, "f", params.seed_rows, drain=True,
                                                          singles=0))
                f, a = doc.get("f"), doc.get("a")
                if f and a and "per_s_from_start" in a:
                    f["ratio_to_a_from_start"] = round(
                        f["per_s_from_start"] / a["per_s_from_start"], 3)
                    f["ratio_to_a_first_to_last"] = round(
                        f["per_s_first_to_last"] / a["per_s_first_to_last"], 3)
            if "b" in selected:
                await attempt("b", lambda: scenario_b(ctx))
            drain_rate = (doc.get("a") or {}).get("per_s_first_to_last")
            if "d" in selected:
                await attempt("d", lambda: scenario_d(ctx, drain_rate))
            if "e" in selected:
                await attempt("e", lambda: scenario_e(ctx))
            if scale:
                await attempt("scale_out", lambda: scenario_scale(ctx))
            if ceiling_wanted:
                g = doc["g"]
                # The reverse order at the end, so drift in load weighs on both alike.
                await measure_ceilings(ctx, g, "end", CLIENTS[::-1], errors)
                summarize_ceiling(g)
                p = g.pop("pyreqwest", None)
                if p:
                    summarize_ceiling(p)
                    g["pyreqwest"] = p  # after aiohttp's figures in the JSON
                    g["pyreqwest_to_aiohttp"] = {
                        "per_s": round(p["per_s"] / g["per_s"], 2),
                        "cpu_per_request": round(p["cpu_s_per_10k"] / g["cpu_s_per_10k"], 2)}
        finally:
            arrivals.close()
            with contextlib.suppress(Exception):
                await ctx.drop_databases()
        add_ratios(doc)
        if errors:
            doc["errors"] = errors
    return doc


async def measure_ceilings(ctx: Ctx, g: dict[str, Any], when: str, clients: Iterable[str],
                           errors: dict[str, str]) -> None:
    """Each client's ceiling into `g` (aiohttp's at its top level, as the ratios use
    it; pyreqwest's under "pyreqwest"). A failed aiohttp ceiling at the start fails
    the run, as it always did; any other failure is an error of the run, and a failed
    end keeps the start's figures."""
    n = ctx.params.ceiling_events
    for client in clients:
        part = g if client == "aiohttp" else g.get(client)
        if part is None:
            if when == "end":
                continue  # it failed at the start
            part = g[client] = {}
        note(f"(g) raw-{client} ceiling at the {when}: {n:,} requests, 100 in flight")
        try:
            result = await ceiling_in_process(ctx.receiver.url, n, 100, 300, client)
        except Exception as exc:
            if when == "start" and client == "aiohttp":
                raise
            note(f"(g) {client} at the {when} failed: {exc}")
            key = "g" if client == "aiohttp" else f"g-{client}"
            errors[key] = f"at the {when}: {type(exc).__name__}: {exc}"[:2000]
            if when == "start":
                del g[client]
            else:
                for k in ("per_s", "cpu_s_per_10k", "cpu_share"):
                    part[f"{k}_end"] = part[f"{k}_start"]
            continue
        part[f"per_s_{when}"] = round(result.per_s)
        part[f"cpu_s_per_10k_{when}"] = round(result.cpu_s_per_10k, 3)
        part[f"cpu_share_{when}"] = round(result.cpu_share, 2)


def summarize_ceiling(part: dict[str, Any]) -> None:
    """Means of the start and the end of one client's ceiling."""
    part["per_s"] = round((part["per_s_start"] + part["per_s_end"]) / 2)
    part["end_to_start"] = round(part["per_s_end"] / part["per_s_start"], 2)
    part["cpu_s_per_10k"] = round((part["cpu_s_per_10k_start"] + part["cpu_s_per_10k_end"]) / 2,
                                  3)


def add_ratios(doc: dict[str, Any]) -> None:
    g = (doc.get("g") or {}).get("per_s")
    if not g:
        return

    def r(x: Any) -> float | None:
        return round(x / g, 3) if isinstance(x, int | float) and x == x else None

    for key in ("a", "f"):
        if key in doc:
            doc[key]["ratio_to_ceiling_from_start"] = r(doc[key].get("per_s_from_start"))
            doc[key]["ratio_to_ceiling_first_to_last"] = r(doc[key].get("per_s_first_to_last"))
    if "b" in doc:
        doc["b"]["ratio_to_ceiling"] = r(doc["b"].get("per_s"))
    if "c" in doc:
        for k in ("batch", "single"):
            doc["c"][k]["ratio_to_ceiling"] = r(doc["c"][k].get("per_s"))
    if "scale_out" in doc:
        doc["scale_out"]["ratio_to_ceiling"] = r(doc["scale_out"].get("per_s"))


def parse_peers(text: str) -> dict[str, dict[str, float | None]]:
    """run_all.sh's lines `peer deliveries/s p50_ms p99_ms` (`-` where a peer has none)."""
    found: dict[str, dict[str, float | None]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] == "peer" or line.startswith("#"):
            continue
        try:
            values = [None if p == "-" else float(p) for p in parts[1:4]]
        except ValueError:
            continue  # a FAILED line
        found[parts[0]] = dict(zip(("per_s", "p50_ms", "p99_ms"), values, strict=True))
    return found


def versus_pgqueuer(doc: dict[str, Any]) -> dict[str, float]:
    """Our rates over PgQueuer's, its latencies over ours (above 1: we are ahead)."""
    peers = doc.get("peers") or {}
    burst, paced = peers.get("pgqueuer") or {}, peers.get(f"pgqueuer@{LATENCY_RATE:.0f}/s") or {}
    a, b = doc.get("a") or {}, doc.get("b") or {}
    at_200 = (doc.get("d") or {}).get("at_200") or {}
    out: dict[str, float] = {}
    if burst.get("per_s"):
        for key, value in (("a_drain_from_start", a.get("per_s_from_start")),
                           ("a_drain_first_to_last", a.get("per_s_first_to_last")),
                           ("b_publish_and_deliver", b.get("per_s"))):
            if isinstance(value, int | float):
                out[key] = round(value / burst["per_s"], 2)
    for key in ("p50_ms", "p99_ms"):
        if paced.get(key) and at_200.get(key):
            out[f"d_{key}_theirs_over_ours"] = round(paced[key] / at_200[key], 2)
    return out


def table(doc: dict[str, Any]) -> str:
    g = (doc.get("g") or {}).get("per_s")
    rows: list[tuple[str, str, str]] = []

    def per_s(label: str, value: Any) -> None:
        if isinstance(value, int | float):
            ratio = f"{value / g:.2f}" if g else ""
            rows.append((label, f"{value:,.0f} /s", ratio))

    def lat(label: str, d: dict[str, Any] | None) -> None:
        if d and "p50_ms" in d:
            parts = [ms_text(d[k]) for k in ("p50_ms", "p99_ms", "max_ms")]
            rows.append((label, " / ".join(parts) + " ms", ""))
        elif d and "skipped" in d:
            rows.append((label, "skipped: " + d["skipped"], ""))

    if g:
        gd = doc["g"]
        rows.append(("(g) ceiling: raw aiohttp, 100 in flight (mean)", f"{g:,} /s", "1.00"))
        rows.append(("(g)   at the start / at the end of the run",
                     f"{gd['per_s_start']:,} / {gd['per_s_end']:,} /s", ""))
        p = gd.get("pyreqwest")
        if p:
            ratios = gd["pyreqwest_to_aiohttp"]
            rows.append(("(g) ceiling: raw pyreqwest, 100 in flight (mean)",
                         f"{p['per_s']:,} /s", f"{ratios['per_s']:.2f}"))
            rows.append(("(g)   at the start / at the end of the run",
                         f"{p['per_s_start']:,} / {p['per_s_end']:,} /s", ""))
            rows.append(("(g) CPU per 10,000 requests: aiohttp / pyreqwest",
                         f"{gd['cpu_s_per_10k']:.2f} / {p['cpu_s_per_10k']:.2f} s",
                         f"{ratios['cpu_per_request']:.2f}"))
    a = doc.get("a")
    if a:
        n = a.get("drain_events", 0)
        per_s(f"(a) drain {n:,}: start -> last arrival", a.get("per_s_from_start"))
        per_s("(a) drain: first -> last arrival", a.get("per_s_first_to_last"))
    b = doc.get("b")
    if b:
        per_s(f"(b) publish + deliver {b['events']:,}, batches of {BATCH}", b.get("per_s"))
        per_s("(b)   publish rate meanwhile", b.get("publish_per_s"))
        lat("(b)   call -> arrival p50 / p99 / max", b.get("latency"))
    c = doc.get("c")
    if c:
        per_s(f"(c) publish only, batches of {BATCH} x {PUBLISHERS}", c["batch"].get("per_s"))
        per_s(f"(c) publish only, single POST x {SINGLE_CONCURRENCY}", c["single"].get("per_s"))
    d = doc.get("d")
    if d:
        lat(f"(d) latency at {LATENCY_RATE:.0f}/s p50 / p99 / max", d.get("at_200"))
        d80 = d.get("at_80pct") or {}
        where = f"{d80['rate_per_s']:,}/s" if "rate_per_s" in d80 else "80% of (a)"
        lat(f"(d) latency at {where} (80% of a) p50/p99/max", d80)
    e = doc.get("e")
    if e:
        lat("(e) healthy endpoint alone p50 / p99 / max", e.get("alone"))
        lat(f"(e) next to a never-answering one, max_in_flight {DEAD_MAX_IN_FLIGHT}",
            e.get("with_dead"))
        lat(f"(e) next to a never-answering one, max_in_flight {DEFAULT_MAX_IN_FLIGHT}",
            e.get("with_dead_default_limit"))
    f = doc.get("f")
    if f:
        rows_n = (f.get("seed") or {}).get("rows", 0)
        per_s(f"(f) drain with {rows_n:,} finished rows: start -> last",
              f.get("per_s_from_start"))
        per_s("(f) drain with finished rows: first -> last", f.get("per_s_first_to_last"))
        if "ratio_to_a_first_to_last" in f:
            rows.append(("(f) ratio to (a): from start / first -> last",
                         f"{f['ratio_to_a_from_start']:.2f} / {f['ratio_to_a_first_to_last']:.2f}",
                         ""))
    s = doc.get("scale_out")
    if s:
        per_s(f"scale-out: {s['daemons']} daemons, {s['events']:,} events", s.get("per_s"))
        rows.append(("scale-out: missing / duplicate ids / extra",
                     f"{s['missing']} / {s['duplicate_ids']} / {s['extra_deliveries']}", ""))
    vs = doc.get("vs_pgqueuer") or {}
    for key, label in (("a_drain_from_start", "vs PgQueuer: (a) drain, start -> last"),
                       ("a_drain_first_to_last", "vs PgQueuer: (a) drain, first -> last"),
                       ("b_publish_and_deliver", "vs PgQueuer: (b) publish + deliver"),
                       ("d_p50_ms_theirs_over_ours", "vs PgQueuer: (d) p50 at 200/s, theirs/ours"),
                       ("d_p99_ms_theirs_over_ours", "vs PgQueuer: (d) p99 at 200/s, theirs/ours")):
        if key in vs:
            rows.append((label, f"{vs[key]:.2f}x", ""))
    for key, err in (doc.get("errors") or {}).items():
        rows.append((f"({key}) FAILED: " + err.splitlines()[0][:70], "", ""))
    width = max([len(r[0]) for r in rows] + [10])
    vwidth = max([len(r[1]) for r in rows] + [10])
    lines = [f"{'measurement':<{width}}  {'value':>{vwidth}}  ratio to (g)",
             "-" * (width + vwidth + 16)]
    lines += [f"{label:<{width}}  {value:>{vwidth}}  {ratio}" for label, value, ratio in rows]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None,
                    help="events per drain/publish scenario (default 50000; --quick 2000)")
    ap.add_argument("--quick", action="store_true",
                    help="a small smoke run: 2,000 events, 20,000 seeded rows, short phases")
    ap.add_argument("--only", default="",
                    help=f"comma-separated scenarios out of {','.join(SCENARIOS)} "
                         "(default: all)")
    ap.add_argument("--workers", type=int, default=None,
                    help="passed to `dispatcher serve --workers` when it has that option "
                         "(default: serve's own default)")
    ap.add_argument("--dsn", default="",
                    help="an external PostgreSQL (a database is created per scenario and "
                         "dropped at the end) instead of the embedded one")
    ap.add_argument("--json-out", default="", help="also write the JSON document here")
    ap.add_argument("--peers", default="",
                    help="run_all.sh's output from the same sitting: ratios to PgQueuer")
    ap.add_argument("--scale-out", action="store_true",
                    help="run the 4-daemon scale-out check (with the ceiling, and only the "
                         "scenarios given with --only)")
    ap.add_argument("--seed-rows", type=int, default=None,
                    help="finished rows seeded for (f) (default 1000000; --quick 20000)")
    ap.add_argument("--telemetry", type=float, default=None, metavar="RATIO",
                    help="tracing on ([telemetry] enabled, sample_ratio RATIO), spans "
                         "exported to a local OTLP sink (bench/otlp_sink.py)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for every daemon of the run, e.g. "
                         "DISPATCHER_METRICS__PER_TENANT=false (repeatable)")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temporary directory (daemon logs, receiver log)")
    args = ap.parse_args()
    unknown = set(args.only.replace(",", "")) - set(SCENARIOS)
    if unknown:
        ap.error(f"--only: unknown scenario(s) {','.join(sorted(unknown))}")
    if args.events is not None and args.events < 2 * BATCH:
        ap.error(f"--events must be at least {2 * BATCH}")
    return args


def main() -> int:
    args = parse_args()
    # The daemon's modules used here (the scale-out's embedded server) log with
    # structlog, to stdout by default: keep stdout for the table and the JSON.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    quick = args.quick
    events = args.events or (2_000 if quick else 50_000)
    params = Params(
        events=events,
        seed_rows=args.seed_rows or (20_000 if quick else 1_000_000),
        ceiling_events=5_000 if quick else 50_000,
        latency_events=200 if quick else 2_000,
        paced_seconds=2.0 if quick else 8.0,
        scale_events=4_000 if quick else 100_000,
        singles=min(2_000, events // 10),
    )
    if args.only:
        selected = "".join(s for s in SCENARIOS if s in args.only)
    else:
        selected = "" if args.scale_out else SCENARIOS
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="dispatcher-serve-bench-"))
    children = Children()
    for setting in args.env:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            note(f"--env wants NAME=VALUE, got {setting!r}")
            return 2
        TELEMETRY_ENV[name] = value
    sink = None
    if args.telemetry is not None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            sink_port = s.getsockname()[1]
        sink = subprocess.Popen([sys.executable, str(Path(__file__).parent / "otlp_sink.py"),
                                 str(sink_port)])
        TELEMETRY_ENV.update({
            "DISPATCHER_TELEMETRY__ENABLED": "true",
            "DISPATCHER_TELEMETRY__SAMPLE_RATIO": str(args.telemetry),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces"})
        note(f"tracing on, sampling {args.telemetry:.0%}, spans to 127.0.0.1:{sink_port}")
    doc: dict[str, Any] = {}
    try:
        doc = run(run_all(args, params, selected, args.scale_out, tmp, children))
    except (KeyboardInterrupt, asyncio.CancelledError):
        note("interrupted; stopping everything started here")
        return 130
    finally:
        children.stop_all()
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        for d in tmp.iterdir() if tmp.exists() else []:
            if (d / "pg").is_dir():
                stop_leftover_postgres(d)
        if args.keep_tmp:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    doc["duration_s"] = round(time.monotonic() - t0, 1)
    if args.peers:
        doc["peers"] = parse_peers(Path(args.peers).read_text())
        doc["vs_pgqueuer"] = versus_pgqueuer(doc)
    print(table(doc))
    print(f"run took {doc['duration_s']:.0f} s")
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 1 if doc.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
