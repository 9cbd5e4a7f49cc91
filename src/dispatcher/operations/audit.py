"""The audit log: who changed what, when and from where. Operations call `record`
last in the transaction of the change (a failed change writes nothing); reads are
`list_audit_log` (a tenant's credentials see their tenant's entries, an operator's
all) and `verify` (the hash chain, for `dispatcher audit verify`).

What an entry says of a change is built here, so no front end can put a secret in
one: endpoint fields as old and new values, delivery headers by name only, auth and
TLS by kind only, secrets as "rotated" or "revealed"."""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Mapping
from dataclasses import replace
from enum import Enum
from typing import Any
from uuid import UUID

from dispatcher.errors import NotFound, ValidationError
from dispatcher.operations.pages import Page, PageQuery, as_int, cursor_part, cut, decode_cursor
from dispatcher.operations.scope import Caller
from dispatcher.operations.services import Services
from dispatcher.store import audit as store
from dispatcher.store import tenants as tenant_store
from dispatcher.store.audit import Actor, Change, Entry, Filters, Verdict
from dispatcher.store.pool import Conn
from dispatcher.transport.validate import auth_type

__all__ = ["Actor", "Change", "Entry", "Filters", "Verdict", "actor_of", "diff", "record"]

# Fields whose values are never written to the log: headers by name, auth by kind,
# a client certificate only as being there.
REDACTED = ("auth", "tls", "headers")


def actor_of(caller: Caller) -> Actor:
    scope = caller.scope
    if caller.via == "cli" and scope.key_id is None:
        return Actor("local", f"cli:{_user()}", "cli")
    if scope.kind == "portal":
        return Actor("portal_token", str(scope.tenant_id), caller.via, None,
                     caller.session_id, caller.address)
    return Actor(f"{scope.kind}_key", str(scope.key_id), caller.via, scope.key_id,
                 caller.session_id, caller.address)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's numeric uid)
        return "unknown"


class Tenant(Enum):
    ACTING = "acting"  # the caller's acting tenant


async def record(svc: Services, conn: Conn, caller: Caller, action: str, target_type: str,
                 target_id: UUID | str, changes: Mapping[str, Any] | None = None, *,
                 tenant_id: UUID | Tenant | None = Tenant.ACTING) -> None:
    """One entry for a change `caller` made, in `conn`'s transaction (call it last).
    `tenant_id`: whose entry it is (None: the deployment's, seen by operators only)."""
    tenant = caller.tenant_id if isinstance(tenant_id, Tenant) else tenant_id
    await store.append(conn, svc.clock.now(), actor_of(caller), [
        Change(action, target_type, str(target_id), tenant, dict(changes or {}))])


def safe_value(field: str, value: Any) -> Any:
    """What the log may say of a field's value."""
    if field not in REDACTED or value is None:
        return value
    if field == "headers":
        return [pair[0] for pair in value]
    if field == "auth":
        return value.get("type") if isinstance(value, dict) else auth_type(value)
    return "client certificate"


def created(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: {"new": safe_value(k, v)} for k, v in values.items()}


def removed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: {"old": safe_value(k, v)} for k, v in values.items()}


def diff(old: Mapping[str, Any], new: Mapping[str, Any],
         fields: Iterable[str] | None = None) -> dict[str, Any]:
    """{"field": {"old": ..., "new": ...}} for each field whose value differs."""
    out: dict[str, Any] = {}
    for key in fields if fields is not None else new.keys():
        before, after = safe_value(key, old.get(key)), safe_value(key, new.get(key))
        if before != after or (key in REDACTED and old.get(key) != new.get(key)):
            out[key] = {"old": before, "new": after}
    return out


# -- reads ----------------------------------------------------------------------------

MAX_FILTER = 200


def _text(value: str | None, field: str) -> str | None:
    if value is not None and (len(value) > MAX_FILTER or "\x00" in value):
        raise ValidationError(f"{field} must be at most {MAX_FILTER} characters", field=field)
    return value or None


async def tenant_filter(svc: Services, caller: Caller, ref: str | None) -> UUID | None:
    """An operator's choice of tenant to narrow the log to: an id (a deleted
    tenant's too) or a name (404 naming `tenant` if unknown). None for any other
    caller, whose own tenant applies anyway."""
    if not ref or not caller.scope.is_operator:
        return None
    try:
        return UUID(ref)
    except ValueError:
        pass
    found = None
    if len(ref) <= MAX_FILTER:
        async with svc.pool.acquire() as conn:
            found = await tenant_store.find_tenant(conn, ref)
    if found is None:
        raise NotFound(f"tenant {ref[:100]!r} not found", field="tenant")
    return found.id


async def list_audit_log(svc: Services, caller: Caller, page: PageQuery,
                         filters: Filters) -> Page[Entry]:
    """Newest first. An operator sees every entry (`filters.tenant_id` narrows it);
    any other credential only its own tenant's, whatever the filter says."""
    if not caller.scope.is_operator:
        filters = replace(filters, tenant_id=caller.scope.tenant_id)
    for name in ("actor", "action", "target_type", "target_id"):
        _text(getattr(filters, name), name)
    if filters.since and filters.until and filters.since > filters.until:
        raise ValidationError("since must not be after until", field="since")
    cursor = decode_cursor(page.cursor, "audit")
    before = None if cursor is None else cursor_part(cursor, 0, as_int)
    async with svc.pool.acquire() as conn:
        found = await store.list_entries(conn, filters, before=before, limit=page.limit + 1)
    return cut(found, page.limit, "audit", lambda e: [e.seq])


async def verify(svc: Services, caller: Caller) -> Verdict:
    """The whole chain, recomputed (operator only)."""
    caller.must_operate("verify the audit log")
    async with svc.pool.acquire() as conn:
        return await store.verify_chain(conn)
