"""The one source of time. Everything time-dependent takes a Clock so tests can
advance a FakeClock instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware_utc(start or datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        self._now += timedelta(seconds=seconds, **kwargs)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = _aware_utc(when)


def _aware_utc(when: datetime) -> datetime:
    """A naive datetime would break every comparison with database times."""
    if when.utcoffset() is None:
        raise ValueError(f"FakeClock needs a timezone-aware datetime, got {when!r}")
    return when.astimezone(UTC)


def to_ms(when: datetime) -> int:
    """Unix milliseconds, the unit of every timestamp in the API."""
    return int(when.timestamp() * 1000)


def monotonic() -> float:
    """Monotonic seconds, for measuring durations only (never due times)."""
    return time.monotonic()
