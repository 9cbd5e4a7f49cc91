"""What a credential (an API key or a portal token) may act on: an operator acts for
any tenant; a tenant key and a portal token for exactly one tenant, a read-only
portal token without writing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

ScopeKind = Literal["operator", "tenant", "portal"]


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    tenant_id: UUID | None  # None for an operator
    tenant: str | None = None  # the tenant's name
    read_only: bool = False

    @property
    def is_operator(self) -> bool:
        return self.kind == "operator"
