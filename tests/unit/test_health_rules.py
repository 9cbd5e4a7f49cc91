"""The pure endpoint-health rules: counting failures into hour buckets, which
threshold is crossed, which warning levels are due, and the maintenance lock ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from dispatcher.config import HealthConfig
from dispatcher.engine.health import (
    Thresholds,
    count_failures,
    crossed,
    describe_window,
    pause_reason,
    thresholds_for,
    warnings_reached,
)
from dispatcher.maintenance import lock_key
from dispatcher.model import DeliveryStatus, EndpointState
from dispatcher.store.deliveries import Outcome
from dispatcher.store.health import FailureCounts, bucket_start

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def outcome(endpoint_id: uuid.UUID, at: datetime, failed: bool = True) -> Outcome:
    return Outcome(
        delivery_id=1, endpoint_id=endpoint_id, attempt_number=1,
        status=DeliveryStatus.RETRYING if failed else DeliveryStatus.SUCCESS,
        retries_left=1, next_attempt_at=at, started_at=at, duration_ms=1.0,
        request_headers="{}", response_status=500 if failed else 200,
        response_headers=None, response_body=None,
        failure_reason="http_status" if failed else None,
    )


def counts(window: int, total: int, warned: set[tuple[str, int]] | None = None,
           window_threshold: int | None = None,
           total_threshold: int | None = None) -> FailureCounts:
    return FailureCounts(
        endpoint_id=uuid.uuid4(), tenant_id=uuid.uuid4(), url="https://example.com/hook",
        state=EndpointState.ACTIVE, failures_in_window=window, failures_since_resume=total,
        window_threshold=window_threshold, total_threshold=total_threshold,
        warned=frozenset(warned or set()),
    )


def test_failures_are_counted_per_endpoint_and_hour_and_successes_are_ignored() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    found = count_failures([
        outcome(a, T0 + timedelta(minutes=1)),
        outcome(a, T0 + timedelta(minutes=59)),
        outcome(a, T0 + timedelta(minutes=61)),
        outcome(a, T0 + timedelta(minutes=5), failed=False),
        outcome(b, T0 + timedelta(minutes=2)),
    ])
    assert found == {(a, T0): 2, (a, T0 + timedelta(hours=1)): 1, (b, T0): 1}


def test_bucket_start_is_the_utc_hour() -> None:
    plus_half = timezone(timedelta(hours=5, minutes=30))
    at = datetime(2026, 1, 1, 12, 10, tzinfo=plus_half)  # 06:40 UTC
    assert bucket_start(at) == datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


def test_per_endpoint_thresholds_override_the_config() -> None:
    cfg = HealthConfig()
    assert thresholds_for(counts(0, 0), cfg) == Thresholds(100, 500)
    assert thresholds_for(counts(0, 0, window_threshold=5, total_threshold=7), cfg) == \
        Thresholds(5, 7)


def test_either_threshold_pauses_and_the_window_is_named_first() -> None:
    limits = Thresholds(100, 500)
    assert crossed(counts(99, 499), limits) is None
    assert crossed(counts(100, 100), limits) == "window"
    assert crossed(counts(10, 500), limits) == "total"
    assert crossed(counts(100, 500), limits) == "window"


def test_warning_levels_are_reached_at_their_share_and_only_once() -> None:
    limits = Thresholds(100, 500)
    pcts = [50, 70, 90]
    assert warnings_reached(counts(49, 49), limits, pcts) == []
    assert warnings_reached(counts(50, 50), limits, pcts) == [("window", 50, 50)]
    assert warnings_reached(counts(70, 70, {("window", 50)}), limits, pcts) == \
        [("window", 70, 70)]
    # A jump past several levels reaches all of them; the hook sends the highest.
    assert warnings_reached(counts(95, 95), limits, pcts) == \
        [("window", 50, 95), ("window", 70, 95), ("window", 90, 95)]
    assert warnings_reached(counts(10, 250), limits, pcts) == [("total", 50, 250)]


def test_warning_levels_round_up_for_thresholds_that_do_not_divide() -> None:
    limits = Thresholds(7, 500)
    # 50% of 7 is 3.5: the warning comes at 4 failures, not at 3.
    assert warnings_reached(counts(3, 3), limits, [50]) == []
    assert warnings_reached(counts(4, 4), limits, [50]) == [("window", 50, 4)]


def test_pause_reason_names_counts_thresholds_and_time() -> None:
    reason = pause_reason(counts(100, 120), Thresholds(100, 500), 604800, T0)
    assert reason == ("paused at 2026-01-01T00:00:00+00:00: 100 failed attempts within "
                      "7 days (threshold 100), 120 since the last resume (threshold 500)")
    assert describe_window(3600) == "1 hour"
    assert describe_window(90) == "90 seconds"


def test_maintenance_lock_ids_are_stable_and_distinct() -> None:
    names = ["reap_leases", "expire_holds", "redrive", "retention", "gauges"]
    keys = [lock_key(n) for n in names]
    assert len(set(keys)) == len(keys)
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert lock_key("redrive") == lock_key("redrive")
