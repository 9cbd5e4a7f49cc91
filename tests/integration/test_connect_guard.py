"""The connect-time SSRF guard on the process's real client session: a POST to a
blocked address fails with a blocked-address error and never opens a TCP
connection; with private networks allowed the same POST arrives."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from dispatcher.config import Config
from dispatcher.engine.http import create_client_session
from dispatcher.urlpolicy import is_blocked_error
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


def guarded_config(make_config: Callable[..., Config]) -> Config:
    config = make_config(urls__allow_private_networks="false")
    assert not config.urls.allow_private_networks
    return config


async def post(config: Config, url: str) -> int:
    async with (
        create_client_session(config) as http,
        http.post(url, json={"type": "ping"}, timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        return resp.status


async def assert_refused(config: Config, url: str) -> None:
    with pytest.raises(aiohttp.ClientError) as info:
        await post(config, url)
    assert is_blocked_error(info.value), repr(info.value)


# Host forms that reach the IPv4 loopback listener.
V4_LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"]


@pytest.mark.parametrize("host", V4_LOOPBACK_HOSTS)
async def test_post_to_loopback_is_refused_and_never_arrives(
    host: str, make_config: Callable[..., Config], receiver: Receiver,
    counter_v4: ConnectionCounter,
) -> None:
    config = guarded_config(make_config)
    await assert_refused(config, f"http://{host}:{receiver.port}/hook")
    await assert_refused(config, f"http://{host}:{counter_v4.port}/hook")
    assert receiver.requests == []
    assert counter_v4.accepted == 0


async def test_post_to_ipv6_loopback_is_refused_and_never_connects(
    make_config: Callable[..., Config], counter_v6: ConnectionCounter
) -> None:
    await assert_refused(guarded_config(make_config), f"http://[::1]:{counter_v6.port}/hook")
    assert counter_v6.accepted == 0


async def test_refusal_is_a_connector_error_naming_the_address(
    make_config: Callable[..., Config], receiver: Receiver
) -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(guarded_config(make_config), f"http://127.0.0.1:{receiver.port}/hook")
    assert "127.0.0.1" in str(info.value.os_error)
    assert "blocked" in str(info.value.os_error)


@pytest.mark.parametrize("host", V4_LOOPBACK_HOSTS)
async def test_private_networks_allowed_reaches_the_receiver(
    host: str, make_config: Callable[..., Config], receiver: Receiver,
    counter_v4: ConnectionCounter,
) -> None:
    config = make_config(urls__allow_private_networks="true")
    assert await post(config, f"http://{host}:{receiver.port}/hook") == 200
    assert len(receiver.requests) == 1
    assert receiver.requests[0].body == b'{"type": "ping"}'
    assert await post(config, f"http://{host}:{counter_v4.port}/hook") == 200
    assert counter_v4.accepted == 1


async def test_private_networks_allowed_reaches_ipv6_loopback(
    make_config: Callable[..., Config], counter_v6: ConnectionCounter
) -> None:
    config = make_config(urls__allow_private_networks="true")
    assert await post(config, f"http://[::1]:{counter_v6.port}/hook") == 200
    assert counter_v6.accepted == 1
