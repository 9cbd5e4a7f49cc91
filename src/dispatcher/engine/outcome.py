"""Pure outcome rules of the engine: which answers ask it to slow down, and what a
callback endpoint's answer decided. Whether an
attempt succeeded is the transport's (`transport.classify`); the delivery's next
state is the retry policy's (`retry.decide`)."""

from __future__ import annotations

from dispatcher.model import FailureReason
from dispatcher.transport import Exchange
from dispatcher.transport.classify import DECISION_STATUSES, decision_of

# Statuses whose Retry-After we honour ("slow down" in the Standard Webhooks spec).
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
TOO_MANY_REQUESTS = 429
UNAVAILABLE = 503
# Attempts that tell of a receiver at its limit: the adaptive in-flight limit halves.
CONGESTION_FAILURES = frozenset({FailureReason.TIMEOUT, FailureReason.CONNECT_ERROR})


def is_rate_limited(status: int | None, retry_after: str | None) -> bool:
    """A "slow down" answer: 429, or 503 with a Retry-After. It pauses the whole
    endpoint for a while instead of failing the delivery."""
    return status == TOO_MANY_REQUESTS or (status == UNAVAILABLE and bool(retry_after))


def is_congestion(status: int | None, failure: FailureReason | None) -> bool:
    return status in (TOO_MANY_REQUESTS, UNAVAILABLE) or failure in CONGESTION_FAILURES


def classify_answer(result: Exchange) -> str | None:
    """Apply the decision rule to an attempt at a callback endpoint: returns the
    decision, and marks an answer that is not one as failed (so it is retried)."""
    if result.status is None:
        return None  # timeout, connection error, ...: already a failure
    decision = decision_of(result.status, result.response_body)
    if decision is not None:
        result.failure = None
    elif result.status in DECISION_STATUSES:
        result.failure = FailureReason.NO_DECISION
    elif result.failure is None:
        result.failure = FailureReason.HTTP_STATUS  # a 2xx other than 200/201
    return decision
