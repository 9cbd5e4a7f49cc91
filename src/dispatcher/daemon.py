"""The composition root: the one place that builds and wires the pool, the
transport, the API and the console (mounted here, on one application), the
delivery engine and maintenance. The front ends and the engine never import each
other; they meet here and in the database.

`dispatcher serve` runs a supervisor that owns the database (embedded or not),
migrations, the first-start admin key, the listening socket and signals, and starts
`server.workers` worker processes (default: one per CPU) that share the socket. Each
worker runs the API and/or a delivery engine (`server.role`). A worker that dies is
restarted, and the deliveries it had leased become due again at once. With one
worker, everything runs in the supervisor's process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal

import asyncpg
import structlog
from aiohttp import web

from dispatcher import metrics, telemetry
from dispatcher.api.app import create_app
from dispatcher.api.connections import ConnectionLimits, GuardedAppRunner
from dispatcher.clock import Clock, SystemClock
from dispatcher.config import Config
from dispatcher.console.app import add_console_routes, console_errors
from dispatcher.engine import callbacks, health
from dispatcher.engine.worker import DeliveryWorker
from dispatcher.logs import protocol_error_logger
from dispatcher.maintenance import MAINTENANCE, Maintenance
from dispatcher.model import DEFAULT_TENANT
from dispatcher.relay import abandoned_listeners_job
from dispatcher.secretbox import load_secret_box
from dispatcher.store.database import database_url
from dispatcher.store.deliveries import CLAIM_SETTINGS, release_owner, warm_claim
from dispatcher.store.migrate import migrate_dsn
from dispatcher.store.pool import DB_ERRORS, create_pool
from dispatcher.store.tenants import count_tenants, create_operator_key, ensure_tenant
from dispatcher.transport import Transport
from dispatcher.waiting import wait_for_database
from dispatcher.web.context import CLOCK, COMPONENTS, CONFIG, DSN, POOL, READINESS, TRANSPORT

log = structlog.get_logger(__name__)

WORKER = "delivery_worker"
CALLBACKS = "callback_recorder"
Role = Literal["all", "api", "worker"]
OWNER = web.AppKey("lease_owner", uuid.UUID)
RESTART_BACKOFF_MAX = 30.0
STABLE_SECONDS = 10.0  # a worker that lived this long is restarted without delay
STOP_MARGIN_SECONDS = 10.0  # beyond the grace period, before a stopping worker exits hard


# -- one process: the application -------------------------------------------------------

def build_app(
    config: Config,
    dsn: str,
    clock: Clock | None = None,
    *,
    role: Role | None = None,
    owner: uuid.UUID | None = None,
) -> web.Application:
    """The aiohttp application of one process: the management API (role all/api; a
    worker serves only /healthz, /readyz and /metrics), and the delivery engine with
    the maintenance jobs (role all/worker)."""
    role = role or effective_role(config)
    tracing = telemetry.setup(config.telemetry, role)  # before the app: its middleware
    app = create_front_ends(config, dsn, clock, management=role != "worker")
    if tracing is not None:
        app.on_cleanup.append(_flush_spans)
    if role != "api":
        app[OWNER] = owner or uuid.uuid4()
        app.cleanup_ctx.append(_engine_ctx)
        app.cleanup_ctx.append(_maintenance_ctx)
    return app


def create_front_ends(config: Config, dsn: str, clock: Clock | None = None, *,
                      management: bool = True) -> web.Application:
    """What a process serves over HTTP: the API and, in a management process with the
    console enabled, the console on the same application; with the process's
    transport, which the engine and the console's sample sends share."""
    app = create_app(config, dsn, clock, management=management, middlewares=(console_errors,))
    app.cleanup_ctx.append(_transport_ctx)
    if management and config.console.enabled:
        add_console_routes(app)
    return app


async def _transport_ctx(app: web.Application) -> AsyncIterator[None]:
    app[TRANSPORT] = Transport.from_config(app[CONFIG])
    yield
    await app[TRANSPORT].close()


async def _flush_spans(app: web.Application) -> None:
    await asyncio.to_thread(telemetry.shutdown)  # exports what is buffered


