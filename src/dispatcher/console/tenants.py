"""The operator view (operator sessions only): every tenant with its statistics and a
button that makes the session act for it (as `Dispatcher-Tenant` does in the API),
and a summary of the deployment's `/metrics` figures. Tenants and their statistics
come from the operations the API calls (operations/tenants.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from dispatcher.clock import to_ms
from dispatcher.console.access import SESSION
from dispatcher.console.render import render
from dispatcher.console.session import SESSION_COOKIE, seal, set_cookie
from dispatcher.errors import ValidationError
from dispatcher.model import DeliveryStatus
from dispatcher.operations import tenants as ops
from dispatcher.operations.pages import Page
from dispatcher.web.context import CALLER, CLOCK, CONFIG, SECRET_BOX, services
from dispatcher.web.credentials import tenant_by_ref
from dispatcher.web.gauges import refresh_gauges
from dispatcher.web.request import page_query, query_str
from dispatcher.web.views import stats_json, tenant_json

RATE_SECONDS = 10  # attempts per second: the attempts started in this many seconds


async def _metrics(request: web.Request) -> dict[str, Any]:
    """The figures `/metrics` reports for the whole deployment (read from the
    database by the same throttled query, so every process shows the same), and the
    attempt rate, which /metrics leaves to Prometheus' rate() of its counters."""
    gauges = await refresh_gauges(request.app)  # what /metrics read, at most 5 s ago
    rate = await ops.attempts_per_second(services(request.app), request[CALLER], RATE_SECONDS)
    shown: dict[str, Any] = {"attempts_per_second": rate,
                             "rate_seconds": RATE_SECONDS, "available": gauges is not None}
    if gauges is not None:
        shown.update({
            "queue_depth": gauges.queue_depth,
            "oldest_due_seconds": gauges.oldest_due_seconds,
            "deliveries": {s.label: gauges.deliveries_by_status.get(s, 0)
                           for s in DeliveryStatus},
            "endpoints": gauges.endpoints_by_state,
        })
    return shown


async def tenants_page(request: web.Request, *, status: int = 200,
                       message: str = "") -> web.StreamResponse:
    svc, caller = services(request.app), request[CALLER]
    try:
        listed = await ops.list_tenants(svc, caller, page_query(request),
                                        query_str(request, "name_prefix"))
    except ValidationError as exc:
        listed, status, message = Page([], None), exc.status, exc.message
    rows = [{**tenant_json(t), "stats": stats_json(await ops.tenant_stats(svc, caller, t.id))}
            for t in listed.items]
    prefix = request.query.get("name_prefix", "").strip()
    return render(request, "tenants.html", status=status, rows=rows,
                  next_cursor=listed.next_cursor, name_prefix=prefix,
                  metrics=await _metrics(request), message=message,
                  window_seconds=request.app[CONFIG].health.window_seconds)


async def act_for(request: web.Request) -> web.StreamResponse:
    """Make the session act for this tenant (name or id), then show its endpoints."""
    tenant_id = await tenant_by_ref(request.app, request.match_info["tenant"], "tenant")
    session = replace(request[SESSION], acting=str(tenant_id))
    left_ms = session.expires_ms - to_ms(request.app[CLOCK].now())
    response = web.HTTPFound("/console/endpoints")
    set_cookie(request, response, SESSION_COOKIE, seal(request.app[SECRET_BOX], session),
               max(0, left_ms // 1000))
    raise response
