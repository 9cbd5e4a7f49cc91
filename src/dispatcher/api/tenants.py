"""The tenants routes (operator keys only) over operations/tenants.py: create, list,
show, update and delete tenants, give a tenant a key, read its statistics, and make
portal links. A tenant key makes portal links for its own tenant with
`POST /v1/portal-links`."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from dispatcher.api.spec import CURSOR, LIMIT, Param, Route
from dispatcher.errors import ValidationError
from dispatcher.operations import tenants as ops
from dispatcher.store.tenants import SHOWN_PREFIX_LEN
from dispatcher.web.context import CALLER, KEY_CACHE, TENANT, TENANT_CACHE, services
from dispatcher.web.request import page_query, query_str, read_json
from dispatcher.web.views import page_json, portal_link_json, stats_json, tenant_json


def _forget_tenants(request: web.Request) -> None:
    """A renamed or deleted tenant: this process stops using what it remembered at
    once (others within the key cache's lifetime)."""
    request.app[TENANT_CACHE].clear()
    request.app[KEY_CACHE].clear()


def _ref(request: web.Request) -> str:
    return request.match_info["tenant"]


async def create_tenant(request: web.Request) -> web.Response:
    tenant = await ops.create_tenant(services(request.app), request[CALLER],
                                     await read_json(request))
    return web.json_response(tenant_json(tenant), status=201)


async def list_tenants(request: web.Request) -> web.Response:
    found = await ops.list_tenants(services(request.app), request[CALLER], page_query(request),
                                   query_str(request, "name_prefix"))
    return web.json_response(page_json(found, tenant_json))


async def get_tenant(request: web.Request) -> web.Response:
    tenant = await ops.find_tenant(services(request.app), request[CALLER], _ref(request))
    return web.json_response(tenant_json(tenant))


async def update_tenant(request: web.Request) -> web.Response:
    svc, caller = services(request.app), request[CALLER]
    await ops.find_tenant(svc, caller, _ref(request))  # 404 before the body's 422
    updated = await ops.update_tenant(svc, caller, _ref(request), await read_json(request))
    _forget_tenants(request)
    return web.json_response(tenant_json(updated))


async def delete_tenant(request: web.Request) -> web.Response:
    svc, caller = services(request.app), request[CALLER]
    await ops.find_tenant(svc, caller, _ref(request))
    force = query_str(request, "force") or "false"
    if force not in ("true", "false"):
        raise ValidationError("force must be true or false", field="force")
    await ops.delete_tenant(svc, caller, _ref(request), force=force == "true")
    _forget_tenants(request)
    return web.Response(status=204)


async def create_tenant_key(request: web.Request) -> web.Response:
    svc, caller = services(request.app), request[CALLER]
    await ops.find_tenant(svc, caller, _ref(request))
    new = await ops.create_tenant_key(svc, caller, _ref(request),
                                      await read_json(request, required=False))
    return web.json_response(
        {"key": new.key, "id": str(new.id), "prefix": new.key[:SHOWN_PREFIX_LEN],
         "name": new.name, "tenant_id": str(new.tenant.id), "tenant": new.tenant.name},
        status=201)


async def tenant_stats(request: web.Request) -> web.Response:
    svc, caller = services(request.app), request[CALLER]
    tenant = await ops.find_tenant(svc, caller, _ref(request))
    return web.json_response(stats_json(await ops.tenant_stats(svc, caller, tenant.id)))


async def _portal_link(request: web.Request, tenant_id: UUID) -> web.Response:
    link = await ops.create_portal_link(services(request.app), request[CALLER], tenant_id,
                                        await read_json(request, required=False),
                                        f"{request.scheme}://{request.host}")
    return web.json_response(portal_link_json(link), status=201)


async def create_tenant_portal_link(request: web.Request) -> web.Response:
    tenant = await ops.find_tenant(services(request.app), request[CALLER], _ref(request))
    return await _portal_link(request, tenant.id)


async def create_portal_link(request: web.Request) -> web.Response:
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
