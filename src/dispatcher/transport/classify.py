"""What happened to one request, as a failure reason: pure rules on the status a
receiver answered with and on the error the client raised."""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Collection

import aiohttp

from dispatcher.model import FailureReason
from dispatcher.urlpolicy import is_blocked_error

GONE = 410  # the receiver asks never to be sent to again


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


def _reset(exc: BaseException) -> bool:
    """Closed by the peer: the error itself, or the one aiohttp wraps."""
    inner = getattr(exc, "os_error", None)
    return isinstance(exc, ConnectionResetError | aiohttp.ServerDisconnectedError) or (
        isinstance(inner, ConnectionResetError)
        or (isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET))


def classify_error(exc: BaseException, https: bool = False,
                   client_certificate: bool = False) -> FailureReason:
    """`https` and `client_certificate` say what was attempted: a TLS receiver that
    refuses a client certificate often just closes the connection (no alert),
    during the handshake (TLS 1.2) or right after it (TLS 1.3)."""
    if https and _reset(exc) and (
            client_certificate or isinstance(exc, aiohttp.ClientConnectorError)):
        return FailureReason.TLS_ERROR
    if is_blocked_error(exc):
        return FailureReason.BLOCKED_ADDRESS
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return FailureReason.TIMEOUT
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return FailureReason.TLS_ERROR
    # A status line, header or body the HTTP parser rejected: the receiver answered,
    # just not in HTTP. (ClientResponseError is only raised for parser errors here:
    # statuses are never raised, raise_for_status is off.)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return FailureReason.PROTOCOL_ERROR
    return FailureReason.CONNECT_ERROR