def effective_role(config: Config) -> Role:
    """`delivery.enabled = false` means the same as role `api`."""
    if config.server.role == "all" and not config.delivery.enabled:
        return "api"
    return config.server.role


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    metrics.configure(per_tenant=config.metrics.per_tenant,
                      per_endpoint=config.metrics.per_endpoint)
    # A lease is not data: a claim lost in a crash only makes its rows due again,
    # which at-least-once allows, so claims and releases skip the WAL flush wait.
    # CLAIM_SETTINGS keeps the claim on its index whatever the statistics say.
    lease_pool = await create_pool(
        app[DSN], dataclasses.replace(config.database, pool_min_size=1, pool_max_size=4),
        server_settings={"synchronous_commit": "off", **CLAIM_SETTINGS}, warm=(warm_claim,),
    )
    worker = DeliveryWorker(app[POOL], app[DSN], app[TRANSPORT], config, app[CLOCK],
                            load_secret_box(config), lease_pool=lease_pool, owner=app[OWNER])
    health.install(worker, config)
    app[COMPONENTS][CALLBACKS] = callbacks.install(worker, config)
    app[COMPONENTS][WORKER] = worker
    stall = config.delivery.writer_stall_seconds

    def writer_stalled() -> str | None:
        # Every worker answers for the whole `serve`: a probe lands on any of them.
        count, age = metrics.shared_outcome_backlog() or worker.writer_backlog()
        if age <= stall:
            return None
        return f"delivery outcomes unwritten: {count} waiting for {age:.0f} s"

    app[READINESS].add(writer_stalled)
    gauges = asyncio.create_task(_publish_backlog(worker))
    await worker.start()
    try:
        yield
    finally:
        await worker.stop(config.server.grace_period_seconds)
        gauges.cancel()
        await lease_pool.close()


async def _publish_backlog(worker: DeliveryWorker) -> None:
    """Keep the unwritten-outcome gauges current, even while a write hangs."""
    while True:
        count, age = worker.writer_backlog()
        metrics.OUTCOMES_UNWRITTEN.set(count)
        metrics.OUTCOMES_UNWRITTEN_AGE.set(age)
        await asyncio.sleep(1.0)


async def _maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
    maintenance = Maintenance(app[POOL], app[CONFIG], app[CLOCK])
    maintenance.add_job("remove_abandoned_listeners",
                        app[CONFIG].health.maintenance_interval_seconds,
                        abandoned_listeners_job(app[CONFIG].server.listen_grace_seconds))
    recorder = app[COMPONENTS].get(CALLBACKS)
    if recorder is not None:  # callbacks past their deadline fail closed
        maintenance.add_job("expire_callbacks", app[CONFIG].callbacks.expire_interval_seconds,
                            recorder.expire, urgent=True)
    app[COMPONENTS][MAINTENANCE] = maintenance
    maintenance.start()
    yield
    await maintenance.stop(app[CONFIG].server.grace_period_seconds)


async def bootstrap_admin_key(dsn: str) -> str | None:
    """On the very first start, create the default tenant and an operator key, which
    acts on `default` unless a request names another tenant. Not again once the
    operator has deleted every tenant: its operator keys remain."""
    conn = await asyncpg.connect(dsn)
    try:
        if await count_tenants(conn) or await conn.fetchval("SELECT count(*) FROM api_keys"):
            return None
        async with conn.transaction():
            await ensure_tenant(conn, DEFAULT_TENANT)
            return await create_operator_key(conn, name="created on first start")
    finally:
        await conn.close()


def worker_count(config: Config) -> int:
    return config.server.workers or os.cpu_count() or 1


# -- serve ------------------------------------------------------------------------------

