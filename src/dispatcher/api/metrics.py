"""`GET /metrics`: the process's Prometheus registry in the text format. The gauges
that describe the database (deliveries by status, queue depth, oldest due age,
endpoints by state) are refreshed first (web/gauges.py), at most every few seconds
however often Prometheus scrapes."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from dispatcher.api.spec import Route
from dispatcher.metrics import READY, render
from dispatcher.web.context import READINESS
from dispatcher.web.gauges import refresh_gauges


async def metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app)
    READY.set(0 if request.app[READINESS].problems() else 1)
    return web.Response(body=render(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES = [
    Route("GET", "/metrics", metrics, "getMetrics", "Prometheus metrics", "Operations",
          auth=False, response="Metrics", content_type="text/plain",
          description="Deliveries by status, attempt duration histogram, queue depth, age of "
                      "the oldest due delivery, endpoints by state."),
]
