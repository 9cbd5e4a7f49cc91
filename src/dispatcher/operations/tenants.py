"""Tenants (operator scope only): create, list, show, rename, delete; give a tenant
a key; read its statistics; and make portal links, the signed expiring tokens a
customer uses in the web console and the API. A tenant's own scope makes portal
links for itself (never a portal token: a link must not outlive the one it came
with)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from dispatcher.errors import Conflict, Forbidden, NotFound, ValidationError
from dispatcher.model import DEFAULT_TENANT
from dispatcher.operations import audit
from dispatcher.operations.fields import Fields
from dispatcher.operations.pages import Page, PageQuery, as_name, cursor_part, cut, decode_cursor
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.portal_tokens import KEY_PURPOSE, sign_portal_token
from dispatcher.store import tenants as store
from dispatcher.store.health import window_start
from dispatcher.store.lookup import attempts_since
from dispatcher.store.tenants import SHOWN_PREFIX_LEN, Tenant

NAME_RE = re.compile(r"[a-z0-9._-]{1,100}")
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 30 * 86400
DEFAULT_EXPIRES_IN = 3600
PORTAL_PATH = "/portal/#token="
TENANT_FIELDS = ("name", "metadata")
TENANT_READ_ONLY = ("id", "created_timestamp", "updated_timestamp")


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once
    id: UUID
    name: str
    tenant: Tenant


@dataclass(frozen=True)
class TenantStats:
    tenant_id: UUID
    counts: store.TenantStats
    window_seconds: int


@dataclass(frozen=True)
class PortalLink:
    url: str
    token: str
    tenant_id: UUID
    read_only: bool
    expires_at: datetime


def _name(f: Fields) -> str:
    name = f.string("name", min_len=1, max_len=100)
    if not NAME_RE.fullmatch(name):
        f.fail("name", "must be 1 to 100 characters of a-z, 0-9, '.', '_' and '-'")
    try:
        UUID(name)
    except ValueError:
        return name
    f.fail("name", "must not look like a tenant id (a UUID): tenants are named by either")


async def find_tenant(svc: Services, caller: Caller, ref: str) -> Tenant:
    """The tenant named `ref` (name or id); 404 naming `tenant` if none."""
    caller.must_operate()
    found = None
    if len(ref) <= 100:
        async with svc.pool.acquire() as conn:
            found = await store.find_tenant(conn, ref)
    if found is None:
        raise NotFound(f"tenant {ref[:100]!r} not found", field="tenant")
    return found


async def create_tenant(svc: Services, caller: Caller, body: Any) -> Tenant:
    caller.must_operate()
    f = Fields(body)
    f.reject_unknown(TENANT_FIELDS, TENANT_READ_ONLY)
    name = _name(f)
    metadata = f.obj("metadata", default={})
    async with svc.pool.acquire() as conn, conn.transaction():
        tenant = await store.create_tenant(conn, name, metadata, svc.clock.now())
        await audit.record(svc, conn, caller, "tenant.create", "tenant", tenant.id,
                           audit.created({"name": name, "metadata": metadata}),
                           tenant_id=tenant.id)
    return tenant


async def list_tenants(svc: Services, caller: Caller, page: PageQuery,
                       name_prefix: str | None = None) -> Page[Tenant]:
    caller.must_operate()
    if name_prefix is not None and len(name_prefix) > 100:
        raise ValidationError("name_prefix must be at most 100 characters", field="name_prefix")
    cursor = decode_cursor(page.cursor, "tenants")
    after = None if cursor is None else cursor_part(cursor, 0, as_name)
    async with svc.pool.acquire() as conn:
        found = await store.list_tenants(conn, name_prefix=name_prefix, after=after,
                                         limit=page.limit + 1)
    return cut(found, page.limit, "tenants", lambda t: [t.name])


_FALLBACK = (f"{DEFAULT_TENANT!r} is where operator keys act without Dispatcher-Tenant "
             "(and the console's operator sessions): ")


async def update_tenant(svc: Services, caller: Caller, ref: str, body: Any) -> Tenant:
    """Rename a tenant or replace its metadata (the fields given)."""
    tenant = await find_tenant(svc, caller, ref)
    f = Fields(body)
    f.reject_unknown(TENANT_FIELDS, TENANT_READ_ONLY)
    changes: dict[str, Any] = {}
    if f.has("name"):
        changes["name"] = _name(f)
        if tenant.name == DEFAULT_TENANT and changes["name"] != DEFAULT_TENANT:
            raise Conflict(_FALLBACK + "it cannot be renamed", field="name")
    if f.has("metadata"):
        changes["metadata"] = f.obj("metadata")
    if not changes:
        return tenant
    async with svc.pool.acquire() as conn, conn.transaction():
        updated = await store.update_tenant(conn, tenant.id, changes, svc.clock.now())
        if updated is None:
            raise NotFound(f"tenant {tenant.name!r} not found", field="tenant")
        changed = audit.diff({"name": tenant.name, "metadata": tenant.metadata},
                             {"name": updated.name, "metadata": updated.metadata})
        if changed:
            await audit.record(svc, conn, caller, "tenant.update", "tenant", tenant.id,
                               changed, tenant_id=tenant.id)
    return updated


async def delete_tenant(svc: Services, caller: Caller, ref: str, *, force: bool) -> None:
    """Refused (409) while the tenant has endpoints, unless `force`, and always for
    `default`, where operator keys act without Dispatcher-Tenant."""
    tenant = await find_tenant(svc, caller, ref)
    if tenant.name == DEFAULT_TENANT:
        raise Conflict(_FALLBACK + "it cannot be deleted (empty it instead)", field="tenant")
    async with svc.pool.acquire() as conn, conn.transaction():
        deleted = await store.delete_tenant(conn, tenant.id, force=force)
        if not deleted:
            raise NotFound(f"tenant {tenant.name!r} not found", field="tenant")
        await audit.record(svc, conn, caller, "tenant.delete", "tenant", tenant.id,
                           {**audit.removed({"name": tenant.name}), "force": force},
                           tenant_id=tenant.id)


async def create_tenant_key(svc: Services, caller: Caller, ref: str, body: Any) -> NewKey:
    tenant = await find_tenant(svc, caller, ref)
    f = Fields({} if body is None else body)
    f.reject_unknown(("name",))
    name = f.string("name", default="", max_len=100)
    async with svc.pool.acquire() as conn, conn.transaction():
        key, key_id = await store.create_tenant_key(conn, tenant.id, name)
        await audit.record(svc, conn, caller, "key.create", "api_key", key_id, audit.created(
            {"kind": "tenant", "name": name, "prefix": key[:SHOWN_PREFIX_LEN]}),
            tenant_id=tenant.id)
    return NewKey(key, key_id, name, tenant)


async def tenant_stats(svc: Services, caller: Caller, tenant_id: UUID) -> TenantStats:
    """A tenant's endpoints by state, deliveries by status and recent failures."""
    caller.must_operate()
    window = svc.config.health.window_seconds
    since = window_start(svc.clock.now(), window)
    async with svc.pool.acquire() as conn:
        stats = await store.tenant_stats(conn, tenant_id, since)
    return TenantStats(tenant_id, stats, window)


