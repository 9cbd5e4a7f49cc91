"""A proxy on 127.0.0.1 that drops the connection instead of answering the first
request, after its target has handled it: what a client sees when the network
fails between the daemon's answer and the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.support.daemon import free_port


@asynccontextmanager
async def dropping_proxy(target: str, seen: list[CIMultiDict[str]]) -> AsyncIterator[str]:
    """Forwards every request to `target` and appends its headers to `seen`; yields
    the proxy's base URL."""

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(CIMultiDict(request.headers))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with aiohttp.ClientSession() as s, s.request(
                request.method, target + request.path_qs, data=body, headers=headers) as resp:
            answer = await resp.read()
            if len(seen) == 1:
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError
            return web.Response(status=resp.status, body=answer,
                                content_type=resp.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
