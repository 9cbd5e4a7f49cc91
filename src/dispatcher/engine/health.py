"""Endpoint health decisions: count each batch's failed attempts, warn the owner at
50/70/90% of a pause threshold (operational event `endpoint.failing`) and pause the
endpoint when a threshold is crossed (`endpoint.paused`), all inside the
transaction that records the attempts. The rules are pure functions; the hook
(`HealthMonitor.record`) does the I/O.

Thresholds follow OKX: failures within a rolling window (default 100 in 7 days)
and failures since the last resume (default 500). Successes reset nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog

from dispatcher import metrics
from dispatcher.clock import to_ms
from dispatcher.config import Config, HealthConfig
from dispatcher.model import EndpointState, FailureReason
from dispatcher.retry import load_policies
from dispatcher.store import health as store
from dispatcher.store.deliveries import Outcome
from dispatcher.store.events import NewEvent, publish_events
from dispatcher.store.health import FailureCounts
from dispatcher.store.pool import Conn

if TYPE_CHECKING:
    from dispatcher.engine.worker import DeliveryWorker

log = structlog.get_logger(__name__)

PAUSED_EVENT = "endpoint.paused"
FAILING_EVENT = "endpoint.failing"
WINDOW = "window"
TOTAL = "total"


@dataclass(frozen=True, slots=True)
class Thresholds:
    window: int
    total: int


def count_failures(outcomes: Iterable[Outcome]) -> Counter[tuple[UUID, datetime]]:
    """Failed attempts by (endpoint, hour bucket of the attempt's start). A "slow
    down" answer (rate_limited) is a busy receiver, not a broken one: not counted."""
    found: Counter[tuple[UUID, datetime]] = Counter()
    for o in outcomes:
        if o.failure_reason is not None and o.failure_reason != FailureReason.RATE_LIMITED:
            found[(o.endpoint_id, store.bucket_start(o.started_at))] += 1
    return found


def thresholds_for(counts: FailureCounts, cfg: HealthConfig) -> Thresholds:
    return Thresholds(counts.window_threshold or cfg.window_threshold,
                      counts.total_threshold or cfg.total_threshold)


def crossed(counts: FailureCounts, limits: Thresholds) -> str | None:
    """Which threshold the counters reached ('window' first), or None."""
    if counts.failures_in_window >= limits.window:
        return WINDOW
    if counts.failures_since_resume >= limits.total:
        return TOTAL
    return None


def warnings_reached(
    counts: FailureCounts, limits: Thresholds, percentages: Iterable[int]
) -> list[tuple[str, int, int]]:
    """(threshold, percentage, failures) for every level reached and not yet sent."""
    out: list[tuple[str, int, int]] = []
    for kind, failures, limit in ((WINDOW, counts.failures_in_window, limits.window),
                                  (TOTAL, counts.failures_since_resume, limits.total)):
        for pct in sorted(set(percentages)):
            if failures * 100 >= limit * pct and (kind, pct) not in counts.warned:
                out.append((kind, pct, failures))
    return out


def describe_window(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


def pause_reason(
    counts: FailureCounts, limits: Thresholds, window_seconds: float, now: datetime
) -> str:
    return (f"paused at {now.isoformat()}: {counts.failures_in_window} failed attempts "
            f"within {describe_window(window_seconds)} (threshold {limits.window}), "
            f"{counts.failures_since_resume} since the last resume "
            f"(threshold {limits.total})")


class HealthMonitor:
    """The outcome hook: `worker.outcome_hooks.append(monitor.record)`."""

    def __init__(self, config: Config) -> None:
        self._cfg = config.health
        self._policies = load_policies(config)
        self._default_retries = self._policies[config.delivery.default_retry_policy].retries
        self._idempotency = timedelta(seconds=config.server.idempotency_window_seconds)

    async def record(self, conn: Conn, outcomes: Sequence[Outcome], now: datetime) -> set[UUID]:
        """Count the batch's failures; returns the endpoints it paused."""
        paused: set[UUID] = set()
        failures = count_failures(outcomes)
        if not failures:
            return paused
        for counts in await store.add_failures(conn, failures, now, self._cfg.window_seconds):
            if counts.state != EndpointState.ACTIVE:
                continue  # in flight when it was paused or disabled: counted, nothing more
            limits = thresholds_for(counts, self._cfg)
            which = crossed(counts, limits)
            if which is not None:
                await self._pause(conn, counts, limits, which, now)
                paused.add(counts.endpoint_id)
            else:
                await self._warn(conn, counts, limits, now)
        return paused

    async def _pause(
        self, conn: Conn, counts: FailureCounts, limits: Thresholds, which: str,
        now: datetime,
    ) -> None:
        reason = pause_reason(counts, limits, self._cfg.window_seconds, now)
        change = await store.pause_endpoint(conn, counts.endpoint_id, reason, now)
        metrics.ENDPOINT_PAUSES.inc()
        log.warning("endpoint.paused", endpoint_id=str(counts.endpoint_id),
                    tenant_id=str(counts.tenant_id), threshold=which, reason=reason,
                    failures_in_window=counts.failures_in_window,
                    failures_since_resume=counts.failures_since_resume,
                    held=change.deliveries)
        await self._publish(conn, counts.tenant_id, counts.endpoint_id, PAUSED_EVENT, {
            "endpoint_id": str(counts.endpoint_id),
            "url": counts.url,
            "reason": reason,
            "threshold": which,
            "failures_in_window": counts.failures_in_window,
            "window_seconds": self._cfg.window_seconds,
            "window_threshold": limits.window,
            "failures_since_resume": counts.failures_since_resume,
            "total_threshold": limits.total,
            "held_deliveries": change.deliveries,
            "paused_timestamp": to_ms(now),
        }, now)

    async def _warn(
        self, conn: Conn, counts: FailureCounts, limits: Thresholds, now: datetime
    ) -> None:
        reached = warnings_reached(counts, limits, self._cfg.warn_percentages)
        if not reached:
            return
        sent = await store.claim_warnings(conn, counts.endpoint_id, reached, now,
                                          self._cfg.window_seconds)
        # Several levels reached by one batch: one event, for the highest.
        for kind, limit in ((WINDOW, limits.window), (TOTAL, limits.total)):
            levels = [pct for k, pct in sent if k == kind]
            if not levels:
                continue
            failures = (counts.failures_in_window if kind == WINDOW
                        else counts.failures_since_resume)
            log.info("endpoint.failing", endpoint_id=str(counts.endpoint_id),
                     tenant_id=str(counts.tenant_id), threshold=kind,
                     percentage=max(levels), failures=failures, limit=limit)
            await self._publish(conn, counts.tenant_id, counts.endpoint_id, FAILING_EVENT, {
                "endpoint_id": str(counts.endpoint_id),
                "url": counts.url,
                "threshold": kind,
                "percentage": max(levels),
                "failures": failures,
                "limit": limit,
                "failures_in_window": counts.failures_in_window,
                "window_seconds": self._cfg.window_seconds,
                "failures_since_resume": counts.failures_since_resume,
            }, now)

    async def _publish(
        self, conn: Conn, tenant_id: UUID, about: UUID, type_: str, data: dict[str, Any],
        now: datetime,
    ) -> None:
        """To the tenant's endpoints subscribed to `type_` (held for paused ones),
        except the failing endpoint itself."""
        await publish_events(conn, tenant_id, [NewEvent(type_, data)],
                             policies=self._policies, now=now,
                             idempotency_window=self._idempotency,
                             default_retries=self._default_retries,
                             exclude_endpoints=[about])


def install(worker: DeliveryWorker, config: Config) -> HealthMonitor:
    """Count failures and pause/warn on every outcome batch this worker writes."""
    monitor = HealthMonitor(config)
    worker.outcome_hooks.append(monitor.record)
    return monitor
