"""`dispatcher serve`: database, migrations, the HTTP app with the engine inside,
and a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg
import structlog
from aiohttp import web

from dispatcher.api.app import create_app
from dispatcher.clock import Clock
from dispatcher.config import Config
from dispatcher.store.database import database_url
from dispatcher.store.migrate import migrate_dsn
from dispatcher.store.tenants import count_tenants, create_api_key

log = structlog.get_logger(__name__)

DEFAULT_TENANT = "default"


async def bootstrap_admin_key(dsn: str) -> str | None:
    """On the very first start, create the default tenant and a key for it."""
    conn = await asyncpg.connect(dsn)
    try:
        if await count_tenants(conn):
            return None
        return await create_api_key(conn, DEFAULT_TENANT, name="created on first start")
    finally:
        await conn.close()


async def serve(config: Config, host: str, port: int, clock: Clock | None = None) -> None:
    async with database_url(config) as dsn:
        applied = await migrate_dsn(dsn)
        if applied:
            log.info("migrations.done", applied=applied)
        first_key = await bootstrap_admin_key(dsn)
        app = create_app(config, dsn, clock)
        runner = web.AppRunner(
            app, shutdown_timeout=config.server.grace_period_seconds, access_log=None
        )
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            address = f"http://{host}:{port}"
            log.info("daemon.listening", url=address)
            print(f"dispatcher listening on {address}", file=sys.stderr, flush=True)
            if first_key:
                print(
                    f"admin API key for tenant '{DEFAULT_TENANT}' (shown once): {first_key}",
                    file=sys.stderr, flush=True,
                )
            await stop.wait()
            log.info("daemon.stopping", grace_seconds=config.server.grace_period_seconds)
        finally:
            # Stops accepting, waits for in-flight requests, then closes the engine,
            # scheduler, HTTP client and pool in reverse order of creation.
            await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    log.info("daemon.stopped")


def run_async(coro: object) -> object:
    """asyncio.run, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]