async def serve(
    config: Config, host: str, port: int, clock: Clock | None = None,
    config_path: str | None = None,
) -> None:
    async with database_url(config) as dsn:
        # Bind first: a start that cannot listen must not spend the one-time admin key.
        sock = _listen(host, port)
        try:
            stop = _stop_event()
            if not await wait_for_database(dsn, sock, stop):
                return
            applied = await migrate_dsn(dsn)
            if applied:
                log.info("migrations.done", applied=applied)
            first_key = await bootstrap_admin_key(dsn)
            workers = worker_count(config)
            if workers == 1:
                app = build_app(config, dsn, clock)
                async with _serving(app, sock, config):
                    _freeze_startup_heap()
                    _announce(sock, first_key, workers)
                    await stop.wait()
            else:
                supervisor = Supervisor(config, dsn, sock, workers, config_path,
                                        clock or SystemClock())
                await supervisor.start()
                _announce(sock, first_key, workers)
                await stop.wait()
                log.info("daemon.stopping", grace_seconds=config.server.grace_period_seconds)
                # The workers' copies close as they stop: then connections are refused.
                sock.close()
                await supervisor.stop()
        finally:
            sock.close()
            _clear_stop_handlers()
    log.info("daemon.stopped")


async def run_worker_process(
    config: Config, fd: int, role: Role, owner: uuid.UUID, parent: int
) -> None:
    """A worker started by the supervisor `parent`: serve the inherited socket until
    SIGTERM, or until the supervisor is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    if os.getppid() != parent:
        # Killed while this process started: it is nobody's worker. (Reading the
        # parent here instead of being told it, such a worker served forever.)
        log.error("daemon.supervisor_gone", pid=os.getpid())
        raise SystemExit(1)
    _exit_when_orphaned(parent, config.server.grace_period_seconds + STOP_MARGIN_SECONDS)
    sock = socket.socket(fileno=fd)
    app = build_app(config, config.database.url, role=role, owner=owner)
    stop = _stop_event(signals=(signal.SIGTERM,))
    async with _serving(app, sock, config):
        _freeze_startup_heap()
        log.info("daemon.worker_ready", pid=os.getpid(), role=role)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
            if os.getppid() != parent:
                log.error("daemon.supervisor_gone", pid=os.getpid())
                break
        # Shutting down must end even if the database is gone and a close hangs.
        _exit_after(config.server.grace_period_seconds + STOP_MARGIN_SECONDS)
    _clear_stop_handlers((signal.SIGTERM,))


def _freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, app, pools: ~60,000 objects that live as
    long as the process) out of the collector's reach. A full collection of that
    heap takes ~12 ms, a pause every few seconds on the request path under load."""
    gc.collect()
    gc.freeze()


