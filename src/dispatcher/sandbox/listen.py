"""`dispatcher listen --forward-to URL`: take events (POSTed to a local capture
receiver, or JSON lines on stdin), sign each for the developer's secret exactly as
the engine would, and POST it to their local receiver."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from aiohttp import web

from dispatcher.catalogue import EventType
from dispatcher.errors import ValidationError
from dispatcher.sandbox.capture import Captured
from dispatcher.sandbox.forward import DEFAULT_TIMEOUT, Attempt, deliver
from dispatcher.sandbox.samples import SampleEvent, SigningKey, incoming_event
from dispatcher.transport import Transport


@dataclass(frozen=True)
class Forwarded:
    event: SampleEvent
    attempt: Attempt


class Forwarder:
    def __init__(self, transport: Transport, url: str, key: SigningKey,
                 catalogue: Mapping[str, EventType], *, timeout: float = DEFAULT_TIMEOUT,
                 success_statuses: Collection[int] = (),
                 on_result: Callable[[Forwarded], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.transport = transport
        self.url = url
        self.key = key
        self.catalogue = catalogue
        self.timeout = timeout
        self.success_statuses = success_statuses
        self.on_result = on_result
        self.on_error = on_error

    async def forward(self, body: bytes) -> Forwarded:
        """Sign and POST one event given as JSON (see `incoming_event`); raises
        ValidationError for input that is not an event."""
        event = incoming_event(body, self.catalogue)
        attempt = await deliver(self.transport, self.url, self.key, event, timeout=self.timeout,
                                success_statuses=self.success_statuses)
        done = Forwarded(event, attempt)
        if self.on_result is not None:
            self.on_result(done)
        return done

    async def respond(self, captured: Captured) -> web.Response:
        """The capture receiver's answer: the local receiver's status and body, so a
        sender sees what a direct delivery would have got; 502 if it did not answer."""
        if captured.method != "POST":
            return _error(405, "method_not_allowed", "POST an event here")
        try:
            done = await self.forward(captured.body)
        except ValidationError as exc:
            if self.on_error is not None:
                self.on_error(f"request #{captured.n}: {exc.message}")
            return _error(422, exc.code, exc.message, exc.field)
        attempt = done.attempt
        if attempt.status is None:
            return _error(502, "forward_failed",
                          f"{self.url}: {attempt.failure}: {attempt.error_detail}")
        if attempt.status in (204, 304) or attempt.status < 200:
            return web.Response(status=attempt.status if attempt.status >= 200 else 502)
        content_type = attempt.response_headers.get("Content-Type", "text/plain")
        return web.Response(status=attempt.status, body=attempt.response_body.encode(),
                            content_type=content_type.split(";")[0].strip() or None)


def _error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "field": field}},
                             status=status)
