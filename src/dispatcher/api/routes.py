"""Registers the management API on the application: shared state (secret box,
retry policies, event-type catalogue), every declared route (authenticated unless
declared public), `/metrics` and the OpenAPI document describing all of them."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api import (
    audit,
    callbacks,
    endpoints,
    event_types,
    health,
    keys,
    listen,
    lookup,
    metrics,
    publish,
    secrets,
    tenants,
)
from dispatcher.api.auth import authenticated
from dispatcher.api.callback_waiter import waiter_ctx
from dispatcher.api.openapi import OPENAPI_ROUTE, build_document
from dispatcher.api.spec import Route
from dispatcher.catalogue import load_catalogue
from dispatcher.config import Config
from dispatcher.portal_tokens import KEY_PURPOSE
from dispatcher.retry import load_policies
from dispatcher.secretbox import load_secret_box
from dispatcher.web.context import (
    CATALOGUE,
    KEY_CACHE,
    OPENAPI,
    POLICIES,
    PORTAL_KEY,
    SECRET_BOX,
    TENANT_CACHE,
)
from dispatcher.web.keycache import KeyCache

# Registered by the foundation (api/health.py); declared here to be documented.
HEALTH_ROUTES = [
    Route("GET", "/healthz", health.healthz, "getHealth", "Liveness", "Operations",
          auth=False, response="Health"),
    Route("GET", "/readyz", health.readyz, "getReadiness",
          "Readiness: the database answers and every migration is applied", "Operations",
          auth=False, response="Health", other_responses=((503, "Health"),)),
]

API_ROUTES: list[Route] = [
    *endpoints.ROUTES,
    *secrets.ROUTES,
    *publish.ROUTES,
    *lookup.ROUTES,
    *event_types.ROUTES,
    *metrics.ROUTES,
    *listen.ROUTES,
    *callbacks.ROUTES,
    *tenants.ROUTES,
    *keys.ROUTES,
    *audit.ROUTES,
]


def add_api_routes(app: web.Application, config: Config) -> None:
    app[SECRET_BOX] = load_secret_box(config)
    app[POLICIES] = load_policies(config)
    app[CATALOGUE] = load_catalogue(config)
    app[KEY_CACHE] = KeyCache()
    app.cleanup_ctx.append(waiter_ctx)
    app[TENANT_CACHE] = KeyCache()
    app[PORTAL_KEY] = app[SECRET_BOX].derive_key(KEY_PURPOSE)
    app[OPENAPI] = build_document([*HEALTH_ROUTES, *API_ROUTES, OPENAPI_ROUTE])
    for route in [*API_ROUTES, OPENAPI_ROUTE]:
        handler = (authenticated(route.handler, operator_only=route.operator) if route.auth
                   else route.handler)
        app.router.add_route(route.method, route.path, handler)
