"""API keys (operator scope): create a tenant's key (the tenant created if new) or
an operator key, list keys, revoke one. The local CLI's `keys` commands call these;
the API's `POST /v1/tenants/{t}/keys` is operations/tenants.create_tenant_key."""

from __future__ import annotations

from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.store import tenants as store
from dispatcher.store.tenants import ApiKeyInfo


async def create_key(svc: Services, caller: Caller, tenant: str | None, name: str) -> str:
    """A new key, returned the only time it is visible: `tenant`'s, or an operator's
    when `tenant` is None."""
    caller.must_operate("manage API keys")
    if tenant is not None:
        tenant = store.validate_tenant_name(tenant)
    async with svc.pool.acquire() as conn:
        if tenant is None:
            return await store.create_operator_key(conn, name)
        return await store.create_api_key(conn, tenant, name)


async def list_keys(svc: Services, caller: Caller, tenant: str | None) -> list[ApiKeyInfo]:
    """Every key (prefixes only: keys themselves are never stored), or `tenant`'s."""
    caller.must_operate("manage API keys")
    async with svc.pool.acquire() as conn:
        return await store.list_api_keys(conn, tenant)


async def revoke_key(svc: Services, caller: Caller, ref: str) -> ApiKeyInfo:
    """Revoke the key `ref` names: its id, its shown prefix, or the key itself."""
    caller.must_operate("manage API keys")
    async with svc.pool.acquire() as conn:
        return await store.revoke_api_key(conn, ref)
