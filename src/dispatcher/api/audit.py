"""The audit log route over operations/audit.py: read only (no route changes or
deletes an entry). A tenant's credentials see their tenant's entries; an operator
key sees all of them, narrowed by `tenant` (or `Dispatcher-Tenant`)."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from dispatcher.api.auth import TENANT_HEADER
from dispatcher.api.spec import CURSOR, LIMIT, Param, Route
from dispatcher.operations import audit as ops
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import header_text, page_query, query_ms, query_str
from dispatcher.web.views import audit_entry_json, page_json


async def _tenant_filter(request: web.Request) -> UUID | None:
    ref = query_str(request, "tenant") or (header_text(request, TENANT_HEADER) or "").strip()
    return await ops.tenant_filter(services(request.app), request[CALLER], ref)


async def list_audit_log(request: web.Request) -> web.Response:
    filters = ops.Filters(
        tenant_id=await _tenant_filter(request), actor=query_str(request, "actor"),
        action=query_str(request, "action"), target_type=query_str(request, "target_type"),
        target_id=query_str(request, "target_id"), since=query_ms(request, "since"),
        until=query_ms(request, "until"))
    found = await ops.list_audit_log(services(request.app), request[CALLER],
                                     page_query(request), filters)
    return web.json_response(page_json(found, audit_entry_json))


def _param(name: str, description: str) -> Param:
    return Param(name, {"type": "string", "maxLength": 200}, description)


TAG = "Audit"

ROUTES = [
    Route("GET", "/v1/audit-log", list_audit_log, "listAuditLog", "List audit log entries",
          TAG, response="AuditPage", params=(
              LIMIT, CURSOR,
              _param("tenant", "Operator keys: only this tenant's entries (name or id; a "
                               "deleted tenant's by id). Default: every entry."),
              _param("actor", "Only this actor: a key id, a portal token's tenant id, "
                              "cli:<user> or system:<job>."),
              _param("action", 'Only this action ("endpoint.update"), or a prefix ending '
                               'in "." ("endpoint.").'),
              _param("target_type", "Only targets of this type (endpoint, tenant, ...)."),
              _param("target_id", "Only this target."),
              Param("since", {"type": "integer", "minimum": 0},
                    "Only entries at or after this time (Unix milliseconds)."),
              Param("until", {"type": "integer", "minimum": 0},
                    "Only entries before this time (Unix milliseconds)."),
          ),
          description="Every change made through the API, the console, the CLI or by the "
                      "daemon itself, newest first. Entries are written in the same "
                      "transaction as the change; no route changes or deletes them. "
                      "`dispatcher audit verify` checks their hash chain."),
]
