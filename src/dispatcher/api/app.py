"""Builds the aiohttp application. Each long-lived resource (pool, HTTP client,
delivery engine, maintenance scheduler) is made and closed by one cleanup_ctx
generator, so start-up and shutdown read top to bottom."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from dispatcher.api import health
from dispatcher.api.context import CLOCK, COMPONENTS, CONFIG, DSN, HTTP, POOL, READINESS
from dispatcher.api.errors import json_errors, request_context
from dispatcher.clock import Clock, SystemClock
from dispatcher.config import Config
from dispatcher.readiness import Readiness
from dispatcher.store.pool import create_pool

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    app[POOL] = await create_pool(app[DSN], app[CONFIG].database)
    yield
    await app[POOL].close()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one outgoing HTTP session of the process."""
    from dispatcher.engine.http import create_client_session

    app[HTTP] = create_client_session(app[CONFIG])
    yield
    await app[HTTP].close()


def create_app(
    config: Config,
    dsn: str,
    clock: Clock | None = None,
    *,
    run_engine: bool | None = None,
    extra_contexts: list[CleanupCtx] | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[request_context, json_errors],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG] = config
    app[DSN] = dsn
    app[CLOCK] = clock or SystemClock()
    app[COMPONENTS] = {}
    app[READINESS] = Readiness()
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_http_ctx)
    health.add_routes(app)
    _add_later_layers(app, config, run_engine)
    for ctx in extra_contexts or []:
        app.cleanup_ctx.append(ctx)
    return app


def _add_later_layers(app: web.Application, config: Config, run_engine: bool | None) -> None:
    """API routes, the delivery engine and maintenance, each owned by its package."""
    from dispatcher.api.routes import add_api_routes
    from dispatcher.engine.lifecycle import engine_ctx
    from dispatcher.maintenance import maintenance_ctx

    add_api_routes(app, config)

    if config.delivery.enabled if run_engine is None else run_engine:
        app.cleanup_ctx.append(engine_ctx)
        app.cleanup_ctx.append(maintenance_ctx)

