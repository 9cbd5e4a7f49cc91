"""Sign-in and sign-out. The sign-in form posts the field `key` (an API key); its
CSRF token is a random value in a short-lived cookie echoed by the form (there is
no session yet to hold one). A good credential opens a session on the server and
sets its cookie; sign-out ends that session on the server, then clears the cookie."""

from __future__ import annotations

import secrets
from datetime import timedelta

from aiohttp import web

from dispatcher.console.access import RESOLVER, CsrfRefused, signed_in
from dispatcher.console.render import render
from dispatcher.console.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    csrf_ok,
    new_session,
    seal,
    set_cookie,
)
from dispatcher.operations.sessions import end_session, open_session
from dispatcher.web.context import CLOCK, CONFIG, SECRET_BOX, services
from dispatcher.web.peers import request_address

HOME = "/console/endpoints"
LOGIN_FORM_SECONDS = 3600


def _next_page(value: object) -> str:
    """Only a console path: never an open redirect to another site."""
    if isinstance(value, str) and value.startswith("/console/") and "//" not in value \
            and "\\" not in value and not value.startswith("/console/log"):
        return value
    return HOME


def login_form(request: web.Request, status: int = 200, message: str = "", *,
               portal: bool = False) -> web.Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", status=status, login_csrf=token, message=message,
                      next=_next_page(request.query.get("next")), portal=portal)
    set_cookie(request, response, LOGIN_COOKIE, token, LOGIN_FORM_SECONDS)
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    if await signed_in(request) is not None:
        raise web.HTTPFound(_next_page(request.query.get("next")))
    return login_form(request)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not csrf_ok(expected, form.get(CSRF_FIELD)):
        raise CsrfRefused("The sign-in form's CSRF token is missing or invalid. "
                          "Reload the sign-in page and try again.", field=CSRF_FIELD)
    key = form.get("key")
    credential = key.strip() if isinstance(key, str) else ""
    # Unauthorized propagates: the API's failed-authentication limit counts it (per
    # client address), and console/app.py answers with this form again.
    scope = await request.app[RESOLVER](request, credential)
    hours = request.app[CONFIG].console.session_hours
    expires_at = request.app[CLOCK].now() + timedelta(hours=hours)
    session_id = await open_session(services(request.app),
                                    scope.caller(address=request_address(request)), expires_at)
    session = new_session(credential, session_id, expires_at)
    response = web.HTTPFound(_next_page(form.get("next")))
    set_cookie(request, response, SESSION_COOKIE, seal(request.app[SECRET_BOX], session),
               int(hours * 3600))
    clear_cookie(response, LOGIN_COOKIE)
    raise response


async def portal_page(request: web.Request) -> web.StreamResponse:
    """Where a portal link lands (`/portal/#token=...`, redirected here with its
    fragment): the sign-in form, which console.js fills with the token from the
    fragment and sends. The token never reaches a server log: a fragment is not sent."""
    return login_form(request, portal=True)


async def to_portal(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/portal")  # browsers keep the #token fragment


# Counted by the failed-authentication limit (api/authlimit.py), like the API's routes.
login.authenticates = True  # type: ignore[attr-defined]


async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session on the server (every process refuses its cookie from now on),
    then clears the cookie. A GET is enough: signing someone out is harmless, and the
    cookie is SameSite=Strict so another site cannot even do that."""
    found = await signed_in(request)  # None: not open any more, nothing to end
    if found is not None:
        session, scope = found
        await end_session(services(request.app),
                          scope.caller(session.id, request_address(request)), session.id)
    response = web.HTTPFound("/console/login")
    clear_cookie(response, SESSION_COOKIE)
    raise response
