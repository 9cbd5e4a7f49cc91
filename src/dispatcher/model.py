"""Statuses, states and reasons shared by every layer."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class DeliveryStatus(IntEnum):
    """Stored as a smallint; unfinished statuses sort before finished ones so the
    due index can use `status < SUCCESS`."""

    PENDING = 0
    RETRYING = 1
    SUCCESS = 2
    FAILED = 3

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @classmethod
    def from_label(cls, label: str) -> DeliveryStatus:
        return cls[label.upper()]


FINISHED = DeliveryStatus.SUCCESS  # status >= FINISHED means no more attempts


def retries_left_shown(status: DeliveryStatus, unused: int, last_failure: str | None) -> int:
    """The `retries_left` a reader sees: retries still to come, counting one that is
    already scheduled (Cobo's meaning). The column counts retries not yet scheduled,
    which is what the backoff schedule is indexed by. An attempt scheduled after a
    rate-limited answer (`last_failure`) spends no retry, so it is not one of them."""
    if status >= FINISHED:
        return 0
    if status == DeliveryStatus.RETRYING and last_failure != FailureReason.RATE_LIMITED:
        return unused + 1
    return unused


class EndpointState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class FailureReason(StrEnum):
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    PROTOCOL_ERROR = "protocol_error"  # an answer that is not valid HTTP
    TLS_ERROR = "tls_error"
    HTTP_STATUS = "http_status"
    REDIRECT = "redirect"
    BLOCKED_ADDRESS = "blocked_address"
    # The receiver's credentials could not be obtained (an OAuth2 token endpoint failed).
    AUTH_ERROR = "auth_error"
    ENDPOINT_PAUSED = "endpoint_paused"
    ENDPOINT_GONE = "endpoint_gone"
    # 429, or 503 with Retry-After: the receiver asked to slow down. Spends no retry
    # and counts toward no pause threshold.
    RATE_LIMITED = "rate_limited"
    # Callbacks only: a 200/201 answer that is not exactly `ok` or `deny`.
    NO_DECISION = "no_decision"
    # Callbacks only: the deadline passed before a decision was recorded.
    DEADLINE_EXPIRED = "deadline_expired"


class EndpointKind(StrEnum):
    WEBHOOK = "webhook"  # receives events
    CALLBACK = "callback"  # answers approval requests with `ok` or `deny`


class CallbackStatus(StrEnum):
    PENDING = "Pending"
    RETRYING = "Retrying"
    APPROVED = "Approved"
    DENIED = "Denied"
    FAILED = "Failed"


CALLBACK_DECIDED = (CallbackStatus.APPROVED, CallbackStatus.DENIED, CallbackStatus.FAILED)


# The tenant an operator acts for when it names none (`Dispatcher-Tenant`, console).
DEFAULT_TENANT = "default"

SIGNING_SCHEMES = ("standard-v1", "standard-v1a", "cobalt", "cobo")
