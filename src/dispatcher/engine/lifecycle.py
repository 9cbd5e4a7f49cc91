"""Runs the delivery worker for the life of the application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dispatcher import metrics
from dispatcher.api.context import CLOCK, COMPONENTS, CONFIG, DSN, HTTP, POOL, READINESS
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
    stall = config.delivery.writer_stall_seconds

    def writer_stalled() -> str | None:
        count, age = worker.writer_backlog()
        if age <= stall:
            return None
        return f"delivery outcomes unwritten: {count} waiting for {age:.0f} s"

    app[READINESS].add(writer_stalled)
    metrics.OUTCOMES_UNWRITTEN.set_function(lambda: worker.writer_backlog()[0])
    metrics.OUTCOMES_UNWRITTEN_AGE.set_function(lambda: worker.writer_backlog()[1])
    await worker.start()
    yield
    await worker.stop(config.server.grace_period_seconds)
