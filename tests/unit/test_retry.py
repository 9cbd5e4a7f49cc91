"""Retry policies: exact presets, walking a schedule, jitter bounds, Retry-After,
and policies defined in config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import load_config
from dispatcher.retry import (
    PRESETS,
    RetryPolicy,
    exponential,
    jitter_source,
    load_policies,
    parse_retry_after,
    policy_names,
)

MIN = 60.0
HOUR = 3600.0
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


# --- presets ------------------------------------------------------------------------------


def test_preset_names() -> None:
    assert set(PRESETS) == {"okx", "exponential-3", "standard", "cobo", "callback", "none"}
    for name, policy in PRESETS.items():
        assert policy.name == name


def test_okx_is_1_5_10_30_60_120_240_minutes() -> None:
    okx = PRESETS["okx"]
    assert okx.delays == (1 * MIN, 5 * MIN, 10 * MIN, 30 * MIN, 60 * MIN, 120 * MIN, 240 * MIN)
    assert okx.retries == 7  # 8 attempts in all
    assert okx.jitter == 0


def test_exponential_3_is_60_120_240_seconds() -> None:
    policy = PRESETS["exponential-3"]
    assert policy.delays == (60.0, 120.0, 240.0)
    assert policy.retries == 3


def test_standard_webhooks_schedule() -> None:
    policy = PRESETS["standard"]
    assert policy.delays == (5.0, 5 * MIN, 30 * MIN, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR)
    assert policy.retries == 7


def test_cobo_has_10_retries_doubling_from_30s_capped_at_an_hour() -> None:
    policy = PRESETS["cobo"]
    assert policy.retries == 10
    assert policy.delays == (30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, HOUR, HOUR, HOUR)


def test_none_has_no_retries() -> None:
    assert PRESETS["none"].retries == 0
    assert PRESETS["none"].delay_after(0) is None


# --- walking a schedule -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_delay_after_walks_the_schedule_in_order(name: str) -> None:
    policy = PRESETS[name]
    walked = []
    retries_left = policy.retries  # a new delivery starts with every retry unused
    while (delay := policy.delay_after(retries_left)) is not None:
        walked.append(delay)
        retries_left -= 1
    assert tuple(walked) == policy.delays
    assert retries_left == 0


def test_delay_after_returns_none_at_zero_or_below() -> None:
    policy = PRESETS["okx"]
    assert policy.delay_after(0) is None
    assert policy.delay_after(-1) is None
    assert policy.delay_after(1) == 240 * MIN  # the last retry uses the last delay


def test_more_retries_left_than_the_policy_has_starts_at_the_first_delay() -> None:
    # A delivery created under a longer policy whose endpoint switched to a shorter one.
    assert PRESETS["exponential-3"].delay_after(7) == 60.0


def test_a_policy_without_delays_never_schedules_a_retry() -> None:
    # An endpoint switched to "none" while a delivery still had retries left.
    assert PRESETS["none"].delay_after(5) is None
    assert RetryPolicy("empty", ()).delay_after(1) is None


def test_exponential_builder_caps_at_max_delay() -> None:
    policy = exponential("e", retries=6, base=10.0, factor=3.0, max_delay=500.0)
    assert policy.delays == (10.0, 30.0, 90.0, 270.0, 500.0, 500.0)


# --- jitter -----------------------------------------------------------------------------


def test_no_jitter_at_rand_one_half() -> None:
    policy = RetryPolicy("j", (100.0, 200.0), jitter=0.5)
    assert policy.delay_after(2) == 100.0
    assert policy.delay_after(1) == 200.0


@given(
    delays=st.lists(st.floats(0, 10 * 86400, allow_nan=False), min_size=1, max_size=12),
    jitter=st.floats(0, 0.99),
    rand=st.floats(0, 1, exclude_max=True),
    data=st.data(),
)
def test_jitter_stays_within_bounds(
    delays: list[float], jitter: float, rand: float, data: st.DataObject
) -> None:
    policy = RetryPolicy("j", tuple(delays), jitter)
    retries_left = data.draw(st.integers(1, len(delays)))
    base = delays[len(delays) - retries_left]
    delay = policy.delay_after(retries_left, rand)
    assert delay is not None
    assert delay >= 0
    tolerance = 1e-9 * max(base, 1.0)
    assert base * (1 - jitter) - tolerance <= delay <= base * (1 + jitter) + tolerance


def test_jitter_spreads_both_ways() -> None:
    policy = RetryPolicy("j", (100.0,), jitter=0.1)
    assert policy.delay_after(1, 0.0) == pytest.approx(90.0)
    assert policy.delay_after(1, 0.999999) == pytest.approx(110.0, abs=1e-3)


def test_jitter_source_is_in_unit_interval() -> None:
    draws = [jitter_source() for _ in range(200)]
    assert all(0 <= d < 1 for d in draws)
    assert len(set(draws)) > 1


# --- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("  7 ", 7.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("12abc", None),
        ("\u00b2", None),  # a Unicode superscript two: isdigit() but not a number
        ("\u0663", None),  # Arabic-Indic three: not RFC 9110 delta-seconds
        ("Wed, 32 Foo 2015 07:28:00 GMT", None),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date_in_the_future() -> None:
    header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(header, NOW) == 90.0


def test_retry_after_http_date_in_the_past_means_now() -> None:
    header = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(header, NOW) == 0.0


def test_retry_after_rfc850_and_asctime_dates() -> None:
    # Obsolete formats recipients must still accept (RFC 9110 section 5.6.7).
    assert parse_retry_after("Sunday, 01-Mar-26 12:01:00 GMT", NOW) == 60.0


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0


# --- policies from config ------------------------------------------------------------------------


def test_config_defined_policies(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("""
[retry_policies.gentle]
kind = "exponential"
retries = 4
base_seconds = 30.0
factor = 2.0
max_delay_seconds = 100.0
jitter = 0.1

[retry_policies.steps]
kind = "fixed"
delays = [1, 2, 3]

[retry_policies.okx]
kind = "fixed"
delays = [10]
""")
    cfg = load_config(path, environ={})
    policies = load_policies(cfg)
    assert policies["gentle"] == RetryPolicy("gentle", (30.0, 60.0, 100.0, 100.0), 0.1)
    assert policies["steps"] == RetryPolicy("steps", (1.0, 2.0, 3.0))
    assert policies["okx"].delays == (10.0,)  # config replaces a preset of the same name
    assert policies["standard"] == PRESETS["standard"]  # the other presets stay
    assert PRESETS["okx"].retries == 7  # and the preset table itself is untouched
    assert policy_names(cfg) == set(PRESETS) | {"gentle", "steps"}
