"""Credentials, for both front ends: `resolve_credential` turns an API key (`dk_...`)
or a portal token (`dpt_...`) into a Scope, and `tenant_by_ref` a tenant's name or
id into its id. The API checks every request's `Authorization: Bearer` here, the
console its sign-in and every page of a session.

A successful check is remembered in the process for a couple of seconds
(web/keycache.py), keyed by the credential's hash: that saves a database round trip
(and a write of `last_used_at`) on nearly every request of a busy client. The price:
a revoked key keeps working for at most that long in a daemon that has just seen it."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from dispatcher.errors import NotFound, Unauthorized
from dispatcher.operations.scope import Scope
from dispatcher.portal_tokens import KEY_PURPOSE, is_portal_token, verify_portal_token
from dispatcher.secretbox import load_secret_box
from dispatcher.store.tenants import authenticate_key, find_tenant, hash_key
from dispatcher.web.context import CLOCK, CONFIG, KEY_CACHE, POOL, PORTAL_KEY, TENANT_CACHE
from dispatcher.web.keycache import KeyCache

MAX_KEY_LENGTH = 200


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
            scope = Scope(owner.kind, owner.tenant_id, owner.tenant, key_id=owner.key_id)
    cache.put(key_hash, scope)
    return scope


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
