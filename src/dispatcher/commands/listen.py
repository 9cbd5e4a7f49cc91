"""`dispatcher listen --forward-to URL` connected to a daemon: one websocket to
`/v1/listen` (no public URL, no inbound port) makes a temporary endpoint of the
tenant; each delivery that arrives over it is POSTed to URL with its exact body and
signature headers, and the receiver's answer goes back to be recorded as the
attempt. Ctrl-C says goodbye, and the daemon removes the endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import click

from dispatcher.client import TENANT_HEADER, UNREACHABLE, ApiError
from dispatcher.sandbox.forward import post, sandbox_session


def _http_error(exc: aiohttp.WSServerHandshakeError) -> ApiError:
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 422: "validation_error"}
    message = {401: "the API key was not accepted",
               404: "this daemon does not offer /v1/listen",
               422: "the daemon refused --events (unknown event type?)"}.get(
        exc.status, exc.message or f"HTTP {exc.status}")
    return ApiError(exc.status, codes.get(exc.status, "http_error"), message)


class DaemonListener:
    def __init__(self, url: str, api_key: str, tenant: str | None, forward_to: str,
                 events: list[str], timeout: float, echo: Callable[[str], None]) -> None:
        self.url = url.rstrip("/") + "/v1/listen"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        if tenant:
            self.headers[TENANT_HEADER] = tenant
        self.forward_to = forward_to
        self.events = events
        self.timeout = timeout
        self.echo = echo
        self.failures = 0
        self._forwards: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        params = {"forward_to": self.forward_to}
        if self.events:
            params["events"] = ",".join(self.events)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with aiohttp.ClientSession() as http, sandbox_session() as forward:
            try:
                ws = await http.ws_connect(self.url, params=params, headers=self.headers,
                                           heartbeat=10.0)
            except aiohttp.WSServerHandshakeError as exc:
                raise _http_error(exc) from exc
            except (aiohttp.ClientConnectionError, OSError) as exc:
                raise ApiError(0, UNREACHABLE, f"cannot reach {self.url}: {exc}") from exc
            async with ws:
                reader = asyncio.create_task(self._read(ws, forward))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not reader.done():
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.send_json({"type": "bye"})
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
                    self.echo("stopped; the temporary endpoint is removed")
                else:
                    reader.result()
                    self.echo("the daemon closed the connection")
                    raise ApiError(0, UNREACHABLE, "the connection to the daemon was lost")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse,
                    forward: aiohttp.ClientSession) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            kind = message.get("type")
            if kind == "ready":
                self.echo(f"Ready. Signing secret: {message['secret']}")
                self.echo(f"(temporary endpoint {message['endpoint_id']}, forwarding to "
                          f"{self.forward_to}; Ctrl-C to stop)")
            elif kind == "delivery":
                task = asyncio.create_task(self._forward(ws, forward, message))
                self._forwards.add(task)
                task.add_done_callback(self._forwards.discard)

    async def _forward(self, ws: aiohttp.ClientWebSocketResponse,
                       forward: aiohttp.ClientSession, message: dict[str, Any]) -> None:
        self.echo(f"--> {message.get('event_type')} [{message['event_id']}]")
        attempt = await post(forward, self.forward_to, message["body"].encode(),
                             message["headers"], timeout=self.timeout)
        if attempt.status is not None:
            self.echo(f"<-- {attempt.status} POST {self.forward_to} "
                      f"({attempt.duration_ms:.0f} ms)")
        else:
            self.echo(f"<-- failed POST {self.forward_to}: {attempt.error_detail}")
        if attempt.status is None or not 200 <= attempt.status < 300:
            self.failures += 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json({
                "type": "result", "delivery_id": message["delivery_id"],
                "status": attempt.status, "headers": attempt.response_headers or None,
                "body": attempt.response_body, "duration_ms": attempt.duration_ms,
                "failure_reason": None if attempt.failure is None else str(attempt.failure),
                "error": attempt.error_detail})


def listen_through_daemon(url: str, api_key: str, tenant: str | None, forward_to: str,
                          events: list[str], timeout: float) -> None:
    listener = DaemonListener(url, api_key, tenant, forward_to, events, timeout,
                              lambda line: click.echo(line))
    asyncio.run(listener.run())
