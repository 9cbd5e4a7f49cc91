"""Runs the delivery worker for the life of the application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dispatcher.api.context import CLOCK, COMPONENTS, CONFIG, DSN, HTTP, POOL
from dispatcher.engine import health
from dispatcher.engine.worker import DeliveryWorker
from dispatcher.secretbox import load_secret_box

WORKER = "delivery_worker"


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    worker = DeliveryWorker(
        app[POOL], app[DSN], app[HTTP], config, app[CLOCK], load_secret_box(config)
    )
    health.install(worker, config)
    app[COMPONENTS][WORKER] = worker
    await worker.start()
    yield
    await worker.stop(config.server.grace_period_seconds)
