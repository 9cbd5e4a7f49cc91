"""Rendering console pages: the Jinja2 environment (autoescaped), the context every
page shares (branding, scope, CSRF token) and the security headers of every
console response."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup

from dispatcher.console.access import SCOPE, SESSION
from dispatcher.web.context import CONFIG

CONSOLE_PREFIX = "/console/"
# No inline script or style anywhere: scripts and styles come only from /console/static.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors {ancestors}; "
       "base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP.format(ancestors="'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def security_headers_for(frame_ancestors: list[str]) -> dict[str, str]:
    """The console's headers; with `[console] frame_ancestors`, those origins may embed
    it (CSP frame-ancestors; X-Frame-Options, which cannot name origins, is left out)."""
    if not frame_ancestors:
        return SECURITY_HEADERS
    headers = {k: v for k, v in SECURITY_HEADERS.items() if k != "X-Frame-Options"}
    headers["Content-Security-Policy"] = CSP.format(ancestors=" ".join(frame_ancestors))
    return headers


def ms_time(value: int | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    """A whole number of days, hours or minutes when it is one, else seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


# Bidirectional controls reorder the text around them: a description or payload with
# U+202E could show a URL or an amount reversed. Every value a page shows gets them
# as visible text instead; only a form's own input keeps the exact value (FormText),
# so saving a form does not change what it did not touch.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class FormText(str):
    """A value for a form input, shown exactly as stored."""


def form_text(value: Any) -> FormText:
    return FormText("" if value is None else value)


def visible_controls(value: Any) -> Any:
    """Jinja's finalize: runs on every `{{ }}` before autoescaping."""
    if isinstance(value, str) and not isinstance(value, FormText | Markup):
        return BIDI_CONTROLS.sub(lambda m: f"<U+{ord(m.group()):04X}>", value)
    return value


def pretty(value: Any) -> str:
    """JSON pretty-printed; text that is JSON is re-indented, other text kept."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    text: str = json.dumps(value, indent=2, ensure_ascii=False)
    return text


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("dispatcher.console", "templates"),
        autoescape=True,
        finalize=visible_controls,
    )
    env.filters["ms_time"] = ms_time
    env.filters["pretty"] = pretty
    env.filters["duration"] = duration
    env.filters["form_text"] = form_text


def render(request: web.Request, template: str, status: int = 200,
           **context: Any) -> web.Response:
    console = request.app[CONFIG].console
    scope = request.get(SCOPE)
    session = request.get(SESSION)
    base = {
        "title": console.title,
        "logo_url": console.logo_url,
        "scope": scope,
        "read_only": bool(scope and scope.read_only),
        "csrf": session.csrf if session else "",
        "path": request.path,
    }
    response = aiohttp_jinja2.render_template(template, request, {**base, **context})
    response.set_status(status)
    return response


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, error=message)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every console answer carries the CSP and is not cached."""
    if request.path.startswith(CONSOLE_PREFIX) or request.path == CONSOLE_PREFIX.rstrip("/"):
        response.headers.update(security_headers_for(request.app[CONFIG].console.frame_ancestors))
        if not request.path.startswith(CONSOLE_PREFIX + "static/"):
            response.headers["Cache-Control"] = "no-store"
