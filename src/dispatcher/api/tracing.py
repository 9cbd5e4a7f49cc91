"""The API's request spans (only installed with `[telemetry] enabled`): one SERVER
span per request named by its route template, continuing an incoming
`traceparent`, with the method, the route and the status as attributes (never the
query, a header or the body)."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.spec import Handler
from dispatcher.telemetry import Tracing


def trace_requests(tracing: Tracing) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        with tracing.request_span(request.method, route, request.headers) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                span.set_attribute("http.response.status_code", exc.status)
                raise
            span.set_attribute("http.response.status_code", response.status)
            return response

    return middleware
