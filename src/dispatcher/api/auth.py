"""Authentication and tenant resolution, for every route in one place.

`Authorization: Bearer <credential>`: an API key (`dk_...`, operator or tenant) or a
portal token (`dpt_...`). `resolve_credential` turns it into a Scope; the web
console signs in through the same function. Then `authenticated` decides which
tenant the request acts on (request[TENANT]):

- a tenant key or portal token: its own tenant. A `Dispatcher-Tenant` header naming
  another tenant is refused (403); naming its own tenant, it is ignored.
- an operator key: the tenant named (by name or id) in `Dispatcher-Tenant`, else
  `default`; an unknown tenant is a 404.

A read-only portal token may only read (403 on any other method). Operator routes
(the tenants API) refuse every credential but an operator key (403).

A successful check is remembered in the process for a couple of seconds
(api/keycache.py), keyed by the credential's hash: that saves a database round trip
(and a write of `last_used_at`) on nearly every request of a busy client. The price:
a revoked key keeps working for at most that long in a daemon that has just seen it."""

from __future__ import annotations

import functools
from uuid import UUID

import asyncpg
from aiohttp import web

from dispatcher.api.context import (
    CLOCK,
    CONFIG,
    KEY_CACHE,
    POOL,
    PORTAL_KEY,
    SCOPE,
    TENANT,
    TENANT_CACHE,
)
from dispatcher.api.keycache import KeyCache
from dispatcher.api.portal_tokens import KEY_PURPOSE, is_portal_token, verify_portal_token
from dispatcher.api.scope import Scope
from dispatcher.api.spec import Handler
from dispatcher.errors import Forbidden, NotFound, Unauthorized
from dispatcher.secretbox import load_secret_box
from dispatcher.store.tenants import DEFAULT_TENANT, authenticate_key, find_tenant, hash_key

MAX_KEY_LENGTH = 200
TENANT_HEADER = "Dispatcher-Tenant"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _invalid_key(field: str = "Authorization") -> Unauthorized:
    return Unauthorized("invalid or revoked API key", field=field)


def portal_signing_key(app: web.Application) -> bytes:
    """The key portal tokens are signed with (derived from the master key)."""
    if PORTAL_KEY not in app:
        app[PORTAL_KEY] = load_secret_box(app[CONFIG]).derive_key(KEY_PURPOSE)
    return app[PORTAL_KEY]


def _key_cache(app: web.Application) -> KeyCache[bytes, Scope]:
    if KEY_CACHE not in app:
        app[KEY_CACHE] = KeyCache()
    return app[KEY_CACHE]


async def resolve_credential(app: web.Application, credential: str, *,
                             field: str = "Authorization") -> Scope:
    """The scope of an API key or a portal token: {kind: operator|tenant|portal,
    tenant_id, read_only}. Unauthorized (401, naming `field`) for anything unknown,
    revoked, expired or tampered with, or a portal token whose tenant is gone. The
    API (every route) and the web console's sign-in and pages check through this."""
    credential = credential.strip()
    if not credential or len(credential) > MAX_KEY_LENGTH or not credential.isprintable():
        raise _invalid_key(field)
    claims = None
    if is_portal_token(credential):  # checked on every use: it may expire any second
        try:
            claims = verify_portal_token(portal_signing_key(app), credential, app[CLOCK].now())
        except Unauthorized as exc:
            raise Unauthorized(exc.message, field=field) from None
    cache = _key_cache(app)
    key_hash = hash_key(credential)
    scope = cache.get(key_hash)
    if scope is not None:
        return scope
    async with app[POOL].acquire() as conn:
        if claims is not None:
            name = await conn.fetchval("SELECT name FROM tenants WHERE id = $1", claims.tenant_id)
            if name is None:
                raise Unauthorized("invalid or expired portal token", field=field)
            scope = Scope("portal", claims.tenant_id, name, claims.read_only)
        else:
            owner = await authenticate_key(conn, credential)
            if owner is None:
                raise _invalid_key(field)
            scope = Scope(owner.kind, owner.tenant_id, owner.tenant)
    cache.put(key_hash, scope)
    return scope


async def authenticate_request(request: web.Request) -> Scope:
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>",
                           field="Authorization")
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("expected Authorization: Bearer <key>", field="Authorization")
    return await resolve_credential(request.app, credential)


def names_own_tenant(scope: Scope, ref: str) -> bool:
    """Whether `ref` (a name or an id) names the scope's own tenant."""
    if ref == scope.tenant:
        return True
    try:
        return UUID(ref) == scope.tenant_id
    except ValueError:
        return False


async def tenant_by_ref(app: web.Application, ref: str, field: str) -> UUID:
    """The id of the tenant named `ref` (name or id); NotFound naming `field` if none."""
    cache = app[TENANT_CACHE]
    tenant_id = cache.get(ref)
    if tenant_id is not None:
        return tenant_id
    found = None
    if len(ref) <= 100 and ref.isprintable():
        async with app[POOL].acquire() as conn:
            found = await find_tenant(conn, ref)
    if found is None:
        raise NotFound(f"tenant {ref[:100]!r} not found", field=field)
    cache.put(ref, found.id)
    return found.id


async def acting_tenant(request: web.Request, scope: Scope) -> UUID:
    """The tenant a request on a tenant route acts on."""
    ref = request.headers.get(TENANT_HEADER, "").strip()
    if not scope.is_operator:
        assert scope.tenant_id is not None
        if ref and not names_own_tenant(scope, ref):
            raise Forbidden(f"this credential acts only for its own tenant; {TENANT_HEADER} "
                            "names another", field=TENANT_HEADER)
        return scope.tenant_id
    return await tenant_by_ref(request.app, ref or DEFAULT_TENANT, TENANT_HEADER)


async def _tenant_exists(request: web.Request) -> bool:
    async with request.app[POOL].acquire() as conn:
        found = await conn.fetchval("SELECT 1 FROM tenants WHERE id = $1", request[TENANT])
    return found is not None


def authenticated(handler: Handler, *, operator_only: bool = False) -> Handler:
    """Authenticate first (401 before anything else), check what the credential may
    do (403), then run `handler` with request[SCOPE] and, on a tenant route, the
    tenant it acts on in request[TENANT]."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        scope = await authenticate_request(request)
        request[SCOPE] = scope
        if scope.read_only and request.method not in READ_METHODS:
            raise Forbidden("this portal link is read-only", field="Authorization")
        if operator_only:
            if not scope.is_operator:
                raise Forbidden("only an operator key may do this", field="Authorization")
        else:
            request[TENANT] = await acting_tenant(request, scope)
        try:
            return await handler(request)
        except asyncpg.ForeignKeyViolationError:
            if operator_only or await _tenant_exists(request):
                raise
            # Deleted since this process remembered it (at most the caches' lifetime).
            if scope.is_operator:
                raise NotFound("tenant not found", field=TENANT_HEADER) from None
            raise Unauthorized("invalid or revoked API key", field="Authorization") from None

    wrapper.authenticates = True  # type: ignore[attr-defined]  # see api/authlimit.py
    return wrapper
