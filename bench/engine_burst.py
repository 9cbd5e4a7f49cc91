"""Delivery throughput: N events published into the store while the engine runs,
timed from the commit until every delivery is recorded Success (full attempt rows),
next to the raw-aiohttp ceiling measured in the same run on the same receiver.

    python bench/engine_burst.py [--events 50000] [--workers 1] [--dsn postgresql://...]

Without --dsn an embedded PostgreSQL is started in a temporary directory (fsync
and synchronous_commit on). The receiver is a minimal HTTP/1.1 server in its own
process answering 200 at once. Numbers on a shared machine are noisy: compare the
ratio to the ceiling, not the absolute figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg

from common import PAYLOAD, CpuMeter, ceiling, start_python_receiver, stop_process
from common import run as _run
from dispatcher.clock import SystemClock
from dispatcher.config import load_config
from dispatcher.engine.worker import DeliveryWorker
from dispatcher.retry import load_policies
from dispatcher.secretbox import load_secret_box
from dispatcher.signing import generate_secret
from dispatcher.store.events import NewEvent, publish_events
from dispatcher.store.migrate import migrate_dsn
from dispatcher.store.pool import create_pool
from dispatcher.store.secrets import set_endpoint_secret
from dispatcher.store.tenants import ensure_tenant
from dispatcher.transport import Transport

# -- engine worker (its own process) ----------------------------------------------

async def _worker_main(dsn: str) -> None:
    config = load_config(environ={**os.environ, "DISPATCHER_URLS__ALLOW_PRIVATE_NETWORKS": "true"})
    pool = await create_pool(dsn, config.database)
    transport = Transport.from_config(config)
    worker = DeliveryWorker(pool, dsn, transport, config, SystemClock(), load_secret_box(config))
    await worker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await worker.stop(5)
    await transport.close()
    await pool.close()


# -- driver --------------------------------------------------------------------

async def setup(dsn: str, url: str, data_dir: str) -> object:
    await migrate_dsn(dsn)
    config = load_config(environ={"DISPATCHER_DATA_DIR": data_dir})
    conn = await asyncpg.connect(dsn)
    try:
        tenant = await ensure_tenant(conn, "bench")
        endpoint = await conn.fetchval(
            """INSERT INTO endpoints (tenant_id, url, retry_policy, max_in_flight)
               VALUES ($1, $2, 'standard', $3) RETURNING id""",
            tenant, url, config.delivery.max_concurrency)
        await set_endpoint_secret(conn, load_secret_box(config), endpoint,
                                  generate_secret("standard-v1"))
        return tenant
    finally:
        await conn.close()


async def publish_all(dsn: str, tenant: object, n: int, data_dir: str) -> float:
    """Publish every event in one transaction; returns the commit time."""
    config = load_config(environ={"DISPATCHER_DATA_DIR": data_dir})
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for start in range(0, n, 500):
                events = [NewEvent("transaction", {**PAYLOAD, "n": i})
                          for i in range(start, min(n, start + 500))]
                await publish_events(conn, tenant, events, policies=load_policies(config),  # type: ignore[arg-type]
                                     now=SystemClock().now(),
                                     idempotency_window=timedelta(days=1))
        return time.perf_counter()
    finally:
        await conn.close()


async def wait_done(dsn: str, n: int, timeout: float) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            # Counts the unfinished rows through the small partial index, so the
            # poll itself costs the database almost nothing.
            left = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status < 2")
            if left == 0:
                return time.perf_counter()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{left} of {n} not delivered")
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--ceiling-events", type=int, default=20_000)
    ap.add_argument("--dsn", default=os.environ.get("DISPATCHER_DATABASE_URL", ""))
    ap.add_argument("--worker", metavar="DSN", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _run(_worker_main(args.worker))
        return

    receiver = start_python_receiver()
    url = receiver.url
    tmp = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
    embedded = None
    dsn = args.dsn
    if not dsn:
        from dispatcher.store.embedded import EmbeddedPostgres
        embedded = EmbeddedPostgres(tmp)
        dsn = embedded.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        ceiling_rate = _run(ceiling(url, args.ceiling_events, 100))
        tenant = _run(setup(dsn, url, str(tmp)))
        env = {**os.environ, "DISPATCHER_DATA_DIR": str(tmp), "DISPATCHER_LOG__LEVEL": "warning"}
        for _ in range(args.workers):
            p = subprocess.Popen([sys.executable, __file__, "--worker", dsn], env=env,
                                 stdout=subprocess.PIPE)
            assert p.stdout is not None
            p.stdout.readline()  # "ready"
            workers.append(p)
        cpu = CpuMeter({"workers": [p.pid for p in workers], "receiver": [receiver.proc.pid]},
                       postgres=embedded is not None)
        committed = _run(publish_all(dsn, tenant, args.events, str(tmp)))
        cpu.start()
        finished = _run(wait_done(dsn, args.events, timeout=600))
        busy = cpu.stop()
        rate = args.events / (finished - committed)  # type: ignore[operator]
        attempts = _run(_count_attempts(dsn))
        print(json.dumps({
            "events": args.events, "workers": args.workers,
            "deliveries_per_s": round(rate), "attempt_rows": attempts,
            "ceiling_raw_aiohttp_per_s": round(ceiling_rate),  # type: ignore[arg-type]
            "ratio_to_ceiling": round(rate / ceiling_rate, 3),  # type: ignore[operator]
            "cpu_busy": busy,
        }))
    finally:
        for p in workers:
            p.send_signal(signal.SIGTERM)
        for p in workers:
            stop_process(p, grace=30)
        receiver.stop()
        if embedded:
            embedded.stop()


async def _count_attempts(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM attempts")
        return n
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
