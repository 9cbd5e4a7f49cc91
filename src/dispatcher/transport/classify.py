"""What happened to one request, as a failure reason: pure rules on the status a
receiver answered with and on the error the client raised."""

from __future__ import annotations

from collections.abc import Collection

from pyreqwest import exceptions as rq

from dispatcher.model import FailureReason
from dispatcher.transport.addresses import ResolveError
from dispatcher.urlpolicy import is_blocked_error

GONE = 410  # the receiver asks never to be sent to again
# Words in reqwest/rustls error chains that say the TLS handshake failed.
_TLS_WORDS = ("certificate", "tls", "handshake", "alert", "corrupt message", "peer sent")


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


# Approval callbacks: a decision is status 200 or 201 and a body that is exactly
# `ok` or `deny` once surrounding ASCII whitespace is removed.
DECISION_STATUSES = frozenset({200, 201})
DECISIONS = frozenset({"ok", "deny"})
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"


def decision_of(status: int | None, body: str | None) -> str | None:
    """`ok` or `deny` when the answer is a decision, else None."""
    if status not in DECISION_STATUSES or body is None:
        return None
    text = body.strip(_ASCII_WHITESPACE)
    return text if text in DECISIONS else None


def error_chain(exc: BaseException) -> str:
    """The client's error and its causes, outermost first, as one line."""
    details = getattr(exc, "details", None)
    causes = details.get("causes") if isinstance(details, dict) else None
    parts = [str(exc.args[0]) if exc.args else type(exc).__name__]
    if isinstance(causes, list):
        parts.extend(str(c.get("message", "")) for c in causes if isinstance(c, dict))
    # The first cause repeats the URL, which says nothing about what went wrong.
    return ": ".join(p for p in parts if p and not p.startswith("error sending request for"))


def classify_error(exc: BaseException) -> FailureReason:
    if is_blocked_error(exc):
        return FailureReason.BLOCKED_ADDRESS
    if isinstance(exc, rq.RequestTimeoutError | TimeoutError):
        return FailureReason.TIMEOUT
    if isinstance(exc, ResolveError):
        return FailureReason.CONNECT_ERROR
    if isinstance(exc, rq.ConnectError):
        chain = error_chain(exc).lower()
        if any(word in chain for word in _TLS_WORDS):
            return FailureReason.TLS_ERROR
        return FailureReason.CONNECT_ERROR
    # A status line, header or body the HTTP parser rejected: the receiver answered,
    # just not in HTTP.
    if isinstance(exc, rq.DecodeError):
        return FailureReason.PROTOCOL_ERROR
    return FailureReason.CONNECT_ERROR
