"""Mounts the web console on the management API's application under /console/:
templates, static files, the theme from `[console]`, and every page. Pages are
bookmarkable GETs; every change is a form POST carrying the session's CSRF token."""

from __future__ import annotations

import math
from pathlib import Path

from aiohttp import web

from dispatcher.console import audit, callbacks, endpoints, events, sandbox, signin, tenants
from dispatcher.console.access import RESOLVER, Page, resolve_api_key, signed_in_page
from dispatcher.console.render import (
    CONSOLE_PREFIX,
    error_page,
    security_headers,
    setup_templates,
)
from dispatcher.errors import DispatcherError, TooManyRequests, Unauthorized
from dispatcher.operations.scope import tenant_vanished
from dispatcher.web.context import CONFIG

STATIC_DIR = Path(__file__).parent / "static"

read = signed_in_page()
write = signed_in_page(write=True)
operator = signed_in_page(operator=True)

PAGES: list[tuple[str, str, Page]] = [
    ("GET", "/console/endpoints", read(endpoints.endpoints_page)),
    ("POST", "/console/endpoints", write(endpoints.create)),
    ("GET", "/console/endpoints/{endpoint_id}", read(endpoints.endpoint_page)),
    ("POST", "/console/endpoints/{endpoint_id}", write(endpoints.update)),
    ("POST", "/console/endpoints/{endpoint_id}/pause", write(endpoints.pause)),
    ("POST", "/console/endpoints/{endpoint_id}/resume", write(endpoints.resume)),
    ("POST", "/console/endpoints/{endpoint_id}/rotate-secret", write(endpoints.rotate_secret)),
    ("POST", "/console/endpoints/{endpoint_id}/reveal-secret", write(endpoints.reveal_secret)),
    ("POST", "/console/endpoints/{endpoint_id}/delete", write(endpoints.delete)),
    ("POST", "/console/endpoints/{endpoint_id}/replay", write(endpoints.replay)),
    ("GET", "/console/events", read(events.events_page)),
    ("GET", "/console/events/{event_id}", read(events.event_page)),
    ("POST", "/console/events/{event_id}/retry", write(events.retry)),
    ("GET", "/console/callbacks", read(callbacks.callbacks_page)),
    ("GET", "/console/callbacks/{callback_id}", read(callbacks.callback_page)),
    ("POST", "/console/callbacks/{callback_id}/retry", write(callbacks.retry)),
    ("GET", "/console/audit", read(audit.audit_page)),
    ("GET", "/console/tenants", operator(tenants.tenants_page)),
    ("POST", "/console/tenants/{tenant}/act", operator(tenants.act_for)),
    ("GET", "/console/sandbox", read(sandbox.sandbox_page)),
    ("GET", "/console/sandbox/requests", read(sandbox.captures_fragment)),
    ("POST", "/console/sandbox/send", write(sandbox.send_sample)),
]


async def theme(request: web.Request) -> web.Response:
    """The accent colour as a stylesheet (validated by the config loader), so no
    page needs an inline style."""
    accent = request.app[CONFIG].console.accent_color
    return web.Response(text=f":root {{ --accent: {accent}; }}\n", content_type="text/css")


@web.middleware
async def console_errors(request: web.Request, handler: Page) -> web.StreamResponse:
    """Errors on console paths leave as pages (elsewhere json_errors answers JSON).
    It runs outside the failed-authentication limit (api/authlimit.py), so a refused
    sign-in is counted before it becomes the sign-in form again."""
    if not request.path.startswith(CONSOLE_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except DispatcherError as exc:
        status = exc.status if exc.status < 500 else 500
        if request.path == "/console/login" and isinstance(exc, Unauthorized | TooManyRequests):
            message = ("That key is not valid (or has been revoked)."
                       if isinstance(exc, Unauthorized) else exc.message)
            response = signin.login_form(request, status, message)
        else:
            response = error_page(request, status, exc.message)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response
    except Exception as exc:
        if not tenant_vanished(exc):
            raise
        return error_page(request, 404, "The tenant this page acts for was deleted while "
                          "the request ran. Choose another on the tenants page.")


async def to_home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/endpoints")


def add_console_routes(app: web.Application) -> None:
    setup_templates(app)
    app[RESOLVER] = resolve_api_key
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/console", to_home)
    app.router.add_get("/console/", to_home)
    app.router.add_get("/console/login", signin.login_page)
    app.router.add_post("/console/login", signin.login)
    app.router.add_get("/console/logout", signin.logout)
    app.router.add_get("/console/portal", signin.portal_page)
    app.router.add_get("/portal/", signin.to_portal)  # portal links point here
    app.router.add_get("/console/theme.css", theme)
    app.router.add_static("/console/static/", STATIC_DIR)
    for method, path, handler in PAGES:
        app.router.add_route(method, path, handler)
