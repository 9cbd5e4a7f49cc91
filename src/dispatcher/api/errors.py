"""Every error leaves as {"error": {"code", "message", "field"}} with a 4xx/5xx status."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from dispatcher.errors import DispatcherError, TooManyRequests
from dispatcher.store.pool import DB_UNAVAILABLE

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRY_AFTER_SECONDS = 2  # sent with 503 database_unavailable

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    408: "request_timeout",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "field": field}}, status=status
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binds a request id to every log line of the request and echoes it back."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id[:64])
    try:
        response = await handler(request)
    finally:
        structlog.contextvars.clear_contextvars()
    response.headers["X-Request-Id"] = request_id[:64]
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        resp = _error_for(request, exc)
        if request.body_exists and not request.content.at_eof():
            # Answered before the body was read to its end (or it could not be read):
            # what is left of it would be taken for the next request. Close, and say so
            # (Connection: close) so that the client does not reuse the connection.
            resp.force_close()
        return resp


def _error_for(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, DispatcherError):
        resp = error_response(exc.status, exc.code, exc.message, exc.field)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="dispatcher"'
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return resp
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 405 else f"method {request.method} not allowed"
        resp = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    if isinstance(exc, DB_UNAVAILABLE):
        # Not the client's fault and not a bug: the publisher should retry shortly.
        log.warning("api.database_unavailable", path=request.path, error=str(exc))
        resp = error_response(503, "database_unavailable",
                              "the database is unavailable; retry shortly")
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp
    log.exception("api.unhandled_error", path=request.path, method=request.method)
    return error_response(500, "internal_error", "internal error")
