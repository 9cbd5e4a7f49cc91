"""Soak: `dispatcher serve` on the embedded PostgreSQL, publishing at a steady rate
for a long time to a mix of healthy, slow, failing and gone (410) endpoints, printing
once a minute what should stay flat: the daemon's memory (RSS of the supervisor and
its workers), its open TCP connections, its database connections (by state), the
queue depth and the oldest due delivery. Not a test: run it by hand.

    .venv/bin/python bench/soak.py --minutes 30 --rate 100

`--rate` is events per second; each event goes to every endpoint (fan-out
--healthy + --slow + --failing + --gone), so the default 100/s with 16 endpoints is
1,600 deliveries/s before retries. Stops by itself after --minutes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port
from serve_bench import KEY_LINE, base_env, dispatcher_command, embedded_dsn

BATCH = 10


async def receivers(counts: dict[str, int]) -> tuple[web.AppRunner, int]:
    """One server, a path per behaviour."""
    received = counts

    async def healthy(request: web.Request) -> web.Response:
        await request.read()
        received["healthy"] += 1
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        received["slow"] += 1
        await asyncio.sleep(1.5)  # under the 2 s timeout
        return web.Response(text="ok")

    async def failing(request: web.Request) -> web.Response:
        await request.read()
        received["failing"] += 1
        return web.Response(status=500, text="down")

    async def gone(request: web.Request) -> web.Response:
        await request.read()
        received["gone"] += 1
        return web.Response(status=410, text="gone")

    app = web.Application()
    for name, handler in (("healthy", healthy), ("slow", slow), ("failing", failing),
                          ("gone", gone)):
        app.router.add_post(f"/{name}/{{n}}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def daemon_processes(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *[p for p in root.children(recursive=True)
                        if "postgres" not in p.name()]]
    return []


async def sample(pid: int, dsn: str, started: float) -> dict[str, Any]:
    procs = daemon_processes(pid)
    rss = conns = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            conns += len(p.net_connections(kind="tcp"))
    conn = await asyncpg.connect(dsn)
    try:
        depth, oldest = await conn.fetchrow(
            """SELECT count(*), extract(epoch FROM now() - min(next_attempt_at))
               FROM deliveries WHERE status < 2 AND next_attempt_at <= now()
                 AND held_since IS NULL""")
        pending, held = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE held_since IS NULL),
                      count(*) FILTER (WHERE held_since IS NOT NULL)
               FROM deliveries WHERE status < 2""")
        states = dict(await conn.fetch(
            """SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity
               WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
               GROUP BY 1"""))
        endpoints = dict(await conn.fetch("SELECT state, count(*) FROM endpoints GROUP BY 1"))
    finally:
        await conn.close()
    return {"minute": round((time.monotonic() - started) / 60, 1),
            "rss_mb": round(rss / 2**20, 1), "tcp_connections": conns,
            "db_connections": states, "due": depth,
            "oldest_due_s": round(float(oldest or 0), 1), "unfinished": pending,
            "held": held,
            "endpoints": endpoints}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=100, help="events per second")
    ap.add_argument("--healthy", type=int, default=10)
    ap.add_argument("--slow", type=int, default=2)
    ap.add_argument("--failing", type=int, default=2)
    ap.add_argument("--gone", type=int, default=2)
    ap.add_argument("--every", type=float, default=60, help="seconds between samples")
    args = ap.parse_args()

    counts = {"healthy": 0, "slow": 0, "failing": 0, "gone": 0}
    runner, rport = await receivers(counts)
    tmp = Path(tempfile.mkdtemp(prefix="dispatcher-soak-"))
    port = free_port()
    env = {**base_env(), "DISPATCHER_DATA_DIR": str(tmp), "DISPATCHER_LOG__LEVEL": "warning"}
    err = (tmp / "serve.log").open("ab")
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the handle is wanted
        [*dispatcher_command(), "serve", "--port", str(port)], env=env,
                            stdout=err, stderr=err, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                if proc.poll() is not None:
                    raise RuntimeError((tmp / "serve.log").read_text()[-2000:])
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            found = KEY_LINE.search((tmp / "serve.log").read_text())
            assert found, "no admin key printed"
            headers = {"Authorization": f"Bearer {found.group(1)}"}
            for kind in ("healthy", "slow", "failing", "gone"):
                for n in range(getattr(args, kind)):
                    async with http.post(base + "/v1/endpoints", headers=headers, json={
                            "url": f"http://127.0.0.1:{rport}/{kind}/{n}",
                            "retry_policy": "standard", "max_in_flight": 20}) as r:
                        assert r.status == 201, await r.text()
            dsn = embedded_dsn(tmp)
            started = time.monotonic()
            end = started + args.minutes * 60
            published = refused = 0

            async def publish() -> None:
                nonlocal published, refused
                interval = BATCH / args.rate
                next_at = time.monotonic()
                while time.monotonic() < end:
                    body = {"events": [{"type": "transaction", "data": {"n": published + i}}
                                       for i in range(BATCH)]}
                    try:
                        async with http.post(base + "/v1/events/batch", headers=headers,
                                             json=body) as r:
                            if r.status == 202:
                                published += BATCH
                            else:
                                refused += 1
                    except aiohttp.ClientError:
                        refused += 1
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))

            async def report() -> None:
                while time.monotonic() < end:
                    line = await sample(proc.pid, dsn, started)
                    line.update(published=published, refused_calls=refused,
                                received=dict(counts))
                    print(json.dumps(line), flush=True)
                    await asyncio.sleep(min(args.every, max(0.0, end - time.monotonic())))

            await asyncio.gather(publish(), report())
            final = await sample(proc.pid, dsn, started)
            final.update(published=published, refused_calls=refused, received=dict(counts))
            print(json.dumps({"final": final}), flush=True)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("DISPATCHER_SOAK_UVLOOP", "1") == "1":
        with contextlib.suppress(ImportError):
            import uvloop
            uvloop.install()
    asyncio.run(main())
