"""Liveness (/healthz: the process answers) and readiness (/readyz: the database
answers, every migration is applied, and no component of this process reports a
problem, such as an outcome writer that has not written for too long)."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from dispatcher.errors import MigrationError
from dispatcher.store.migrate import pending_migrations
from dispatcher.web.context import POOL, READINESS

READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with request.app[POOL].acquire() as conn:
                pending = await pending_migrations(conn)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return web.json_response(
            {"status": "unavailable", "reason": f"database: {type(exc).__name__}"}, status=503
        )
    except MigrationError as exc:
        return web.json_response({"status": "unavailable", "reason": exc.message}, status=503)
    if pending:
        return web.json_response(
            {"status": "unavailable", "reason": "pending migrations",
             "pending": [m.name for m in pending]},
            status=503,
        )
    problems = request.app[READINESS].problems()
    if problems:
        return web.json_response(
            {"status": "unavailable", "reason": "; ".join(problems)}, status=503)
    return web.json_response({"status": "ok"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
