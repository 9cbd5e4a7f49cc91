"""Waiting for a callback's decision without holding a pooled connection: one
LISTEN connection per process (opened on the first wait) hears every decision
NOTIFY, whichever process recorded it, and wakes the requests waiting on that id.
A request re-reads the callback when woken, and at least once a second in case a
notification was missed while the LISTEN connection was being re-opened."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web

from dispatcher.store.callbacks import NOTIFY_CHANNEL
from dispatcher.store.pool import Conn
from dispatcher.web.context import DSN

log = structlog.get_logger(__name__)

RECONNECT_SECONDS = 1.0


class CallbackWaiter:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._waiting: dict[UUID, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    def watch(self, callback_id: UUID) -> asyncio.Event:
        """An event set when `callback_id` is decided (register before reading it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen_loop(), name="dispatcher.callbacks")
        event = asyncio.Event()
        self._waiting.setdefault(callback_id, set()).add(event)
        return event

    def unwatch(self, callback_id: UUID, event: asyncio.Event) -> None:
        events = self._waiting.get(callback_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._waiting[callback_id]

    async def listening(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until the LISTEN is in place."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._listening.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notify(self, _conn: Conn, _pid: int, _channel: str, payload: object) -> None:
        try:
            callback_id = UUID(str(payload))
        except ValueError:
            return
        for event in self._waiting.get(callback_id, ()):
            event.set()

    async def _listen_loop(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("callbacks.listen_connect_failed", error=str(exc))
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            closed = asyncio.Event()
            conn.add_termination_listener(_setter(closed))
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self._listening.set()
                # Whatever was decided while not listening: every waiter reads again.
                for events in self._waiting.values():
                    for event in events:
                        event.set()
                await closed.wait()
                log.warning("callbacks.listen_connection_lost")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("callbacks.listen_failed", error=str(exc))
            finally:
                self._listening.clear()
                if not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(RECONNECT_SECONDS)


def _setter(event: asyncio.Event) -> Callable[..., None]:
    return lambda *_: event.set()


WAITER = web.AppKey("callback_waiter", CallbackWaiter)


async def waiter_ctx(app: web.Application) -> AsyncIterator[None]:
    app[WAITER] = CallbackWaiter(app[DSN])
    yield
    await app[WAITER].close()
