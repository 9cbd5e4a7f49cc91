"""Route declarations: each API route is declared once, with what the OpenAPI
document needs to describe it; api/routes.py registers them and api/openapi.py
documents them from the same list, so the two cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str
    location: str = "query"  # query or header
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    ok: int = 200
    response: str | None = None  # a schema in components; None for an empty answer
    body: str | None = None  # a schema in components
    body_required: bool = True
    params: tuple[Param, ...] = ()
    auth: bool = True
    description: str = ""
    errors: tuple[int, ...] = ()  # beyond the ones implied by auth, path, body, params
    content_type: str = "application/json"
    other_responses: tuple[tuple[int, str], ...] = ()  # (status, schema) beyond errors
    operator: bool = False  # only operator keys (403 for others); acts on no implied tenant
    path_params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path_params", tuple(re.findall(r"{(\w+)}", self.path)))

    def error_statuses(self) -> list[int]:
        # 400: any request the HTTP parser cannot read (a malformed header, say) is
        # answered with the JSON error body, whatever its route.
        statuses = set(self.errors) | {400}
        if self.auth:
            statuses |= {401, 403}
        if self.path_params:
            statuses.add(404)
        if self.body:
            statuses |= {400, 413, 415, 422}
        if self.params:
            statuses.add(422)
        return sorted(statuses)


LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
              "Page size.")
CURSOR = Param("cursor", {"type": "string"},
               "Opaque cursor from a previous page's `next_cursor`.")
SINCE = Param("since", {"type": "integer", "minimum": 0},
              "Only events created at or after this time (Unix milliseconds).")
UNTIL = Param("until", {"type": "integer", "minimum": 0},
              "Only events created before this time (Unix milliseconds).")
TYPE_FILTER = Param("type", {"type": "string"},
                    "Only these event types (comma-separated or repeated).")
TENANT_HEADER_PARAM = Param(
    "Dispatcher-Tenant", {"type": "string", "maxLength": 100},
    "With an operator key: the tenant (name or id) to act for; without it (or empty), `default`. "
    "A tenant key or portal token naming another tenant gets 403.", location="header",
)
