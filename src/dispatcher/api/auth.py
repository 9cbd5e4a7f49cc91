"""Authentication and tenant resolution, for every route in one place.

`Authorization: Bearer <credential>`: an API key (`dk_...`, operator or tenant) or a
portal token (`dpt_...`), resolved to a Scope by web/credentials.py (the console
signs in through the same function). Then `authenticated` decides which tenant the
request acts on and hands the handler its Caller (request[CALLER]):

- a tenant key or portal token: its own tenant. A `Dispatcher-Tenant` header naming
  another tenant is refused (403); naming its own tenant, it is ignored.
- an operator key: the tenant named (by name or id) in `Dispatcher-Tenant`, else
  `default`; an unknown tenant is a 404.

What a read-only portal token may not do is refused by the operations themselves
(Caller.may_write). Operator routes (the tenants API) refuse every credential but
an operator key (403)."""

from __future__ import annotations

import functools
from uuid import UUID

import asyncpg
from aiohttp import web

from dispatcher.api.spec import Handler
from dispatcher.errors import Forbidden, NotFound, Unauthorized
from dispatcher.model import DEFAULT_TENANT
from dispatcher.operations.scope import Caller, Scope, tenant_vanished
from dispatcher.web.context import CALLER, SCOPE, TENANT
from dispatcher.web.credentials import resolve_credential, tenant_by_ref
from dispatcher.web.peers import request_address
from dispatcher.web.request import header_text

TENANT_HEADER = "Dispatcher-Tenant"


async def authenticate_request(request: web.Request) -> Scope:
    header = header_text(request, "Authorization")
    if not header:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>",
                           field="Authorization")
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("expected Authorization: Bearer <key>", field="Authorization")
    return await resolve_credential(request.app, credential)


async def acting_tenant(request: web.Request, scope: Scope) -> UUID:
    """The tenant a request on a tenant route acts on."""
    ref = (header_text(request, TENANT_HEADER) or "").strip()
    if not scope.is_operator:
        assert scope.tenant_id is not None
        if ref and not scope.names_own_tenant(ref):
            raise Forbidden(f"this credential acts only for its own tenant; {TENANT_HEADER} "
                            "names another", field=TENANT_HEADER)
        return scope.tenant_id
    return await tenant_by_ref(request.app, ref or DEFAULT_TENANT, TENANT_HEADER)


def authenticated(handler: Handler, *, operator_only: bool = False) -> Handler:
    """Authenticate first (401 before anything else), check what the credential may
    do (403), then run `handler` with request[SCOPE] and, on a tenant route, the
    tenant it acts on in request[TENANT]."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        scope = await authenticate_request(request)
        request[SCOPE] = scope
        if operator_only:
            if not scope.is_operator:
                raise Forbidden("only an operator key may do this", field="Authorization")
        else:
            request[TENANT] = await acting_tenant(request, scope)
        request[CALLER] = Caller(scope, request.get(TENANT), address=request_address(request))
        try:
            return await handler(request)
        except asyncpg.ForeignKeyViolationError as exc:
            if not tenant_vanished(exc):
                raise
            # Deleted while this call ran, or since this process remembered it (at most
            # the caches' lifetime). A tenant credential went with its tenant.
            if scope.is_operator:
                raise NotFound("tenant not found: it was deleted while this request ran",
                               field="tenant" if operator_only else TENANT_HEADER) from None
            raise Unauthorized("invalid or revoked API key", field="Authorization") from None

    wrapper.authenticates = True  # type: ignore[attr-defined]  # see api/authlimit.py
    return wrapper
