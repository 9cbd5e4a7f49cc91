"""The audit log page: who changed what, newest first, with the API's filters and
cursor paging. The same operation as `GET /v1/audit-log` (operations/audit.py): a
tenant's session sees its tenant's entries, an operator's every entry (or one
tenant's)."""

from __future__ import annotations

from aiohttp import web

from dispatcher.console.endpoints import form_time
from dispatcher.console.render import render
from dispatcher.errors import NotFound, ValidationError
from dispatcher.operations import audit as ops
from dispatcher.operations.fields import ms_to_datetime
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import page_query
from dispatcher.web.views import audit_entry_json

FILTERS = ("tenant", "actor", "action", "target_id", "since", "until")


async def audit_page(request: web.Request) -> web.StreamResponse:
    query = {k: request.query[k].strip() for k in FILTERS if request.query.get(k, "").strip()}
    rows, next_cursor, status, message = [], None, 200, ""
    try:
        since, until = form_time(query, "since"), form_time(query, "until")
        filters = ops.Filters(
            tenant_id=await ops.tenant_filter(services(request.app), request[CALLER],
                                              query.get("tenant")),
            actor=query.get("actor"),
            action=query.get("action"), target_id=query.get("target_id"),
            since=None if since is None else ms_to_datetime(since, "since"),
            until=None if until is None else ms_to_datetime(until, "until"))
        found = await ops.list_audit_log(services(request.app), request[CALLER],
                                         page_query(request), filters)
        rows, next_cursor = [audit_entry_json(e) for e in found.items], found.next_cursor
    except (ValidationError, NotFound) as exc:
        status, message = exc.status, exc.message
    return render(request, "audit.html", status=status, rows=rows, next_cursor=next_cursor,
                  filters=query, message=message)
