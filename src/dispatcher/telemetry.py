"""OpenTelemetry tracing (`[telemetry]`, off by default): spans for API requests,
publishes and every delivery attempt, exported over OTLP/HTTP.

A publish stores its span's context with its events (`events.trace_context`), so an
attempt an hour later in another process is a child of the publish that caused it;
the webhook request carries `traceparent` (and `tracestate`) of the attempt's span
unless its endpoint says `propagate_trace_context: false`.

Off, nothing here is imported beyond this module and every hook is one `is None`
test: `active()` is None. The standard `OTEL_*` environment variables apply (the
exporter's endpoint and headers, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`/`_ARG`, the batch processor's delays); `[telemetry]` settings
are the defaults they override where both exist.

Attributes carry ids, numbers, statuses and reasons, never a secret, a payload or a
header value."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from dispatcher.config import TelemetryConfig

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def _sampled(stored: str) -> bool:
    """The W3C `sampled` flag (bit 0 of trace-flags; bit 1 says the id is random)."""
    try:
        return bool(int(stored.partition(" ")[0].rsplit("-", 1)[1][:2], 16) & 1)
    except (IndexError, ValueError):
        return True  # let the propagator judge what it can parse


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


@dataclass
class Attempt:
    """An attempt's span, and the headers that carry it to the receiver."""

    span: Span | None  # None: the publish was not sampled (nothing is recorded)
    headers: dict[str, str]


class Tracing:
    def __init__(self, config: TelemetryConfig, role: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from dispatcher import __version__

        attributes: dict[str, Any] = {"service.version": __version__, "dispatcher.role": role,
                                      "process.pid": os.getpid()}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = config.service_name
        sampler = None  # the SDK reads OTEL_TRACES_SAMPLER when it is set
        if not os.environ.get("OTEL_TRACES_SAMPLER"):
            sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        self.provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
        endpoint = None  # the exporter reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT
        if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
            endpoint = config.endpoint or None
        exporter = OTLPSpanExporter(endpoint=endpoint)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer: Tracer = self.provider.get_tracer("dispatcher", __version__)
        self._propagator = TraceContextTextMapPropagator()

    # -- context in and out -----------------------------------------------------------

    def extract(self, carrier: Mapping[str, str]) -> Context:
        """The context an incoming request continues (its `traceparent`), if any."""
        return self._propagator.extract(carrier)

    def inject(self, context: Context | None = None) -> dict[str, str]:
        """`traceparent` (and `tracestate`) of the current span, or of `context`'s."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=context)
        return carrier

    def stored_context(self) -> str | None:
        """The current span's context as stored with an event: the traceparent, then
        the tracestate after a space. Kept when not sampled too: its attempts then
        record nothing either (and cost next to nothing), as the sampler decided."""
        carrier = self.inject()
        parent = carrier.get(TRACEPARENT)
        if parent is None:
            return None
        state = carrier.get(TRACESTATE)
        return parent if not state else f"{parent} {state}"

    def _from_stored(self, stored: str | None) -> Context | None:
        if not stored:
            return None
        parent, _, state = stored.partition(" ")
        carrier = {TRACEPARENT: parent}
        if state:
            carrier[TRACESTATE] = state
        return self._propagator.extract(carrier)

    # -- spans --------------------------------------------------------------------------

    @contextmanager
    def request_span(self, method: str, route: str, headers: Mapping[str, str]
                     ) -> Iterator[Span]:
        from opentelemetry.trace import SpanKind

        with self.tracer.start_as_current_span(
            f"{method} {route}", context=self.extract(headers), kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        ) as span:
            yield span

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """An internal span, child of the current one."""
        with self.tracer.start_as_current_span(
                name, attributes={k: v for k, v in attributes.items() if v is not None}
        ) as span:
            yield span

    def start_attempt(self, stored: str | None, *, attempt: int, event_id: str,
                      endpoint_id: str, delivery_id: int, tenant_id: str,
                      created_at: datetime | None, now: datetime,
                      propagate: bool, kind: str = "webhook") -> Attempt:
        """A delivery attempt's span, a child of the publish that stored `stored`;
        the first attempt's wait in the queue is a span of its own before it."""
        from opentelemetry.trace import SpanKind

        if stored is not None and not _sampled(stored):
            # Not sampled at publish: no span; the receiver still gets the caller's
            # (unsampled) context, as a proxy that does not record would pass it on.
            parent_header = stored.partition(" ")[0]
            return Attempt(None, {TRACEPARENT: parent_header} if propagate else {})
        parent = self._from_stored(stored)
        attributes: dict[str, Any] = {
            "dispatcher.event_id": event_id, "dispatcher.endpoint_id": endpoint_id,
            "dispatcher.delivery_id": delivery_id, "dispatcher.tenant_id": tenant_id,
            "dispatcher.attempt": attempt, "dispatcher.kind": kind}
        if attempt == 1 and created_at is not None and created_at <= now:
            wait_ms = (now - created_at).total_seconds() * 1000
            attributes["dispatcher.queue_wait_ms"] = round(wait_ms, 3)
            queued = self.tracer.start_span(
                f"{kind} queued", context=parent, start_time=_ns(created_at),
                attributes={"dispatcher.event_id": event_id,
                            "dispatcher.endpoint_id": endpoint_id})
            queued.end(end_time=_ns(now))
        span = self.tracer.start_span(f"{kind} attempt", context=parent, kind=SpanKind.CLIENT,
                                      attributes=attributes)
        headers: dict[str, str] = {}
        if propagate:
            from opentelemetry.trace import set_span_in_context

            headers = self.inject(set_span_in_context(span))
        return Attempt(span, headers)

    def end_attempt(self, attempt: Attempt, *, status: str, failure: str | None,
                    response_status: int | None, duration_ms: float,
                    retries_left: int | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = attempt.span
        if span is None:
            return
        span.set_attribute("dispatcher.status", status)
        span.set_attribute("dispatcher.duration_ms", round(duration_ms, 3))
        if response_status is not None:
            span.set_attribute("http.response.status_code", response_status)
        if retries_left is not None:
            span.set_attribute("dispatcher.retries_left", retries_left)
        if failure is not None:
            span.set_attribute("dispatcher.failure_reason", failure)
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()

    def shutdown(self) -> None:
        self.provider.shutdown()


_ACTIVE: list[Tracing] = []


def active() -> Tracing | None:
    """The process's tracing, None when it is off."""
    return _ACTIVE[0] if _ACTIVE else None


def setup(config: TelemetryConfig, role: str = "all") -> Tracing | None:
    """Turn tracing on for this process when `[telemetry] enabled` (and
    OTEL_SDK_DISABLED is not true). Idempotent."""
    if _ACTIVE:
        return _ACTIVE[0]
    if not config.enabled or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    tracing = Tracing(config, role)
    _ACTIVE.append(tracing)
    return tracing


def shutdown() -> None:
    """Export what is buffered and stop (at process exit)."""
    while _ACTIVE:
        _ACTIVE.pop().shutdown()
