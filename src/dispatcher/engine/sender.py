"""One attempt: sign the delivery for its endpoint and send it through the
transport with the endpoint's options and total timeout."""

from __future__ import annotations

from dispatcher.clock import Clock
from dispatcher.engine.endpoints import EndpointTarget
from dispatcher.store.deliveries import ClaimedDelivery
from dispatcher.store.events import cobo_envelope
from dispatcher.transport import Exchange, Transport
from dispatcher.transport.clients import BASE_HEADERS


async def send(
    transport: Transport,
    target: EndpointTarget,
    delivery: ClaimedDelivery,
    clock: Clock,
    success_statuses: frozenset[int],
    body_limit: int,
    trace_headers: dict[str, str] | None = None,
) -> Exchange:
    """Sign and send one delivery to its endpoint (with the attempt span's
    `traceparent` when tracing is on)."""
    started_at = clock.now()
    body = delivery.body
    if target.cobo_url is not None:
        body = cobo_envelope(body, target.cobo_url)
    headers = {**BASE_HEADERS, **target.signer.sign(str(delivery.event_id), started_at, body)}
    if trace_headers:
        headers.update(trace_headers)
    result = await transport.send(
        target.url, body, headers, timeout=target.timeout, body_limit=body_limit,
        started_at=started_at, options=target.options, success_statuses=success_statuses,
    )
    result.finished_at = clock.now()
    return result
