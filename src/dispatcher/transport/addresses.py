"""The connect-time SSRF guard: host names are resolved here, every address they
resolve to is checked, and the client connects only to the checked addresses (the
client's resolver answers from this guard), so a name that rebinds between the
check and the connect cannot reach anything else. IP literals are checked as
written."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dispatcher.clock import monotonic
from dispatcher.urlpolicy import BlockedAddressError, is_blocked_address, parse_ip

# (host, port) -> the addresses it resolves to, in the resolver's order of preference.
Resolve = Callable[[str, int], Awaitable[list[str]]]

DNS_TTL_SECONDS = 60.0
MAX_CACHED_NAMES = 10_000


class ResolveError(OSError):
    """A host name that did not resolve (classified as a connect error)."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        super().__init__(f"could not resolve {host}: {reason}")


async def system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolveError(host, exc.strerror or str(exc)) from exc
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one request goes. `address` is the first of the checked addresses the
    client will connect to (its resolver answers from the guard), or None when no
    name is resolved here (an IP literal, an unguarded client, or a proxy that
    resolves the name)."""

    host: str
    port: int
    address: str | None


class AddressGuard:
    """Resolves and checks destinations. Unguarded (private networks allowed), it
    checks nothing and lets the client resolve. With a proxy, names are still
    resolved and refused if any address is blocked, but the proxy connects, so a
    name we cannot resolve is left to the proxy's own egress rules."""

    def __init__(self, guarded: bool, proxied: bool = False,
                 resolve: Resolve = system_resolve,
                 clock: Callable[[], float] = monotonic,
                 blocked: Callable[[str], bool] = is_blocked_address) -> None:
        self.guarded = guarded
        self._proxied = proxied
        self._resolve = resolve
        self._clock = clock
        self._blocked = blocked
        self.exempt: frozenset[str] = frozenset()
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}

    def is_blocked(self, address: str) -> bool:
        return self.guarded and self._blocked(address)

    async def check(self, host: str, port: int) -> Destination:
        if not self.guarded:
            return Destination(host, port, None)
        literal = parse_ip(host)
        if literal is not None:
            if self._blocked(str(literal)):
                raise BlockedAddressError(host, str(literal))
            return Destination(host, port, None)
        try:
            addresses = await self._addresses(host, port)
        except ResolveError:
            if self._proxied:
                return Destination(host, port, None)
            raise
        # A name that mixes public and internal addresses is refused as a whole.
        for address in addresses:
            if self._blocked(address):
                raise BlockedAddressError(host, address)
        return Destination(host, port, None if self._proxied else addresses[0])

    async def addresses(self, host: str, port: int) -> list[str]:
        """What `host` resolves to, every address checked (unless unguarded, or the
        host is exempt: the proxy's own, which may well be internal)."""
        if not self.guarded or host in self.exempt:
            return await self._resolve(host, port)
        addresses = await self._addresses(host, port)
        for address in addresses:
            if self._blocked(address):
                raise BlockedAddressError(host, address)
        return addresses

    async def _addresses(self, host: str, port: int) -> list[str]:
        key = (host, port)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = await self._resolve(host, port)
        if not addresses:
            raise ResolveError(host, "no addresses")
        if len(self._cache) >= MAX_CACHED_NAMES:
            self._cache.clear()
        self._cache[key] = (now + DNS_TTL_SECONDS, addresses)
        return addresses
