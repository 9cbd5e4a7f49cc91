"""The connect-time SSRF guard: whatever a host name resolves to, and whatever IP
literal a URL names, no socket is connected to a blocked address. Two hooks on
the aiohttp TCPConnector: a resolver that refuses a name if any of its addresses
is blocked, and a socket factory that checks the exact address about to be
connected (aiohttp skips the resolver for IP literals)."""

from __future__ import annotations

import socket

from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from dispatcher.urlpolicy import BlockedAddressError, is_blocked_address


class GuardedResolver(AbstractResolver):
    """Wraps a resolver (the thread-pool one by default) and raises
    BlockedAddressError if any address a name resolves to is blocked, so a name
    that mixes public and internal addresses is refused as a whole."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if is_blocked_address(result["host"]):
                raise BlockedAddressError(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(addr_info: AddrInfoType) -> socket.socket:
    """aiohttp `socket_factory`: refuse before a socket exists if the address
    about to be connected is blocked (covers IP literals and anything that
    bypassed the resolver)."""
    family, type_, proto, _, sockaddr = addr_info
    address = str(sockaddr[0])
    if is_blocked_address(address):
        raise BlockedAddressError(address, address)
    return socket.socket(family=family, type=type_, proto=proto)
