"""Builds the aiohttp application of the management API: middlewares, the pool
(made and closed by a cleanup_ctx generator), health probes, metrics and, unless
only the probes are wanted, every API route. The transport, the console and the
delivery engine are attached by the composition root (dispatcher.daemon), never
from here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from dispatcher import telemetry
from dispatcher.api import health, metrics
from dispatcher.api.authlimit import AuthFailures, auth_failure_limit
from dispatcher.api.errors import json_errors, request_context
from dispatcher.api.routes import add_api_routes
from dispatcher.api.tracing import trace_requests
from dispatcher.clock import Clock, SystemClock
from dispatcher.config import Config
from dispatcher.readiness import Readiness
from dispatcher.store.deliveries import warm_record
from dispatcher.store.events import warm_publish
from dispatcher.store.pool import create_pool
from dispatcher.web.context import CLOCK, COMPONENTS, CONFIG, DSN, POOL, READINESS
from dispatcher.web.peers import parse_networks

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    # The statements on the hot paths: publishing, and the engine's outcome writes.
    app[POOL] = await create_pool(app[DSN], app[CONFIG].database,
                                  warm=(warm_publish, warm_record))
    yield
    await app[POOL].close()


def create_app(
    config: Config,
    dsn: str,
    clock: Clock | None = None,
    *,
    management: bool = True,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """`management=False`: only /healthz, /readyz and /metrics (a delivery-only worker).
    `middlewares` run after the JSON error handler (the console's error pages)."""
    tracing = telemetry.active()
    traced = [] if tracing is None else [trace_requests(tracing)]
    app = web.Application(
        middlewares=[*traced, request_context, json_errors, *middlewares, auth_failure_limit(
            AuthFailures(config.server.auth_failure_limit,
                         config.server.auth_failure_window_seconds),
            parse_networks(config.server.trusted_proxies))],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG] = config
    app[DSN] = dsn
    app[CLOCK] = clock or SystemClock()
    app[COMPONENTS] = {}
    app[READINESS] = Readiness()
    app.cleanup_ctx.append(_pool_ctx)
    health.add_routes(app)
    if management:
        add_api_routes(app, config)
    else:
        app.router.add_get("/metrics", metrics.metrics)
    return app
