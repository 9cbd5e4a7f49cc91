"""`dispatcher listen --forward-to URL` connected to a daemon: one websocket to
`/v1/listen` (no public URL, no inbound port) makes a temporary endpoint of the
tenant; each delivery that arrives over it is POSTed to URL with its exact body and
signature headers, and the receiver's answer goes back to be recorded as the
attempt. Ctrl-C says goodbye, and the daemon removes the endpoint; a dropped
connection is resumed (same endpoint and secret) within the daemon's grace period."""

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
from dispatcher.sandbox.forward import post, sandbox_transport
from dispatcher.transport import Transport

RECONNECT_PAUSE_SECONDS = 0.5


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
        self.endpoint_id: str | None = None
        self.grace_seconds = 0.0
        self._forwards: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with aiohttp.ClientSession() as http, sandbox_transport() as forward:
            ws: aiohttp.ClientWebSocketResponse | None = await self._connect(http)
            while ws is not None:
                if await self._serve(ws, forward, stop):
                    self.echo("stopped; the temporary endpoint is removed")
                    return
                ws = await self._reconnect(http, stop)

    async def _connect(self, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        params = {"forward_to": self.forward_to}
        if self.endpoint_id is not None:
            params = {"endpoint_id": self.endpoint_id}
        elif self.events:
            params["events"] = ",".join(self.events)
        try:
            return await http.ws_connect(self.url, params=params, headers=self.headers,
                                         heartbeat=10.0)
        except aiohttp.WSServerHandshakeError as exc:
            raise _http_error(exc) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise ApiError(0, UNREACHABLE, f"cannot reach {self.url}: {exc}") from exc

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse,
                     forward: Transport, stop: asyncio.Event) -> bool:
        """Forward what arrives until Ctrl-C (True: said goodbye) or the connection
        drops (False)."""
        async with ws:
            reader = asyncio.create_task(self._read(ws, forward))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if reader.done():
                reader.result()
                return False
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "bye"})
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            return True

    async def _reconnect(self, http: aiohttp.ClientSession,
                         stop: asyncio.Event) -> aiohttp.ClientWebSocketResponse | None:
        """Within the daemon's grace period, take the same endpoint back; None when
        stopped meanwhile."""
        if self.endpoint_id is None:
            raise ApiError(0, UNREACHABLE, "the daemon closed the connection")
        self.echo("connection lost; reconnecting")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_seconds
        while True:
            try:
                return await self._connect(http)
            except ApiError as exc:
                if exc.status not in (0, 502, 503, 504) or loop.time() >= deadline:
                    raise ApiError(0, UNREACHABLE, "the connection to the daemon was lost "
                                   f"and could not be resumed: {exc.message}") from exc
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONNECT_PAUSE_SECONDS):
                    await stop.wait()
            if stop.is_set():
                self.echo("stopped; the daemon removes the endpoint after its grace period")
                return None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse,
                    forward: Transport) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            kind = message.get("type")
            if kind == "ready" and message.get("resumed"):
                self.echo("Reconnected.")
            elif kind == "ready":
                self.endpoint_id = message["endpoint_id"]
                self.grace_seconds = float(message.get("grace_seconds") or 0)
                self.echo(f"Ready. Signing secret: {message['secret']}")
                self.echo(f"(temporary endpoint {message['endpoint_id']}, forwarding to "
                          f"{self.forward_to}; Ctrl-C to stop)")
            elif kind == "delivery":
                task = asyncio.create_task(self._forward(ws, forward, message))
                self._forwards.add(task)
                task.add_done_callback(self._forwards.discard)

    async def _forward(self, ws: aiohttp.ClientWebSocketResponse,
                       forward: Transport, message: dict[str, Any]) -> None:
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
