"""The clock: SystemClock tells real UTC time; FakeClock only moves when told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatcher.clock import Clock, FakeClock, SystemClock, monotonic, to_ms


def test_system_clock_is_tz_aware_utc_and_current() -> None:
    clock: Clock = SystemClock()
    before = datetime.now(UTC)
    now = clock.now()
    after = datetime.now(UTC)
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after


def test_fake_clock_starts_at_a_fixed_tz_aware_time() -> None:
    clock: Clock = FakeClock()
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.now().utcoffset() == timedelta(0)
    assert clock.now() == clock.now()  # it does not move by itself


def test_fake_clock_advance() -> None:
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    clock = FakeClock(start)
    assert clock.advance(30) == start + timedelta(seconds=30)
    assert clock.advance(minutes=5) == start + timedelta(minutes=5, seconds=30)
    clock.advance(hours=1, seconds=0.25)
    assert clock.now() == start + timedelta(hours=1, minutes=5, seconds=30.25)
    assert clock.advance() == clock.now()  # zero is allowed
    assert clock.now().tzinfo is not None


def test_fake_clock_set() -> None:
    clock = FakeClock()
    when = datetime(2030, 2, 3, 4, 5, 6, tzinfo=UTC)
    clock.set(when)
    assert clock.now() == when
    clock.set(datetime(2020, 1, 1, tzinfo=UTC))  # tests may move it back on purpose
    assert clock.now().year == 2020


def test_fake_clock_accepts_other_zones_as_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    clock = FakeClock(datetime(2026, 1, 1, 2, 0, tzinfo=plus_two))
    assert clock.now() == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert clock.now().utcoffset() == timedelta(0)


def test_fake_clock_refuses_naive_datetimes() -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="timezone"):
        FakeClock(naive)
    clock = FakeClock()
    with pytest.raises(ValueError, match="timezone"):
        clock.set(naive)
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)  # unchanged


def test_to_ms() -> None:
    assert to_ms(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert to_ms(datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)) == 1767225601500


def test_monotonic_never_goes_back() -> None:
    readings = [monotonic() for _ in range(100)]
    assert readings == sorted(readings)
