"""The tenants API (operator keys only): create, list, show, update and delete
tenants, give a tenant a key, read its statistics, and make portal links, the
signed expiring tokens a customer uses in the web console and the API. A tenant
key makes portal links for its own tenant with `POST /v1/portal-links`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.api.auth import portal_signing_key
from dispatcher.api.context import CLOCK, CONFIG, KEY_CACHE, POOL, SCOPE, TENANT, TENANT_CACHE
from dispatcher.api.pagination import (
    as_name,
    cursor_part,
    decode_cursor,
    encode_cursor,
    page,
    page_limit,
)
from dispatcher.api.portal_tokens import sign_portal_token
from dispatcher.api.request import Fields, query_str, read_json
from dispatcher.api.spec import CURSOR, LIMIT, Param, Route
from dispatcher.clock import to_ms
from dispatcher.errors import Forbidden, NotFound, ValidationError
from dispatcher.model import DeliveryStatus, EndpointState
from dispatcher.store import tenants as store
from dispatcher.store.health import window_start
from dispatcher.store.pool import Conn

NAME_RE = re.compile(r"[a-z0-9._-]{1,100}")
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 30 * 86400
DEFAULT_EXPIRES_IN = 3600
PORTAL_PATH = "/portal/#token="


def tenant_json(t: store.Tenant) -> dict[str, Any]:
    return {"id": str(t.id), "name": t.name, "metadata": t.metadata,
            "created_timestamp": to_ms(t.created_at), "updated_timestamp": to_ms(t.updated_at)}


def _name(f: Fields) -> str:
    name = f.string("name", min_len=1, max_len=100)
    if not NAME_RE.fullmatch(name):
        f.fail("name", "must be 1 to 100 characters of a-z, 0-9, '.', '_' and '-'")
    try:
        UUID(name)
    except ValueError:
        return name
    f.fail("name", "must not look like a tenant id (a UUID): tenants are named by either")


async def _path_tenant(request: web.Request) -> store.Tenant:
    ref = request.match_info["tenant"]
    found = None
    if len(ref) <= 100:
        async with request.app[POOL].acquire() as conn:
            found = await store.find_tenant(conn, ref)
    if found is None:
        raise NotFound(f"tenant {ref[:100]!r} not found", field="tenant")
    return found


def _forget_tenants(request: web.Request) -> None:
    """A renamed or deleted tenant: this process stops using what it remembered at
    once (others within the key cache's lifetime)."""
    request.app[TENANT_CACHE].clear()
    request.app[KEY_CACHE].clear()


async def create_tenant(request: web.Request) -> web.Response:
    f = Fields(await read_json(request))
    f.reject_unknown(("name", "metadata"), ("id", "created_timestamp", "updated_timestamp"))
    name = _name(f)
    metadata = f.obj("metadata", default={})
    async with request.app[POOL].acquire() as conn:
        tenant = await store.create_tenant(conn, name, metadata, request.app[CLOCK].now())
    return web.json_response(tenant_json(tenant), status=201)


async def list_tenants(request: web.Request) -> web.Response:
    limit = page_limit(request)
    prefix = query_str(request, "name_prefix")
    if prefix is not None and len(prefix) > 100:
        raise ValidationError("name_prefix must be at most 100 characters", field="name_prefix")
    cursor = decode_cursor(request, "tenants")
    after = None if cursor is None else cursor_part(cursor, 0, as_name)
    async with request.app[POOL].acquire() as conn:
        found = await store.list_tenants(conn, name_prefix=prefix, after=after, limit=limit + 1)
    next_cursor = encode_cursor("tenants", [found[limit - 1].name]) if len(found) > limit else None
    return web.json_response(page([tenant_json(t) for t in found[:limit]], next_cursor))


async def get_tenant(request: web.Request) -> web.Response:
    return web.json_response(tenant_json(await _path_tenant(request)))


async def update_tenant(request: web.Request) -> web.Response:
    tenant = await _path_tenant(request)
    f = Fields(await read_json(request))
    f.reject_unknown(("name", "metadata"), ("id", "created_timestamp", "updated_timestamp"))
    changes: dict[str, Any] = {}
    if f.has("name"):
        changes["name"] = _name(f)
    if f.has("metadata"):
        changes["metadata"] = f.obj("metadata")
    if not changes:
        return web.json_response(tenant_json(tenant))
    async with request.app[POOL].acquire() as conn:
        updated = await store.update_tenant(conn, tenant.id, changes, request.app[CLOCK].now())
    if updated is None:
        raise NotFound(f"tenant {tenant.name!r} not found", field="tenant")
    _forget_tenants(request)
    return web.json_response(tenant_json(updated))


async def delete_tenant(request: web.Request) -> web.Response:
    tenant = await _path_tenant(request)
    force = query_str(request, "force") or "false"
    if force not in ("true", "false"):
        raise ValidationError("force must be true or false", field="force")
    async with request.app[POOL].acquire() as conn:
        deleted = await store.delete_tenant(conn, tenant.id, force=force == "true")
    if not deleted:
        raise NotFound(f"tenant {tenant.name!r} not found", field="tenant")
    _forget_tenants(request)
    return web.Response(status=204)


async def create_tenant_key(request: web.Request) -> web.Response:
    tenant = await _path_tenant(request)
    body = await read_json(request, required=False)
    f = Fields({} if body is None else body)
    f.reject_unknown(("name",))
    name = f.string("name", default="", max_len=100)
    async with request.app[POOL].acquire() as conn:
        key, key_id = await store.create_tenant_key(conn, tenant.id, name)
    return web.json_response(
        {"key": key, "id": str(key_id), "prefix": key[:store.SHOWN_PREFIX_LEN], "name": name,
         "tenant_id": str(tenant.id), "tenant": tenant.name}, status=201)


async def stats_json(request: web.Request, conn: Conn, tenant_id: UUID) -> dict[str, Any]:
    """A tenant's statistics as `GET /v1/tenants/{tenant}/stats` answers them."""
    window = request.app[CONFIG].health.window_seconds
    since = window_start(request.app[CLOCK].now(), window)
    stats = await store.tenant_stats(conn, tenant_id, since)
    return {
        "tenant_id": str(tenant_id),
        "endpoints": {s.value: stats.endpoints.get(s.value, 0) for s in EndpointState},
        "deliveries": {s.label: stats.deliveries.get(s.value, 0) for s in DeliveryStatus},
        "failures_in_window": stats.failures_in_window,
        "window_seconds": window,
    }


async def tenant_stats(request: web.Request) -> web.Response:
    tenant = await _path_tenant(request)
    async with request.app[POOL].acquire() as conn:
        return web.json_response(await stats_json(request, conn, tenant.id))


async def _portal_link(request: web.Request, tenant_id: UUID) -> web.Response:
    body = await read_json(request, required=False)
    f = Fields({} if body is None else body)
    f.reject_unknown(("expires_in", "read_only"))
    expires_in = f.integer("expires_in", default=DEFAULT_EXPIRES_IN, lo=MIN_EXPIRES_IN,
                           hi=MAX_EXPIRES_IN)
    read_only = f.data.get("read_only", False)
    if not isinstance(read_only, bool):
        f.fail("read_only", "must be true or false")
    expires_at = request.app[CLOCK].now() + timedelta(seconds=expires_in)
    token = sign_portal_token(portal_signing_key(request.app), tenant_id, expires_at, read_only)
    base = request.app[CONFIG].server.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return web.json_response({
        "url": f"{base}{PORTAL_PATH}{token}", "token": token, "tenant_id": str(tenant_id),
        "read_only": read_only, "expires_timestamp": to_ms(expires_at.replace(microsecond=0)),
    }, status=201)


async def create_tenant_portal_link(request: web.Request) -> web.Response:
    tenant = await _path_tenant(request)
    return await _portal_link(request, tenant.id)


async def create_portal_link(request: web.Request) -> web.Response:
    if request[SCOPE].kind == "portal":
        # A link must not outlive (or widen) the one it was made with.
        raise Forbidden("a portal token cannot make portal links", field="Authorization")
    return await _portal_link(request, request[TENANT])


TAG = "Tenants"
NAME_PREFIX = Param("name_prefix", {"type": "string", "maxLength": 100},
                    "Only tenants whose name starts with this.")
FORCE = Param("force", {"type": "string", "enum": ["true", "false"]},
              "true: delete the tenant even if it has endpoints, with everything of it.")

ROUTES = [
    Route("POST", "/v1/tenants", create_tenant, "createTenant", "Create a tenant", TAG,
          ok=201, response="Tenant", body="TenantCreate", errors=(409,), operator=True),
    Route("GET", "/v1/tenants", list_tenants, "listTenants", "List tenants by name", TAG,
          response="TenantPage", params=(LIMIT, CURSOR, NAME_PREFIX), operator=True),
    Route("GET", "/v1/tenants/{tenant}", get_tenant, "getTenant", "Show a tenant", TAG,
          response="Tenant", operator=True),
    Route("PATCH", "/v1/tenants/{tenant}", update_tenant, "updateTenant",
          "Rename a tenant or replace its metadata", TAG, response="Tenant",
          body="TenantUpdate", errors=(409,), operator=True),
    Route("DELETE", "/v1/tenants/{tenant}", delete_tenant, "deleteTenant", "Delete a tenant",
          TAG, ok=204, params=(FORCE,), errors=(409,), operator=True,
          description="Refused (409) while the tenant has endpoints, unless `force=true`, "
                      "which deletes its keys, endpoints, events and deliveries with it."),
    Route("POST", "/v1/tenants/{tenant}/keys", create_tenant_key, "createTenantKey",
          "Create a tenant key", TAG, ok=201, response="TenantKey", body="TenantKeyCreate",
          body_required=False, operator=True,
          description="The key acts only for this tenant; it is shown only here."),
    Route("GET", "/v1/tenants/{tenant}/stats", tenant_stats, "getTenantStats",
          "A tenant's endpoints by state, deliveries by status and recent failures", TAG,
          response="TenantStats", operator=True),
    Route("POST", "/v1/tenants/{tenant}/portal-links", create_tenant_portal_link,
          "createTenantPortalLink", "Make a portal link for a tenant", TAG, ok=201,
          response="PortalLink", body="PortalLinkCreate", body_required=False, operator=True,
          description="A signed token that expires, granting exactly this tenant's scope in "
                      "the web console (the `url`) and in this API as a Bearer token."),
    Route("POST", "/v1/portal-links", create_portal_link, "createPortalLink",
          "Make a portal link for your tenant", TAG, ok=201, response="PortalLink",
          body="PortalLinkCreate", body_required=False,
          description="As `POST /v1/tenants/{tenant}/portal-links`, for the key's own tenant "
                      "(or an operator's `Dispatcher-Tenant`). A portal token gets 403."),
]