def _exit_when_orphaned(parent: int, grace: float) -> None:
    """A worker never outlives its supervisor, whatever its event loop is doing: one
    stuck in start-up (its database gone, say) would otherwise keep the listening
    socket open forever after the supervisor was killed, and no new `serve` could
    bind the port. The loop's own check stops gracefully first; this thread exits
    hard `grace` seconds later if that did not happen."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        time.sleep(grace)
        log.error("daemon.orphan_exit", pid=os.getpid())
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _exit_after(seconds: float) -> None:
    def force() -> None:
        log.error("daemon.stop_timeout", pid=os.getpid(), seconds=seconds)
        os._exit(1)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


@contextlib.asynccontextmanager
async def _serving(app: web.Application, sock: socket.socket, config: Config
                   ) -> AsyncIterator[None]:
    limits = ConnectionLimits(config.server.header_timeout_seconds,
                              config.server.max_connections)
    runner = GuardedAppRunner(app, limits, shutdown_timeout=config.server.grace_period_seconds,
                              access_log=None, logger=protocol_error_logger(),
                              keepalive_timeout=config.server.keepalive_seconds,
                              # After an early answer (401, 408, 413) the rest of the
                              # body is read and dropped so the client sees the answer;
                              # no longer than a body may take.
                              lingering_time=min(10.0, config.server.body_timeout_seconds
                                                 or 10.0))
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
        log.info("daemon.stopping", grace_seconds=config.server.grace_period_seconds)
    finally:
        # Stops accepting, waits for in-flight requests, then closes the engine,
        # scheduler, HTTP client and pool in reverse order of creation.
        await runner.cleanup()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.set_inheritable(True)
    return sock


def _announce(sock: socket.socket, first_key: str | None, workers: int) -> None:
    host, port = sock.getsockname()[:2]
    address = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    log.info("daemon.listening", url=address, workers=workers)
    print(f"dispatcher listening on {address}", file=sys.stderr, flush=True)
    if first_key:
        print(f"admin API key (operator, shown once): {first_key}", file=sys.stderr, flush=True)
        print("(it acts for any tenant named in the Dispatcher-Tenant header, and for "
              f"'{DEFAULT_TENANT}' without it)", file=sys.stderr, flush=True)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _stop_event(signals: tuple[signal.Signals, ...] = _STOP_SIGNALS) -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    return stop


def _clear_stop_handlers(signals: tuple[signal.Signals, ...] = _STOP_SIGNALS) -> None:
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.remove_signal_handler(sig)


# -- the supervisor ---------------------------------------------------------------------

@dataclasses.dataclass
class _Child:
    slot: int
    owner: uuid.UUID
    proc: asyncio.subprocess.Process
    started: float


class Supervisor:
    """Starts the worker processes, restarts one that dies (after making what it had
    leased due again), and stops them all on request."""

    def __init__(self, config: Config, dsn: str, sock: socket.socket, workers: int,
                 config_path: str | None, clock: Clock) -> None:
        self._config = config
        self._dsn = dsn
        self._sock = sock
        self._workers = workers
        self._config_path = config_path
        self._clock = clock
        self._metrics_dir = tempfile.mkdtemp(prefix="dispatcher-metrics-")
        self._children: dict[int, _Child] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        for slot in range(self._workers):
            await self._spawn(slot)

    async def _spawn(self, slot: int) -> None:
        owner = uuid.uuid4()
        env = {**os.environ, "DISPATCHER_DATABASE_URL": self._dsn,
               "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        if self._config_path:
            env["DISPATCHER_CONFIG"] = self._config_path
        fd = self._sock.fileno()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", "worker-process", "--fd", str(fd),
            "--role", effective_role(self._config), "--owner", str(owner),
            "--parent", str(os.getpid()),
            env=env, pass_fds=(fd,), stdin=subprocess.DEVNULL,
        )
        child = _Child(slot, owner, proc, time.monotonic())
        self._children[slot] = child
        log.info("daemon.worker_started", slot=slot, pid=proc.pid)
        task = asyncio.create_task(self._watch(child))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, child: _Child) -> None:
        code = await child.proc.wait()
        if self._stopping:
            return
        lived = time.monotonic() - child.started
        log.error("daemon.worker_died", slot=child.slot, pid=child.proc.pid, exit_code=code,
                  lived_seconds=round(lived, 1))
        _mark_dead(child.proc.pid, self._metrics_dir)
        await self._release_leases(child.owner)
        if lived < STABLE_SECONDS:  # crashing at start: do not spin
            await asyncio.sleep(min(RESTART_BACKOFF_MAX, 1.0 + lived))
        if not self._stopping:
            await self._spawn(child.slot)

    async def _release_leases(self, owner: uuid.UUID) -> None:
        """The dead worker's claimed deliveries are due now instead of when their
        lease runs out; whatever it had on the wire may be sent again (at least once)."""
        try:
            conn = await asyncpg.connect(self._dsn)
            try:
                rows = await release_owner(conn, owner, self._clock.now())
            finally:
                await conn.close()
        except DB_ERRORS as exc:
            log.warning("daemon.lease_release_failed", error=str(exc))
            return
        log.info("daemon.leases_released", owner=str(owner), rows=rows)

    async def stop(self) -> None:
        self._stopping = True
        procs = [c.proc for c in self._children.values() if c.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        grace = self._config.server.grace_period_seconds + STOP_MARGIN_SECONDS + 5
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*(p.wait() for p in procs))
        except TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    log.error("daemon.worker_killed", pid=proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for task in list(self._watchers):
            task.cancel()
        shutil.rmtree(self._metrics_dir, ignore_errors=True)


def _mark_dead(pid: int, metrics_dir: str) -> None:
    """Drop a dead worker's live gauges from the totals (its counters stay counted)."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def run_async(coro: object) -> object:
    """asyncio.run, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]
