"""`GET /metrics`: the process's Prometheus registry in the text format. The gauges
that describe the database (deliveries by status, queue depth, oldest due age,
endpoints by state) are refreshed here with one time-limited query, at most every
few seconds however often Prometheus scrapes."""

from __future__ import annotations

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dispatcher.api.context import COMPONENTS, POOL
from dispatcher.api.spec import Route
from dispatcher.clock import monotonic
from dispatcher.metrics import (
    DELIVERIES_BY_STATUS,
    ENDPOINTS_BY_STATE,
    OLDEST_DUE_SECONDS,
    QUEUE_DEPTH,
    REGISTRY,
)
from dispatcher.model import EndpointState
from dispatcher.store.lookup import read_gauges

REFRESH_SECONDS = 1.0
_LAST_REFRESH = "metrics.last_gauge_refresh"


async def refresh_gauges(app: web.Application) -> None:
    components = app[COMPONENTS]
    last = components.get(_LAST_REFRESH)
    if last is not None and monotonic() - last < REFRESH_SECONDS:
        return
    components[_LAST_REFRESH] = monotonic()
    try:
        async with app[POOL].acquire() as conn:
            gauges = await read_gauges(conn)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        structlog.get_logger(__name__).warning("metrics.refresh_failed", error=str(exc))
        return
    for status, n in gauges.deliveries_by_status.items():
        DELIVERIES_BY_STATUS.labels(status=status.label).set(n)
    QUEUE_DEPTH.set(gauges.queue_depth)
    OLDEST_DUE_SECONDS.set(gauges.oldest_due_seconds)
    for state in EndpointState:
        ENDPOINTS_BY_STATE.labels(state=state.value).set(gauges.endpoints_by_state.get(state, 0))


async def metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app)
    return web.Response(body=generate_latest(REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES = [
    Route("GET", "/metrics", metrics, "getMetrics", "Prometheus metrics", "Operations",
          auth=False, response="Metrics", content_type="text/plain",
          description="Deliveries by status, attempt duration histogram, queue depth, age of "
                      "the oldest due delivery, endpoints by state."),
]
