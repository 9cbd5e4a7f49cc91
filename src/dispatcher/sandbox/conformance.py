"""`dispatcher check-receiver`: probes a receiver the way the engine (and an attacker)
would talk to it, and says for each check whether it behaved and why not.

Every probe except the duplicate uses a fresh event id, so a receiver that answers
2xx to ids it has already seen (a correct way to dedupe) is judged only on the
property under test."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dispatcher.clock import SystemClock
from dispatcher.sandbox.forward import Attempt, deliver, post, signed_headers
from dispatcher.sandbox.samples import SampleEvent, SigningKey, addressed, build_event
from dispatcher.signing import (
    COBALT,
    COBALT_SIGNATURE,
    COBO,
    COBO_SIGNATURE,
    WEBHOOK_SIGNATURE,
    serialize_body,
)
from dispatcher.transport import Transport
from dispatcher.transport.classify import is_success

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
STALE_BY = timedelta(minutes=10)
SLOW_MS = 1000.0
SIGNATURE_HEADER = {COBALT: COBALT_SIGNATURE, COBO: COBO_SIGNATURE}
# A sample type per scheme, for receivers that only know their provider's types.
DEFAULT_TYPES = {COBO: "wallets.transaction.created", COBALT: "workflow-completed"}
DEFAULT_TYPE = "transaction"


@dataclass
class Check:
    id: str
    name: str
    title: str
    status: str = PASS
    reason: str = ""
    required: bool = True
    http_status: int | None = None
    duration_ms: float | None = None

    @property
    def failed(self) -> bool:
        return self.required and self.status == FAIL

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "title": self.title, "status": self.status,
                "required": self.required, "reason": self.reason,
                "http_status": self.http_status,
                "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 1)}


@dataclass
class Report:
    url: str
    scheme: str
    event_type: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "scheme": self.scheme, "event_type": self.event_type,
                "passed": self.passed, "checks": [c.to_json() for c in self.checks]}


def _measured(check: Check, attempt: Attempt) -> Check:
    check.http_status = attempt.status
    check.duration_ms = attempt.duration_ms
    return check


def _accepted(check: Check, attempt: Attempt, success: Collection[int],
              refused_hint: str) -> Check:
    """A probe that must be acknowledged."""
    _measured(check, attempt)
    if attempt.status is None:
        check.status = FAIL
        check.reason = f"{attempt.failure}: {attempt.error_detail}"
        if attempt.failure == "timeout":
            check.reason += "; acknowledge first and process later"
        return check
    if is_success(attempt.status, success):
        check.reason = f"answered {attempt.status} in {attempt.duration_ms:.0f} ms"
        return check
    check.status = FAIL
    body = attempt.response_body.strip().replace("\n", " ")[:120]
    said = f" ({body})" if body else ""
    if 300 <= attempt.status < 400:
        check.reason = f"answered {attempt.status}{said}: redirects are never followed"
    elif attempt.status in (400, 401, 403):
        check.reason = f"answered {attempt.status}{said}: {refused_hint}"
    else:
        check.reason = f"answered {attempt.status}{said}; a success is " + (
            ", ".join(map(str, sorted(success))) if success else "any 2xx")
    return check


def _rejected(check: Check, attempt: Attempt, success: Collection[int],
              accepted_means: str) -> Check:
    """A probe that must be refused with a 4xx."""
    _measured(check, attempt)
    status = attempt.status
    if status is None:
        check.status = FAIL
        check.reason = f"no answer ({attempt.failure}: {attempt.error_detail}); expected a 4xx"
    elif 400 <= status < 500:
        check.reason = f"rejected with {status}"
    elif is_success(status, success) or 200 <= status < 300:
        check.status = FAIL
        check.reason = f"accepted with {status}: {accepted_means}"
    elif status >= 500:
        check.status = FAIL
        check.reason = (f"answered {status}; reject a request that fails verification with a "
                        "4xx (400/401/403): a 5xx says the receiver broke, and senders retry it")
    else:
        check.status = FAIL
        check.reason = f"answered {status}; expected a 4xx"
    return check


def tampered(event: SampleEvent) -> bytes:
    """The event's body with its content changed after signing: a field added to an
    object `data` (schema-tolerant), else the created timestamp moved by 1 ms."""
    envelope = json.loads(event.body)
    if isinstance(envelope["data"], dict):
        envelope["data"] = {**envelope["data"], "tampered": True}
    else:
        envelope["created_timestamp"] += 1
    return serialize_body(envelope)


async def run_checks(
    transport: Transport,
    url: str,
    key: SigningKey,
    event_type: str,
    data: Any,
    *,
    timeout: float = 2.0,
    success_statuses: Collection[int] = (),
) -> Report:
    """Probe `url` with checks (a)-(f), one request at a time, and report each."""
    report = Report(url, key.scheme, event_type)
    add = report.checks.append
    refused = (f"a correctly signed request was refused; check that the receiver verifies "
               f"with {key.verifier_key} against the raw body ({key.scheme})")

    async def send(event: SampleEvent) -> Attempt:
        return await deliver(transport, url, key, event, timeout=timeout,
                             success_statuses=success_statuses)

    # (a) and (b): a genuine event, then the same event again as a retry sends it
    # (same id and body, signed anew).
    event = build_event(event_type, data)
    first = await send(event)
    add(_accepted(Check("a", "accepts_signed_event",
                        f"a correctly signed event is acknowledged within {timeout:g} s"),
                  first, success_statuses, refused))
    again = await send(event)
    add(_accepted(Check("b", "accepts_duplicate",
                        "the same event (same id) sent again is acknowledged"),
                  again, success_statuses,
                  "a redelivery of an event must be acknowledged too (dedupe on the event "
                  "id and answer 2xx), or the sender keeps retrying it"))

    # (c) the body changed after signing.
    fresh = addressed(build_event(event_type, data), key.scheme, url)
    attempt = await post(transport, url, tampered(fresh), signed_headers(key, fresh),
                         timeout=timeout, success_statuses=success_statuses)
    add(_rejected(Check("c", "rejects_tampered_body",
                        "a body that no longer matches its signature is rejected with a 4xx"),
                  attempt, success_statuses,
                  "the receiver does not verify the signature against the raw body"))

    # (d) a genuine signature, ten minutes old.
    stale = Check("d", "rejects_stale_timestamp",
                  "a validly signed request timestamped 10 minutes ago is rejected")
    if key.scheme == COBALT:
        stale.status = SKIP
        stale.required = False
        stale.reason = ("cobalt signs the body only and carries no timestamp, so replays "
                        "cannot be detected by time: dedupe on event_id")
        add(stale)
    else:
        then = SystemClock().now() - STALE_BY
        old = addressed(build_event(event_type, data, created_at=then), key.scheme, url)
        attempt = await post(transport, url, old.body, signed_headers(key, old, when=then),
                             timeout=timeout, success_statuses=success_statuses)
        add(_rejected(stale, attempt, success_statuses,
                      "the receiver does not check the signed timestamp (reject requests "
                      "more than 5 minutes from its clock: replay protection)"))

    # (e) no signature at all.
    unsigned = addressed(build_event(event_type, data), key.scheme, url)
    header = SIGNATURE_HEADER.get(key.scheme, WEBHOOK_SIGNATURE)
    headers = {k: v for k, v in signed_headers(key, unsigned).items()
               if k.lower() != header.lower()}
    attempt = await post(transport, url, unsigned.body, headers, timeout=timeout,
                         success_statuses=success_statuses)
    add(_rejected(Check("e", "rejects_unsigned",
                        f"a request without the {header} header is rejected with a 4xx"),
                  attempt, success_statuses,
                  "the receiver does not require a signature"))

    # (f) how long the genuine deliveries took.
    add(_timing(first, again, timeout))
    return report


def _timing(first: Attempt, again: Attempt, timeout: float) -> Check:
    check = Check("f", "responds_quickly",
                  f"responses come within {timeout:g} s (warning above {SLOW_MS / 1000:g} s)")
    answered = [a for a in (first, again) if a.status is not None]
    if len(answered) < 2:
        check.status = FAIL
        missing = next(a for a in (first, again) if a.status is None)
        check.reason = f"no answer to a genuine delivery: {missing.error_detail}"
        return check
    slowest = max(a.duration_ms for a in answered)
    check.duration_ms = slowest
    if slowest > SLOW_MS:
        check.status = WARN
        check.reason = (f"slowest answer took {slowest:.0f} ms: close to the {timeout:g} s "
                        "timeout; acknowledge first and process later")
    else:
        check.reason = f"slowest answer took {slowest:.0f} ms"
    return check
