"""Who a console request acts for. Sign-in turns a credential into a scope and opens
a session on the server; every page request checks that session is still open (one
lookup by id, never cached: a session ended in one process is refused by the next
request to any other) and turns its credential into a scope again, so what a session
may see and do is always what its credential may, now.

A scope names one tenant. Credentials (API keys and portal tokens) resolve through
the same check as the API's (web/credentials.py, with its cache); an operator key
acts on the tenant `default` here, as in the API without `Dispatcher-Tenant`. Pages
call the operations with the session's Caller (request[CALLER])."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import quote
from uuid import UUID

from aiohttp import web

from dispatcher.console.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Session,
    clear_cookie,
    csrf_ok,
    unseal,
)
from dispatcher.errors import DispatcherError, Forbidden, NotFound, Unauthorized
from dispatcher.model import DEFAULT_TENANT
from dispatcher.operations import scope as ops_scope
from dispatcher.operations.sessions import session_is_open
from dispatcher.operations.tenants import find_tenant
from dispatcher.web.context import CALLER, CLOCK, SECRET_BOX, TENANT, services
from dispatcher.web.credentials import resolve_credential, tenant_by_ref
from dispatcher.web.peers import request_address


@dataclass(frozen=True)
class Scope:
    kind: Literal["operator", "tenant", "portal"]
    tenant_id: UUID
    read_only: bool = False
    tenant: str | None = None  # the tenant's name (an operator's: the one it acts for)
    gone: bool = False  # an operator session whose tenant was deleted since
    key_id: UUID | None = None  # the API key signed in with (None for a portal token)

    def caller(self, session_id: UUID | None = None,
               address: str | None = None) -> ops_scope.Caller:
        """The operations' view of this session (its id and the client's address go
        into the audit log)."""
        operator = self.kind == "operator"
        scope = ops_scope.Scope(self.kind, None if operator else self.tenant_id, self.tenant,
                                self.read_only, self.key_id)
        return ops_scope.Caller(scope, self.tenant_id, via="console", address=address,
                                session_id=session_id)


Resolver = Callable[[web.Request, str], Awaitable[Scope]]


async def resolve_api_key(request: web.Request, credential: str) -> Scope:
    """A credential's scope, checked exactly as the API checks `Authorization: Bearer`."""
    scope = await resolve_credential(request.app, credential, field="key")
    tenant_id = scope.tenant_id
    if tenant_id is None:  # an operator key
        tenant_id = await tenant_by_ref(request.app, DEFAULT_TENANT, "key")
    return Scope(scope.kind, tenant_id, scope.read_only, tenant=scope.tenant,
                 key_id=scope.key_id)


RESOLVER: web.AppKey[Resolver] = web.AppKey("console_scope_resolver")
SCOPE = web.RequestKey("console_scope", Scope)
SESSION = web.RequestKey("console_session", Session)
FORM = web.RequestKey("console_form", dict[str, str])

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CsrfRefused(DispatcherError):
    status = 403
    code = "csrf_refused"


class ReadOnly(DispatcherError):
    status = 403
    code = "read_only"


def login_redirect(request: web.Request) -> web.HTTPFound:
    target = request.path_qs if request.method == "GET" else "/console/endpoints"
    return web.HTTPFound("/console/login?next=" + quote(target, safe="/"))


async def signed_in(request: web.Request) -> tuple[Session, Scope] | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = unseal(request.app[SECRET_BOX], cookie, request.app[CLOCK].now())
    if session is None or not await session_is_open(services(request.app), session.id):
        return None
    try:
        scope = await request.app[RESOLVER](request, session.credential)
    except Unauthorized:
        return None
    if scope.kind == "operator":
        scope = await _acting(request, scope, session.acting)
    return session, scope


async def _acting(request: web.Request, scope: Scope, acting: str | None) -> Scope:
    """An operator session acts for the tenant it chose on the tenants page (as the
    API's `Dispatcher-Tenant`), or `default`. A chosen tenant deleted since is marked
    `gone`: its pages refuse (never another tenant's), the tenants page still opens."""
    try:
        found = await find_tenant(services(request.app), scope.caller(),
                                  acting or DEFAULT_TENANT)
    except NotFound:
        return scope if acting is None else replace(scope, gone=True)
    return replace(scope, tenant_id=found.id, tenant=found.name)


def signed_in_page(*, write: bool = False, operator: bool = False) -> Callable[[Page], Page]:
    """Wraps a console page: no session (or a credential no longer valid) redirects
    to the sign-in page; a POST must carry the session's CSRF token; a write is
    refused for a read-only scope, an operator page for any other than an operator's.
    Errors become pages in console/app.py."""

    def decorate(handler: Page) -> Page:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            found = await signed_in(request)
            if found is None:
                redirect = login_redirect(request)
                clear_cookie(redirect, SESSION_COOKIE)
                raise redirect
            session, scope = found
            request[SESSION], request[SCOPE], request[TENANT] = session, scope, scope.tenant_id
            request[CALLER] = scope.caller(session.id, request_address(request))
            if operator and scope.kind != "operator":
                raise Forbidden("Only an operator key may open this page.")
            if scope.gone and not operator:
                raise NotFound("The tenant this session acted for no longer exists. Choose "
                               "another on the tenants page.", field="tenant")
            if request.method == "POST":
                form = await request.post()
                request[FORM] = {k: v for k, v in form.items() if isinstance(v, str)}
                if not csrf_ok(session.csrf, form.get(CSRF_FIELD)):
                    raise CsrfRefused("The form's CSRF token is missing or invalid. "
                                      "Reload the page and try again.", field=CSRF_FIELD)
                if write and scope.read_only:
                    raise ReadOnly("This session is read-only.")
            return await handler(request)

        return wrapper

    return decorate
