"""Starting before the database: an external PostgreSQL that is not up yet (a
container started alongside, a failover in progress) is waited for, with backoff,
instead of failing the start. Meanwhile the port already answers: /healthz 200 (the
process is alive), /readyz 503 and every other route 503 `database_unavailable`
with Retry-After, so an orchestrator sees "alive, not ready" and a publisher retries."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import structlog
from aiohttp import web

from dispatcher.api.errors import RETRY_AFTER_SECONDS, error_response
from dispatcher.store.pool import DB_UNAVAILABLE

log = structlog.get_logger(__name__)

FIRST_DELAY = 0.5
MAX_DELAY = 5.0
CONNECT_TIMEOUT = 5.0


def _waiting_app(state: dict[str, str]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "unavailable",
                                  "reason": f"database: waiting ({state['error']})"},
                                 status=503)

    async def anything(request: web.Request) -> web.Response:
        resp = error_response(503, "database_unavailable",
                              "the database is not reachable yet; retry shortly")
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


async def _reachable(dsn: str) -> str | None:
    """None when the database answers; else what went wrong (the error's class)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    except DB_UNAVAILABLE as exc:
        return type(exc).__name__
    await conn.close()
    return None


async def wait_for_database(dsn: str, sock: socket.socket, stop: asyncio.Event) -> bool:
    """Return once the database answers (True), or when `stop` is set first (False).
    While waiting, a stand-in app answers on `sock` (see the module docstring)."""
    error = await _reachable(dsn)
    if error is None:
        return True
    state = {"error": error}
    runner = web.AppRunner(_waiting_app(state), access_log=None)
    await runner.setup()
    # A duplicate of the listening socket: closing the stand-in must not close the port.
    await web.SockSite(runner, sock.dup()).start()
    delay = FIRST_DELAY
    try:
        while error is not None:
            log.warning("database.waiting", error=error, retry_in=delay)
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
                return False
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_DELAY)
            error = await _reachable(dsn)
            state["error"] = error or ""
        log.info("database.reachable")
        return True
    finally:
        await runner.cleanup()
