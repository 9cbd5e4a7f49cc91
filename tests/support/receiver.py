"""A real HTTP receiver on 127.0.0.1 that records every request exactly and
answers from a script."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Received:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class Reply:
    status: int = 200
    body: bytes | str = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Script = Callable[[Received, int], Reply | Awaitable[Reply]]


class Receiver:
    """`script(req, n)` decides each reply; n counts requests from 0."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: Script = lambda req, n: Reply()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def reply_with(self, *replies: Reply, then: Reply | None = None) -> None:
        """Answer with `replies` in order, then `then` (default 200) forever."""
        final = then or Reply()

        def script(req: Received, n: int) -> Reply:
            return replies[n] if n < len(replies) else final

        self.script = script

    # What a subclass serving TLS sets (and records more of, in `_record`).
    ssl_context: ssl.SSLContext | None = None

    async def _record(self, request: web.Request) -> Received:
        return Received(request.method, request.path_qs, CIMultiDict(request.headers),
                        await request.read(), time.monotonic())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        req = await self._record(request)
        n = len(self.requests)
        self.requests.append(req)
        async with self._arrived:
            self._arrived.notify_all()
        reply = self.script(req, n)
        if not isinstance(reply, Reply):
            reply = await reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        body = reply.body.encode() if isinstance(reply.body, str) else reply.body
        return web.Response(status=reply.status, body=body, headers=reply.headers)

    async def start(self) -> None:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least `count` requests arrived; fail the test otherwise."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests
