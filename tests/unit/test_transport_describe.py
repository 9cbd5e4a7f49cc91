"""How a failed connection reads in an attempt's error_detail and in the CLI: the
host and port and what happened, not aiohttp's connector text."""

from __future__ import annotations

import errno

import aiohttp

from dispatcher.transport.send import describe


def _key(host: str, port: int) -> aiohttp.client_reqrep.ConnectionKey:
    return aiohttp.client_reqrep.ConnectionKey(host, port, False, True, None, None, None)


def test_a_refused_connection_says_nothing_is_listening() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    text = describe(aiohttp.ClientConnectorError(_key("127.0.0.1", 8081), refused))
    assert text == "nothing is listening on 127.0.0.1:8081 (connection refused)"


def test_other_connection_failures_name_the_reason() -> None:
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    text = describe(aiohttp.ClientConnectorError(_key("10.1.2.3", 443), unreachable))
    assert text == "cannot connect to 10.1.2.3:443: Network is unreachable"
    assert "ssl:" not in text


def test_anything_else_keeps_its_class_and_message() -> None:
    assert describe(ValueError("bad")) == "ValueError: bad"
