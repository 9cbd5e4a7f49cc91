"""One POST as the engine makes it, through the same transport (same headers, same
body bytes, total timeout, no redirects, response capped), classified the way the
engine records an attempt.

Unlike the engine, the sandbox talks to the user's own receivers, usually on
localhost, so its transport has no address guard."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dispatcher.clock import SystemClock
from dispatcher.config import UrlPolicyConfig
from dispatcher.model import FailureReason
from dispatcher.sandbox.samples import SampleEvent, SigningKey, addressed
from dispatcher.signing import make_signer
from dispatcher.transport import NO_OPTIONS, EndpointOptions, Transport
from dispatcher.transport.classify import GONE
from dispatcher.transport.clients import BASE_HEADERS, USER_AGENT
from dispatcher.urlpolicy import validate_endpoint_url

DEFAULT_TIMEOUT = 2.0
RESPONSE_LIMIT = 4096
# Local receivers are the point: http, any port, localhost and private addresses.
_SANDBOX_URLS = UrlPolicyConfig(allow_http=True, allow_any_port=True,
                                allow_private_networks=True)


def check_url(url: str) -> str:
    """The URL stripped, or ValidationError (http(s), a host, no credentials/fragment)."""
    return validate_endpoint_url(url, _SANDBOX_URLS)


def sandbox_transport(proxy_url: str = "") -> Transport:
    """The engine's transport without the address guard, optionally through a proxy."""
    return Transport(guarded=False, proxy_url=proxy_url)


def signed_headers(key: SigningKey, event: SampleEvent, when: datetime | None = None,
                   body: bytes | None = None) -> dict[str, str]:
    """The request headers of an attempt made at `when` (default now): Content-Type,
    User-Agent and the scheme's signature headers over `body` (default the event's)."""
    signer = make_signer(key.scheme, [key.secret])
    sig = signer.sign(str(event.id), when or SystemClock().now(),
                      event.body if body is None else body)
    return {**BASE_HEADERS, "User-Agent": USER_AGENT, **sig}


@dataclass
class Attempt:
    """What was sent and what came back."""

    url: str
    request_headers: dict[str, str]
    body: bytes
    status: int | None = None
    reason: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    duration_ms: float = 0.0
    failure: FailureReason | None = None
    error_detail: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and self.failure is None

    @property
    def outcome(self) -> str:
        """As the engine would record it: `Success`, or the failure reason."""
        if self.failure is None:
            return "Success"
        detail = f" ({self.error_detail})" if self.error_detail else ""
        then = ("a 410 disables the endpoint" if self.status == GONE
                else "the engine would retry")
        return f"failed: {self.failure}{detail}; {then}"

    def summary(self) -> str:
        if self.status is None:
            return f"no response after {self.duration_ms:.0f} ms: {self.error_detail}"
        return f"{self.status} {self.reason} in {self.duration_ms:.0f} ms".replace("  ", " ")

    def to_json(self) -> dict[str, object]:
        return {"url": self.url, "request_headers": self.request_headers,
                "request_body": self.body.decode("utf-8", "replace"),
                "status": self.status, "response_headers": self.response_headers,
                "response_body": self.response_body,
                "duration_ms": round(self.duration_ms, 1),
                "outcome": "Success" if self.failure is None else "Failed",
                "failure_reason": None if self.failure is None else str(self.failure),
                "error_detail": self.error_detail}


async def post(
    transport: Transport,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    success_statuses: Collection[int] = (),
    options: EndpointOptions = NO_OPTIONS,
) -> Attempt:
    """POST `body` with exactly `headers` (and an endpoint's custom headers,
    credentials and client certificate), as the engine sends an attempt."""
    r = await transport.send(url, body, headers, timeout=timeout, body_limit=RESPONSE_LIMIT,
                             started_at=SystemClock().now(), success_statuses=success_statuses,
                             options=options)
    attempt = Attempt(url, r.request_headers, body, status=r.status, reason=r.status_text,
                      response_headers=r.response_headers or {},
                      response_body=r.response_body or "", duration_ms=r.duration_ms,
                      failure=r.failure, error_detail=r.error_detail)
    if attempt.failure == FailureReason.TIMEOUT:
        attempt.error_detail = f"no complete response within {timeout:g} s"
    return attempt


async def deliver(
    transport: Transport,
    url: str,
    key: SigningKey,
    event: SampleEvent,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    success_statuses: Collection[int] = (),
    options: EndpointOptions = NO_OPTIONS,
) -> Attempt:
    """One attempt of `event`, signed now, exactly as the engine sends it."""
    event = addressed(event, key.scheme, url)
    return await post(transport, url, event.body, signed_headers(key, event), timeout=timeout,
                      success_statuses=success_statuses, options=options)
