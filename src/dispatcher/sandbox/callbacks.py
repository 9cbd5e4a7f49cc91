"""The sandbox for callback receivers: a sample callback built and signed exactly as
the engine sends one, the decision the engine would record from an answer, and
`check-receiver --callback` (genuine requests get exactly `ok` or `deny`; forged,
stale or unsigned ones get a 4xx, never `ok`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dispatcher.catalogue import EventType
from dispatcher.clock import SystemClock
from dispatcher.sandbox.conformance import (
    FAIL,
    SIGNATURE_HEADER,
    SKIP,
    STALE_BY,
    Check,
    Report,
    _measured,
    _rejected,
    _timing,
)
from dispatcher.sandbox.forward import Attempt, post, signed_headers
from dispatcher.sandbox.samples import SampleEvent, SigningKey
from dispatcher.signing import COBALT, WEBHOOK_SIGNATURE, serialize_body
from dispatcher.store.callbacks import callback_body
from dispatcher.transport import Transport
from dispatcher.transport.classify import DECISION_STATUSES, decision_of

DEFAULT_CALLBACK_TYPE = "withdrawal.approve"
# What a callback carries by default: a Cobo Transaction (what Cobo's callbacks send).
SAMPLE_SOURCE = "wallets.transaction.created"


def sample_callback_data(catalogue: Mapping[str, EventType]) -> Any:
    return catalogue[SAMPLE_SOURCE].sample


def build_callback(type_: str, data: Any, scheme: str,
                   created_at: datetime | None = None) -> SampleEvent:
    """A callback as the engine sends it to an endpoint of `scheme`: a new id."""
    cid = uuid.uuid4()
    when = created_at or SystemClock().now()
    return SampleEvent(cid, type_, when, data, callback_body(cid, type_, when, data, scheme))


def describe_decision(attempt: Attempt) -> tuple[str | None, str]:
    """The decision the engine would record from this answer, and a line saying so."""
    decision = decision_of(attempt.status, attempt.response_body)
    if decision is not None:
        label = "Approved" if decision == "ok" else "Denied"
        return decision, f"decision: {decision} (the engine would record {label})"
    if attempt.status is None:
        why = f"{attempt.failure}: {attempt.error_detail}"
    elif attempt.status not in DECISION_STATUSES:
        why = f"http_status: a decision comes with 200 or 201, not {attempt.status}"
    else:
        why = (f"no_decision: the body must be exactly ok or deny (case matters; "
               f"surrounding whitespace is ignored), got {_quote(attempt.response_body)}")
    return None, (f"no decision ({why}); the engine would retry, and fail the callback "
                  "(never approve it) when retries or the deadline run out")


def _quote(body: str) -> str:
    return json.dumps(body[:60]) if body else "an empty body"


def _tampered(callback: SampleEvent) -> bytes:
    """The callback's body changed after signing."""
    body = json.loads(callback.body)
    if isinstance(body, dict):
        return serialize_body({**body, "tampered": True})
    return callback.body + b" "


def _decides(check: Check, attempt: Attempt) -> Check:
    _measured(check, attempt)
    decision, line = describe_decision(attempt)
    if decision is None:
        check.status = FAIL
        check.reason = line
        if attempt.status in (400, 401, 403):
            check.reason += "; is the receiver verifying with the right key?"
    else:
        check.reason = f"answered {attempt.status} {decision} in {attempt.duration_ms:.0f} ms"
    return check


def _never_ok(check: Check, attempt: Attempt, accepted_means: str) -> Check:
    """A forged request: a 4xx; an `ok` is the worst answer of all."""
    _rejected(check, attempt, (), accepted_means)
    if decision_of(attempt.status, attempt.response_body) == "ok":
        check.reason = f"answered ok: {accepted_means}, so anyone could approve"
    return check


async def run_callback_checks(
    transport: Transport,
    url: str,
    key: SigningKey,
    callback_type: str,
    data: Any,
    *,
    timeout: float = 2.0,
) -> Report:
    """Probe a callback receiver, one request at a time."""
    report = Report(url, key.scheme, callback_type)
    add = report.checks.append

    async def send(body: bytes, headers: dict[str, str]) -> Attempt:
        return await post(transport, url, body, headers, timeout=timeout)

    # (a), (b): genuine callbacks, each answered with a decision.
    first_cb = build_callback(callback_type, data, key.scheme)
    first = await send(first_cb.body, signed_headers(key, first_cb))
    add(_decides(Check("a", "decides_signed_callback",
                       "a correctly signed callback is answered 200/201 with exactly ok or "
                       f"deny within {timeout:g} s"), first))
    again = await send(first_cb.body, signed_headers(key, first_cb))
    add(_decides(Check("b", "decides_repeated_callback",
                       "the same callback sent again (a retry) is answered with a decision"),
                 again))

    # (c) the body changed after signing.
    forged = build_callback(callback_type, data, key.scheme)
    attempt = await send(_tampered(forged), signed_headers(key, forged))
    add(_never_ok(Check("c", "rejects_tampered_callback",
                        "a body that no longer matches its signature gets a 4xx, not ok"),
                  attempt, "the receiver does not verify the signature against the raw body"))

    # (d) a genuine signature, ten minutes old.
    stale = Check("d", "rejects_stale_callback",
                  "a validly signed callback timestamped 10 minutes ago gets a 4xx, not ok")
    if key.scheme == COBALT:
        stale.status = SKIP
        stale.required = False
        stale.reason = "cobalt signs the body only and carries no timestamp"
        add(stale)
    else:
        then = SystemClock().now() - STALE_BY
        old = build_callback(callback_type, data, key.scheme, created_at=then)
        attempt = await send(old.body, signed_headers(key, old, when=then))
        add(_never_ok(stale, attempt, "the receiver does not check the signed timestamp"))

    # (e) no signature at all.
    unsigned = build_callback(callback_type, data, key.scheme)
    header = SIGNATURE_HEADER.get(key.scheme, WEBHOOK_SIGNATURE)
    headers = {k: v for k, v in signed_headers(key, unsigned).items()
               if k.lower() != header.lower()}
    attempt = await send(unsigned.body, headers)
    add(_never_ok(Check("e", "rejects_unsigned_callback",
                        f"a callback without the {header} header gets a 4xx, not ok"),
                  attempt, "the receiver does not require a signature"))

    add(_timing(first, again, timeout))
    return report
