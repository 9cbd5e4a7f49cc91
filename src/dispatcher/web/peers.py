"""Who is calling: the client's address, believing `X-Forwarded-For` only from the
load balancers listed in `server.trusted_proxies`. For both front ends (the API's
failed-authentication limit, the console's cookies behind a TLS-terminating
proxy)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from aiohttp import web

from dispatcher.web.context import CONFIG

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the
    right-most X-Forwarded-For entry that is not a trusted proxy (entries to its left
    are the client's own claims and cannot be believed)."""
    address = peer or "unknown"

    def is_trusted(text: str) -> bool:
        ip = _ip(text)
        return ip is not None and any(ip in net for net in trusted)

    if not trusted or not forwarded_for or not is_trusted(address):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if _ip(hop) is None:
            break  # garbage: stop at the last address we could believe
        address = hop
        if not is_trusted(hop):
            break
    return address


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(cidrs)


def request_address(request: web.Request) -> str:
    """The address of the client making `request` (for the audit log)."""
    trusted = _networks(tuple(request.app[CONFIG].server.trusted_proxies))
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), trusted)