async def attempts_per_second(svc: Services, caller: Caller, seconds: int) -> float:
    """The deployment's delivery attempts per second over the last `seconds`."""
    caller.must_operate()
    async with svc.pool.acquire() as conn:
        recent = await attempts_since(conn, svc.clock.now() - timedelta(seconds=seconds))
    return recent / seconds


async def create_portal_link(svc: Services, caller: Caller, tenant_id: UUID, body: Any,
                             base_url: str) -> PortalLink:
    """A portal link for `tenant_id`: the operator's choice, or the caller's own."""
    if caller.scope.kind == "portal":
        # A link must not outlive (or widen) the one it was made with.
        raise Forbidden("a portal token cannot make portal links", field="Authorization")
    f = Fields({} if body is None else body)
    f.reject_unknown(("expires_in", "read_only"))
    expires_in = f.integer("expires_in", default=DEFAULT_EXPIRES_IN, lo=MIN_EXPIRES_IN,
                           hi=MAX_EXPIRES_IN)
    read_only = f.data.get("read_only", False)
    if not isinstance(read_only, bool):
        f.fail("read_only", "must be true or false")
    expires_at = svc.clock.now() + timedelta(seconds=expires_in)
    token = sign_portal_token(svc.secret_box.derive_key(KEY_PURPOSE), tenant_id, expires_at,
                              read_only)
    async with svc.pool.acquire() as conn, conn.transaction():
        # The token itself is never logged: who made a link, for whom, until when.
        await audit.record(svc, conn, caller, "portal_link.create", "tenant", tenant_id, {
            "read_only": read_only, "expires_at": expires_at.replace(microsecond=0).isoformat()},
            tenant_id=tenant_id)
    base = svc.config.server.public_url.rstrip("/") or base_url
    return PortalLink(f"{base}{PORTAL_PATH}{token}", token, tenant_id, read_only,
                      expires_at.replace(microsecond=0))

