"""The gauges that describe the database (deliveries by status, queue depth, oldest
due age, endpoints by state), read with one time-limited query at most every few
seconds, for `/metrics` and the console's operator summary alike."""

from __future__ import annotations

import asyncpg
import structlog
from aiohttp import web

from dispatcher.clock import monotonic
from dispatcher.metrics import set_gauges
from dispatcher.store.lookup import Gauges, read_gauges
from dispatcher.web.context import CLOCK, COMPONENTS, POOL

# The per-status count reads the whole deliveries table: not on every scrape.
REFRESH_SECONDS = 5.0
_LAST_REFRESH = "metrics.last_gauge_refresh"
_GAUGES = "metrics.gauges"


async def refresh_gauges(app: web.Application) -> Gauges | None:
    """The database gauges, read again when the last read is older than
    REFRESH_SECONDS; the last good read (None if there was none)."""
    components = app[COMPONENTS]
    last = components.get(_LAST_REFRESH)
    if last is not None and monotonic() - last < REFRESH_SECONDS:
        return components.get(_GAUGES)
    components[_LAST_REFRESH] = monotonic()
    try:
        async with app[POOL].acquire() as conn:
            gauges = await read_gauges(conn, app[CLOCK].now())
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        structlog.get_logger(__name__).warning("metrics.refresh_failed", error=str(exc))
        return components.get(_GAUGES)
    set_gauges(gauges)
    components[_GAUGES] = gauges
    return gauges
