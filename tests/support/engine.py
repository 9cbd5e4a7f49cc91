"""An in-process delivery worker on a test database, driven by a FakeClock."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.clock import Clock, FakeClock
from dispatcher.config import Config
from dispatcher.engine.worker import DeliveryWorker
from dispatcher.retry import load_policies
from dispatcher.secretbox import SecretBox, load_secret_box
from dispatcher.store.events import NewEvent, PublishedEvent, publish_events
from dispatcher.store.pool import create_pool
from dispatcher.transport import Transport


class EngineHarness:
    def __init__(self, dsn: str, config: Config, clock: Clock | None = None) -> None:
        self.dsn = dsn
        self.config = config
        self.clock = clock or FakeClock()
        self.box: SecretBox = load_secret_box(config)
        self.pool: asyncpg.Pool
        self.transport: Transport
        self.worker: DeliveryWorker | None = None

    async def __aenter__(self) -> EngineHarness:
        self.pool = await create_pool(
            self.dsn, dataclasses.replace(self.config.database, pool_min_size=1)
        )
        self.transport = Transport.from_config(self.config)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.worker:
            await self.stop_worker()
        await self.transport.close()
        await self.pool.close()

    async def start_worker(self) -> DeliveryWorker:
        self.worker = DeliveryWorker(self.pool, self.dsn, self.transport, self.config,
                                     self.clock, self.box)
        await self.worker.start()
        return self.worker

    async def stop_worker(self, grace: float = 5.0) -> None:
        assert self.worker is not None
        await self.worker.stop(grace)
        self.worker = None

    async def publish(
        self, tenant_id: UUID, *events: tuple[str, Any] | NewEvent
    ) -> list[PublishedEvent]:
        new = [e if isinstance(e, NewEvent) else NewEvent(e[0], e[1]) for e in events]
        async with self.pool.acquire() as conn:
            return await publish_events(
                conn, tenant_id, new, policies=load_policies(self.config),
                now=self.clock.now(), idempotency_window=timedelta(days=1),
            )

    def advance(self, seconds: float) -> None:
        assert isinstance(self.clock, FakeClock)
        self.clock.advance(seconds)
        if self.worker:
            self.worker.wake()

    async def wait_attempts(self, count: int, timeout: float = 10.0) -> list[asyncpg.Record]:
        """Wait until `count` attempts are recorded in total."""
        async with asyncio.timeout(timeout):
            while True:
                rows = await self.pool.fetch("SELECT * FROM attempts ORDER BY id")
                if len(rows) >= count:
                    return rows
                await asyncio.sleep(0.02)

    async def wait_status(self, statuses: Sequence[int], count: int,
                          timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                n = await self.pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = ANY($1::smallint[])",
                    list(statuses))
                if n >= count:
                    return
                await asyncio.sleep(0.05)
