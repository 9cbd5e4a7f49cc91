"""The HTTP server's connection guards, below the application: what aiohttp answers
before a request reaches any middleware.

- A request the HTTP parser rejects (a header past 8 KB, a bad request line) gets
  the API's JSON error body, and is logged as one line without its content (the
  header may hold an API key); aiohttp's default is plain text and a traceback.
- Once a request's first byte has arrived, its headers must be complete within
  `server.header_timeout_seconds`, or the connection is answered 408 and closed, so
  half-sent requests cannot hold connections open (slowloris). Idle keep-alive
  connections are aiohttp's `keepalive_timeout`, which also applies to a connection
  that never sends a byte.
- At most `server.max_connections` connections per worker process; one more is
  answered 503 and closed at once.

aiohttp builds one RequestHandler per connection from its Server; the runner below
makes a Server that builds ours."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

log = structlog.get_logger("dispatcher.http")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float  # seconds; 0 = no limit
    max_connections: int  # per process; 0 = no limit


def raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, for answers
    written straight to the transport (no request object to answer)."""
    body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


def _parser_message(status: int, exc: BaseException | None) -> tuple[str, str]:
    # Never echo the parser's message: it quotes the offending bytes of the request.
    if status >= 500:
        return "internal_error", "internal error"
    if isinstance(exc, LineTooLong):
        return "bad_request", "request line or header too long"
    return "bad_request", "malformed HTTP request"


class GuardedRequestHandler(RequestHandler):
    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True  # until the next request's headers are parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        cap = self._limits.max_connections
        if cap and manager is not None and len(manager.connections) > cap:
            log.warning("http.too_many_connections", limit=cap)
            self._refuse(raw_error(503, "Service Unavailable", "too_many_connections",
                                   f"more than {cap} open connections; retry shortly"))

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers and data and self._header_timer is None \
                and self._limits.header_timeout:
            self._header_timer = self._loop.call_later(self._limits.header_timeout,
                                                       self._headers_too_slow)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a request's headers are complete (or rejected)
            self._awaiting_headers = False
            self._cancel_header_timer()
            self._fail_body_in_progress()

    def _fail_body_in_progress(self) -> None:
        """A body that fails to decode (bad gzip/deflate) in a later TCP segment than its
        headers comes out of the parser as an error *message*, while the handler already
        running for that request waits for the rest of its body forever. Hand the error
        to that body instead, so the handler answers 400 at once."""
        current = self._current_request
        if current is None or current.content.is_eof():
            return
        for message, _ in self._messages:
            if isinstance(message, _ErrInfo):
                current.content.set_exception(
                    message.exc if isinstance(message.exc, HttpProcessingError)
                    else HttpProcessingError(code=400, message=message.message))
                return

    def log_access(self, request: BaseRequest, response: web.StreamResponse,
                   time: float | None) -> None:
        super().log_access(request, response, time)
        self._awaiting_headers = True  # a response went out; next come new headers

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs one line, checks state
        code, text = _parser_message(status, exc)
        resp = web.json_response({"error": {"code": code, "message": text, "field": None}},
                                 status=status, headers={"Connection": "close"})
        resp.force_close()
        return resp

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        log.warning("http.header_timeout", seconds=self._limits.header_timeout,
                    remote=self._remote())
        self._refuse(raw_error(408, "Request Timeout", "request_timeout",
                               "request headers did not arrive in time"))

    def _refuse(self, response: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(response)
        self.force_close()
        if transport is not None:
            transport.close()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _remote(self) -> str | None:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if peer else None


class GuardedServer(web.Server):
    def __init__(self, limits: ConnectionLimits, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """AppRunner whose server guards its connections (see the module docstring)."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(self._limits, plain.request_handler,
                             request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation,
                             loop=asyncio.get_running_loop(), **self._kwargs)
