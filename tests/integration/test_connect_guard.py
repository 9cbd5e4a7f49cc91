"""The connect-time SSRF guard on the process's real transport: a POST to a
blocked address fails with a blocked-address error and never opens a TCP
connection; with private networks allowed the same POST arrives; a name is sent
to the address that was checked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from dispatcher.clock import SystemClock
from dispatcher.config import Config
from dispatcher.model import FailureReason
from dispatcher.transport import Exchange, Transport
from dispatcher.transport.addresses import DNS_TTL_SECONDS, AddressGuard
from tests.support.receiver import Receiver


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class ConnectionCounter:
    """A TCP listener that counts every accepted connection and answers any
    request with 200, so "no connection was ever opened" can be asserted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str) -> None:
        self.server = await asyncio.start_server(self._serve, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def counter_v4() -> AsyncIterator[ConnectionCounter]:
    c = ConnectionCounter()
    await c.start("127.0.0.1")
    yield c
    await c.stop()


@pytest.fixture
async def counter_v6() -> AsyncIterator[ConnectionCounter]:
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback not available")
    c = ConnectionCounter()
    await c.start("::1")
    yield c
    await c.stop()


def guarded(make_config: Callable[..., Config]) -> Transport:
    config = make_config(urls__allow_private_networks="false")
    assert not config.urls.allow_private_networks
    return Transport.from_config(config)


async def post(transport: Transport, url: str) -> Exchange:
    async with transport:
        return await transport.send(url, b'{"type": "ping"}', {"Content-Type": "application/json"},
                                    timeout=5, body_limit=4096, started_at=SystemClock().now())


async def assert_refused(transport: Transport, url: str) -> Exchange:
    result = await post(transport, url)
    assert result.failure == FailureReason.BLOCKED_ADDRESS, result
    assert result.status is None
    return result


# Host forms that reach the IPv4 loopback listener.
V4_LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"]


@pytest.mark.parametrize("host", V4_LOOPBACK_HOSTS)
async def test_post_to_loopback_is_refused_and_never_arrives(
    host: str, make_config: Callable[..., Config], receiver: Receiver,
    counter_v4: ConnectionCounter,
) -> None:
    await assert_refused(guarded(make_config), f"http://{host}:{receiver.port}/hook")
    await assert_refused(guarded(make_config), f"http://{host}:{counter_v4.port}/hook")
    assert receiver.requests == []
    assert counter_v4.accepted == 0


async def test_post_to_ipv6_loopback_is_refused_and_never_connects(
    make_config: Callable[..., Config], counter_v6: ConnectionCounter
) -> None:
    await assert_refused(guarded(make_config), f"http://[::1]:{counter_v6.port}/hook")
    assert counter_v6.accepted == 0


async def test_refusal_names_the_address(
    make_config: Callable[..., Config], receiver: Receiver
) -> None:
    result = await assert_refused(guarded(make_config), f"http://127.0.0.1:{receiver.port}/hook")
    assert result.error_detail is not None
    assert "127.0.0.1" in result.error_detail
    assert "blocked" in result.error_detail


@pytest.mark.parametrize("host", V4_LOOPBACK_HOSTS)
async def test_private_networks_allowed_reaches_the_receiver(
    host: str, make_config: Callable[..., Config], receiver: Receiver,
    counter_v4: ConnectionCounter,
) -> None:
    config = make_config(urls__allow_private_networks="true")
    result = await post(Transport.from_config(config), f"http://{host}:{receiver.port}/hook")
    assert result.status == 200, result
    assert len(receiver.requests) == 1
    assert receiver.requests[0].body == b'{"type": "ping"}'
    result = await post(Transport.from_config(config), f"http://{host}:{counter_v4.port}/hook")
    assert result.status == 200
    assert counter_v4.accepted == 1


async def test_private_networks_allowed_reaches_ipv6_loopback(
    make_config: Callable[..., Config], counter_v6: ConnectionCounter
) -> None:
    config = make_config(urls__allow_private_networks="true")
    result = await post(Transport.from_config(config), f"http://[::1]:{counter_v6.port}/hook")
    assert result.status == 200
    assert counter_v6.accepted == 1


async def test_the_request_goes_to_the_checked_address_whatever_dns_says_later(
    receiver: Receiver, counter_v4: ConnectionCounter,
) -> None:
    """DNS rebinding between check and connect: the name is resolved once, checked,
    and the client connects to that address (the name itself resolves nowhere, so
    arriving proves the client did no lookup of its own); the Host header keeps the
    name. The next lookup (after the TTL) answers a blocked address and is refused."""
    answers = [["127.0.0.1"], ["10.0.0.1"]]
    ticks = [0.0]

    async def resolve(host: str, port: int) -> list[str]:
        return answers.pop(0)

    guard = AddressGuard(True, resolve=resolve, clock=lambda: ticks[0],
                         blocked=lambda a: a != "127.0.0.1")  # loopback stands for public
    transport = Transport(guarded=True, guard=guard)
    url = f"http://rebind.invalid:{receiver.port}/hook"
    async with transport:
        first = await transport.send(url, b"{}", {}, timeout=5, body_limit=4096,
                                     started_at=SystemClock().now())
        ticks[0] = DNS_TTL_SECONDS + 1
        second = await transport.send(f"http://rebind.invalid:{counter_v4.port}/hook", b"{}",
                                      {}, timeout=5, body_limit=4096,
                                      started_at=SystemClock().now())
    assert first.status == 200, first
    assert receiver.requests[0].headers["Host"] == f"rebind.invalid:{receiver.port}"
    assert second.failure == FailureReason.BLOCKED_ADDRESS
    assert counter_v4.accepted == 0
