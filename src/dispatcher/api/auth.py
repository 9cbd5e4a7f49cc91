"""API-key authentication: `Authorization: Bearer <key>` names exactly one tenant,
and every handler sees only that tenant's objects.

A successful check is remembered in the process for a couple of seconds
(api/keycache.py), keyed by the key's hash: that saves a database round trip (and
a write of `last_used_at`) on nearly every request of a busy client. The price:
a revoked key keeps working for at most that long in a daemon that has just seen it."""

from __future__ import annotations

import functools
from uuid import UUID

from aiohttp import web

from dispatcher.api.context import KEY_CACHE, POOL, TENANT
from dispatcher.api.spec import Handler
from dispatcher.errors import Unauthorized
from dispatcher.store.tenants import authenticate, hash_key

MAX_KEY_LENGTH = 200


async def authenticate_request(request: web.Request) -> UUID:
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>",
                           field="Authorization")
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("expected Authorization: Bearer <key>", field="Authorization")
    return await authenticate_key(request.app, key, field="Authorization")


async def authenticate_key(app: web.Application, key: str, *, field: str) -> UUID:
    """The tenant of an unrevoked API key (Unauthorized naming `field` otherwise)."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Unauthorized("invalid or revoked API key", field=field)
    cache = app[KEY_CACHE]
    key_hash = hash_key(key)
    tenant_id = cache.get(key_hash)
    if tenant_id is not None:
        return tenant_id
    async with app[POOL].acquire() as conn:
        tenant_id = await authenticate(conn, key)
    if tenant_id is None:
        raise Unauthorized("invalid or revoked API key", field=field)
    cache.put(key_hash, tenant_id)
    return tenant_id


def authenticated(handler: Handler) -> Handler:
    """Authenticate first (401 before anything else), then run `handler` with the
    tenant in request[TENANT]."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        request[TENANT] = await authenticate_request(request)
        return await handler(request)

    wrapper.authenticates = True  # type: ignore[attr-defined]  # see api/authlimit.py
    return wrapper
