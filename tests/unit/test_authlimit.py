"""The per-address failed-authentication window and the client address behind
trusted proxies."""

from __future__ import annotations

from dispatcher.api.authlimit import AuthFailures
from dispatcher.web.peers import client_address, parse_networks

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1/32"])


def test_the_limit_blocks_until_the_window_ends() -> None:
    now = [1000.0]
    limiter = AuthFailures(limit=3, window=60, now=lambda: now[0])
    for _ in range(2):
        limiter.record("a")
    assert limiter.blocked_for("a") is None
    limiter.record("a")
    assert limiter.blocked_for("a") == 60
    assert limiter.blocked_for("b") is None  # per address
    now[0] += 59.5
    assert limiter.blocked_for("a") == 0.5
    now[0] += 0.5
    assert limiter.blocked_for("a") is None
    limiter.record("a")  # a new window starts with one failure
    assert limiter.blocked_for("a") is None


def test_zero_means_off() -> None:
    limiter = AuthFailures(limit=0, window=60)
    for _ in range(100):
        limiter.record("a")
    assert limiter.blocked_for("a") is None


def test_client_address_believes_only_trusted_hops() -> None:
    # No proxies configured: the peer, whatever the header says.
    assert client_address("10.1.1.1", "203.0.113.9", ()) == "10.1.1.1"
    # From an untrusted peer the header is ignored.
    assert client_address("198.51.100.1", "203.0.113.9", PROXIES) == "198.51.100.1"
    # From a trusted proxy: the right-most untrusted entry.
    assert client_address("10.1.1.1", "203.0.113.9", PROXIES) == "203.0.113.9"
    assert client_address("10.1.1.1", "1.2.3.4, 203.0.113.9, 10.2.2.2", PROXIES) == "203.0.113.9"
    # Garbage stops the walk at the last address that could be believed.
    assert client_address("10.1.1.1", "203.0.113.9, junk", PROXIES) == "10.1.1.1"
    assert client_address("10.1.1.1", None, PROXIES) == "10.1.1.1"
    assert client_address(None, None, PROXIES) == "unknown"
