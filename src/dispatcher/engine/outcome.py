"""Pure outcome rules: was an attempt a success, why did it fail, and what state
does the delivery go to next."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from dispatcher.model import DeliveryStatus, FailureReason
from dispatcher.retry import RetryPolicy

# Statuses whose Retry-After we honour ("slow down" in the Standard Webhooks spec).
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
GONE = 410
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


def is_success(status: int, success_statuses: Collection[int]) -> bool:
    """Any 2xx, unless a profile narrows it (OKX: 200 only; Cobo: 200 and 201)."""
    if success_statuses:
        return status in success_statuses
    return 200 <= status < 300


def failure_for_status(status: int, success_statuses: Collection[int]) -> FailureReason | None:
    if is_success(status, success_statuses):
        return None
    if 300 <= status < 400:
        return FailureReason.REDIRECT  # never followed
    return FailureReason.HTTP_STATUS


@dataclass(frozen=True, slots=True)
class Decision:
    status: DeliveryStatus
    retries_left: int
    next_attempt_at: datetime


def decide(
    policy: RetryPolicy,
    retries_left: int,
    failed: bool,
    finished_at: datetime,
    retry_after: float | None = None,
    retry_after_cap: float = 3600.0,
    rand: float = 0.5,
) -> Decision:
    """The delivery's next state after one attempt. Delays count from the end of
    the failed attempt; a Retry-After can only lengthen the wait, up to the cap."""
    if not failed:
        return Decision(DeliveryStatus.SUCCESS, retries_left, finished_at)
    delay = policy.delay_after(retries_left, rand)
    if delay is None:
        return Decision(DeliveryStatus.FAILED, 0, finished_at)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_cap))
    return Decision(
        DeliveryStatus.RETRYING, retries_left - 1, finished_at + timedelta(seconds=delay)
    )


def decide_rate_limited(
    retries_left: int,
    created_at: datetime | None,
    finished_at: datetime,
    until: datetime,
    hold_limit_seconds: float,
) -> Decision:
    """A rate-limited attempt: due again when the endpoint's backoff ends, retries
    untouched, until the delivery is older than the hold limit (then Failed)."""
    if created_at is not None and (finished_at - created_at).total_seconds() >= hold_limit_seconds:
        return Decision(DeliveryStatus.FAILED, retries_left, finished_at)
    return Decision(DeliveryStatus.RETRYING, retries_left, until)
