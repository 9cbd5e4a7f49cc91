"""What a credential (an API key or a portal token) may act on: an operator acts for
any tenant; a tenant key and a portal token for exactly one tenant, a read-only
portal token without writing. Every operation is called with a Caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import asyncpg

from dispatcher.errors import Forbidden

ScopeKind = Literal["operator", "tenant", "portal"]


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    tenant_id: UUID | None  # None for an operator
    tenant: str | None = None  # the tenant's name
    read_only: bool = False
    key_id: UUID | None = None  # the API key it came from (None for a portal token)

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"

    def names_own_tenant(self, ref: str) -> bool:
        """Whether `ref` (a name or an id) names this scope's own tenant."""
        if ref == self.tenant:
            return True
        try:
            return UUID(ref) == self.tenant_id
        except ValueError:
            return False


@dataclass(frozen=True)
class Caller:
    """Who asks for an operation: the credential's scope, the tenant it acts on (None
    for the operator-only operations on tenants and keys) and the front end it came
    through ("api", "console", "cli"), for the audit of what it changed."""

    scope: Scope
    tenant_id: UUID | None
    via: str = "api"
    address: str | None = None  # the client's address, as web/peers.py believes it
    session_id: UUID | None = None  # the console session asking

    @property
    def tenant(self) -> UUID:
        """The acting tenant of a tenant operation."""
        assert self.tenant_id is not None, "a tenant operation needs an acting tenant"
        return self.tenant_id

    def may_write(self) -> None:
        """Refuse a change to a read-only scope (403): decided by what an operation
        does, never by how it was asked for."""
        if self.scope.read_only:
            raise Forbidden("this portal link is read-only", field="Authorization")

    def must_operate(self, what: str = "do this") -> None:
        """Refuse an operator-only operation (tenants, keys) to any other scope (403)."""
        if not self.scope.is_operator:
            raise Forbidden(f"only an operator key may {what}", field="Authorization")


OPERATOR = Scope("operator", None)


def tenant_vanished(exc: BaseException) -> bool:
    """Whether a database error says the tenant a row belongs to was deleted while the
    operation ran (every table's foreign key to tenants is `<table>_tenant_id_fkey`):
    a force-delete racing the call, which is a 404 for the caller, never a 500."""
    return (isinstance(exc, asyncpg.ForeignKeyViolationError)
            and (exc.constraint_name or "").endswith("tenant_id_fkey"))
