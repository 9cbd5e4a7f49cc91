"""API keys (operator scope): create a tenant's key (the tenant created if new) or
an operator key, list keys, revoke one (which ends its console sessions), end a
key's console sessions. The local CLI's `keys` commands call these; the API's
`POST /v1/tenants/{t}/keys` is operations/tenants.create_tenant_key and
`POST /v1/keys/{key_id}/sessions/end` calls end_sessions."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.operations import audit
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.store import console_sessions as sessions_store
from dispatcher.store import tenants as store
from dispatcher.store.pool import Conn
from dispatcher.store.tenants import ApiKeyInfo


async def create_key(svc: Services, caller: Caller, tenant: str | None, name: str) -> str:
    """A new key, returned the only time it is visible: `tenant`'s, or an operator's
    when `tenant` is None."""
    caller.must_operate("manage API keys")
    if tenant is not None:
        tenant = store.validate_tenant_name(tenant)
    async with svc.pool.acquire() as conn, conn.transaction():
        if tenant is None:
            key = await store.create_operator_key(conn, name)
        else:
            new_tenant = await store.find_tenant(conn, tenant) is None
            key = await store.create_api_key(conn, tenant, name)
        info = await store.find_api_key(conn, key)
        if tenant is not None and new_tenant and info.tenant_id is not None:
            await audit.record(svc, conn, caller, "tenant.create", "tenant", info.tenant_id,
                               audit.created({"name": tenant}), tenant_id=info.tenant_id)
        await _record(svc, conn, caller, "key.create", info, audit.created(
            {"kind": info.kind, "name": name, "prefix": info.prefix}))
    return key


async def _record(svc: Services, conn: Conn, caller: Caller, action: str, key: ApiKeyInfo,
                  changes: dict[str, object]) -> None:
    await audit.record(svc, conn, caller, action, "api_key", key.id, changes,
                       tenant_id=key.tenant_id)


async def list_keys(svc: Services, caller: Caller, tenant: str | None) -> list[ApiKeyInfo]:
    """Every key (prefixes only: keys themselves are never stored), or `tenant`'s."""
    caller.must_operate("manage API keys")
    async with svc.pool.acquire() as conn:
        return await store.list_api_keys(conn, tenant)


async def revoke_key(svc: Services, caller: Caller, ref: str) -> ApiKeyInfo:
    """Revoke the key `ref` names: its id, its shown prefix, or the key itself. Its
    console sessions end with it."""
    caller.must_operate("manage API keys")
    async with svc.pool.acquire() as conn, conn.transaction():
        before = await store.find_api_key(conn, ref)
        revoked = await store.revoke_api_key(conn, ref)
        if before.revoked_at is None:
            await _record(svc, conn, caller, "key.revoke", revoked,
                          {"revoked": {"old": False, "new": True}})
    return revoked


@dataclass(frozen=True)
class SessionsEnded:
    key: ApiKeyInfo
    ended: int  # how many open console sessions were ended


async def end_sessions(svc: Services, caller: Caller, ref: str, *, field: str = "key"
                       ) -> SessionsEnded:
    """End every open console session opened with the key `ref` names (its id, its
    shown prefix, or the key itself); the key itself keeps working. An unknown `ref`
    is NotFound naming `field`, one matching several keys Conflict."""
    caller.must_operate("manage API keys")
    async with svc.pool.acquire() as conn, conn.transaction():
        key = await store.find_api_key(conn, ref, field)
        ended = await sessions_store.end_key_sessions(conn, key.id, svc.clock.now())
        if ended:
            await _record(svc, conn, caller, "key.sessions_end", key, {"ended": ended})
    return SessionsEnded(key, ended)
