"""Pure backoff policies: given how many retries are left, when is the next attempt?

A policy is a tuple of delays, one per retry, each counted from the previous
failed attempt. `fixed` policies list them; `exponential` ones derive them from
base * factor**n, capped. Presets cover the provider profiles; config adds more.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from dispatcher.errors import ConfigError
from dispatcher.model import DeliveryStatus

MINUTE = 60.0
HOUR = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    name: str
    delays: tuple[float, ...]
    jitter: float = 0.0  # fraction: 0.1 spreads each delay over +-10%

    @property
    def retries(self) -> int:
        return len(self.delays)

    def delay_after(self, retries_left: int, rand: float = 0.5) -> float | None:
        """Seconds until the next attempt after a failure with `retries_left`
        retries still unused (before this one), or None when none are left.
        `rand` in [0, 1) drives jitter; 0.5 means none."""
        if retries_left <= 0 or not self.delays:
            return None
        index = min(max(self.retries - retries_left, 0), self.retries - 1)
        base = self.delays[index]
        return base * (1 + self.jitter * (2 * rand - 1))


def exponential(
    name: str,
    retries: int,
    base: float,
    factor: float = 2.0,
    max_delay: float = 86400.0,
    jitter: float = 0.0,
) -> RetryPolicy:
    delays = tuple(min(base * factor**n, max_delay) for n in range(retries))
    return RetryPolicy(name, delays, jitter)


PRESETS: dict[str, RetryPolicy] = {
    p.name: p
    for p in (
        # OKX: 7 retries after the first attempt, 8 attempts in all.
        RetryPolicy("okx", (1 * MINUTE, 5 * MINUTE, 10 * MINUTE, 30 * MINUTE,
                            1 * HOUR, 2 * HOUR, 4 * HOUR)),
        # Cobalt: 3 retries, exponential: 1, 2, 4 minutes.
        exponential("exponential-3", retries=3, base=MINUTE),
        # The Standard Webhooks example schedule.
        RetryPolicy("standard", (5.0, 5 * MINUTE, 30 * MINUTE, 2 * HOUR,
                                 5 * HOUR, 10 * HOUR, 10 * HOUR)),
        # Cobo: 10 retries; 30 s doubling, capped at an hour.
        exponential("cobo", retries=10, base=30.0, max_delay=HOUR),
        # Approval callbacks (Cobo retries them up to 30 times): 5 x 1 s, 5 x 2 s,
        # 10 x 5 s, 10 x 10 s, i.e. 165 s of waits between 31 attempts, which fits
        # the default 5-minute deadline even when every attempt takes its 2 s timeout.
        RetryPolicy("callback", (1.0,) * 5 + (2.0,) * 5 + (5.0,) * 10 + (10.0,) * 10),
        # No retries at all: one attempt.
        RetryPolicy("none", ()),
    )
}


@dataclass(frozen=True)
class RetryPolicyConfig:
    """A `[retry_policies.NAME]` table of the config."""

    kind: Literal["fixed", "exponential"] = "fixed"
    delays: list[float] = field(default_factory=list)
    retries: int = 0
    base_seconds: float = 60.0
    factor: float = 2.0
    max_delay_seconds: float = 86400.0
    jitter: float = 0.0


class PolicyConfig(Protocol):
    """What building the policies needs of the config (`dispatcher.config.Config`)."""

    @property
    def retry_policies(self) -> Mapping[str, RetryPolicyConfig]: ...


def policy_from_config(name: str, cfg: RetryPolicyConfig) -> RetryPolicy:
    if cfg.kind == "fixed":
        return RetryPolicy(name, tuple(cfg.delays), cfg.jitter)
    return exponential(name, cfg.retries, cfg.base_seconds, cfg.factor,
                       cfg.max_delay_seconds, cfg.jitter)


def validate_policies(policies: Mapping[str, RetryPolicyConfig]) -> None:
    for name, cfg in policies.items():
        key = f"retry_policies.{name}"
        if cfg.kind == "fixed" and not cfg.delays:
            raise ConfigError(f"{key}.delays: a fixed policy needs at least one delay",
                              field=f"{key}.delays")
        if any(d < 0 for d in cfg.delays):
            raise ConfigError(f"{key}.delays: delays must be >= 0", field=f"{key}.delays")
        if cfg.kind == "exponential" and not 0 <= cfg.retries <= 100:
            raise ConfigError(f"{key}.retries: must be between 0 and 100",
                              field=f"{key}.retries")
        if cfg.kind == "exponential" and cfg.base_seconds < 0:
            raise ConfigError(f"{key}.base_seconds: must be >= 0",
                              field=f"{key}.base_seconds")
        if cfg.kind == "exponential" and cfg.factor < 1:
            raise ConfigError(f"{key}.factor: must be >= 1", field=f"{key}.factor")
        if not 0 <= cfg.jitter < 1:
            raise ConfigError(f"{key}.jitter: must be in [0, 1)", field=f"{key}.jitter")


def load_policies(config: PolicyConfig) -> dict[str, RetryPolicy]:
    """Presets, with config-defined policies added (or replacing a preset)."""
    policies = dict(PRESETS)
    for name, cfg in config.retry_policies.items():
        policies[name] = policy_from_config(name, cfg)
    return policies


def policy_names(config: PolicyConfig) -> set[str]:
    return set(PRESETS) | set(config.retry_policies)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # delta-seconds is ASCII digits only
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


def jitter_source() -> float:
    """Random draw for jitter; a function so tests can see where randomness enters."""
    return random.random()


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
