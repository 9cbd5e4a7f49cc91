"""One attempt: sign, POST with the endpoint's total timeout, never follow redirects,
read at most the configured number of response bytes, and classify what happened."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import aiohttp

from dispatcher.clock import Clock, monotonic
from dispatcher.engine.endpoints import EndpointTarget
from dispatcher.engine.outcome import failure_for_status
from dispatcher.model import FailureReason
from dispatcher.store.deliveries import ClaimedDelivery
from dispatcher.store.events import cobo_envelope
from dispatcher.urlpolicy import is_blocked_error

BASE_HEADERS = {"Content-Type": "application/json"}


@dataclass(slots=True)
class AttemptResult:
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    request_headers: dict[str, str]
    status: int | None = None
    response_headers: dict[str, str] | None = None
    response_body: str | None = None
    failure: FailureReason | None = None
    error_detail: str | None = None
    status_text: str = ""

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def request_headers_json(self) -> str:
        return json.dumps(self.request_headers)

    def response_headers_json(self) -> str | None:
        if self.response_headers is None:
            return None
        return json.dumps(self.response_headers)


def classify_exception(exc: BaseException) -> FailureReason:
    if is_blocked_error(exc):
        return FailureReason.BLOCKED_ADDRESS
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return FailureReason.TIMEOUT
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return FailureReason.TLS_ERROR
    # A status line, header or body the HTTP parser rejected: the receiver answered,
    # just not in HTTP. (ClientResponseError is only raised for parser errors here:
    # statuses are never raised, raise_for_status is off.)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return FailureReason.PROTOCOL_ERROR
    return FailureReason.CONNECT_ERROR


async def send(
    session: aiohttp.ClientSession,
    target: EndpointTarget,
    delivery: ClaimedDelivery,
    clock: Clock,
    success_statuses: frozenset[int],
    body_limit: int,
) -> AttemptResult:
    """Sign and send one delivery to its endpoint."""
    started_at = clock.now()
    body = delivery.body
    if target.cobo_url is not None:
        body = cobo_envelope(body, target.cobo_url)
    headers = {**BASE_HEADERS, **target.signer.sign(str(delivery.event_id), started_at, body)}
    result = await post_once(session, target.url, body, headers, target.timeout,
                             success_statuses, body_limit, started_at)
    result.finished_at = clock.now()
    return result


async def post_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    success_statuses: Collection[int],
    body_limit: int,
    started_at: datetime,
) -> AttemptResult:
    """POST `body` with exactly `headers`, no redirects, at most `body_limit` bytes of
    the response read, and classify the outcome. The engine and the sandbox both
    send through here, so a sandbox run shows exactly what the engine would record."""
    t0 = monotonic()
    result = AttemptResult(started_at, started_at, 0.0, headers)
    try:
        async with session.post(
            url, data=body, headers=headers, allow_redirects=False, timeout=timeout,
        ) as resp:
            result.status = resp.status
            result.status_text = resp.reason or ""
            result.response_headers = dict(resp.headers)
            raw = await resp.content.read(body_limit)
            # PostgreSQL text cannot hold NUL: store it as U+FFFD like other bad bytes.
            result.response_body = raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
            result.failure = failure_for_status(resp.status, success_statuses)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        result.failure = classify_exception(exc)
        result.error_detail = _describe(exc)
    result.duration_ms = (monotonic() - t0) * 1000
    return result


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
