"""Which endpoint URLs are accepted and which addresses may never be connected to
(SSRF). Pure checks on plain values; the guard that applies the address check to
every request lives in `dispatcher.transport.addresses`."""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

from yarl import URL

from dispatcher.config import UrlPolicyConfig
from dispatcher.errors import ValidationError

IPAddress = IPv4Address | IPv6Address

# IPv4 ranges that are not reachable on the public internet (IANA special-purpose
# registry), named so the reason is obvious when one is added or removed.
_BLOCKED_V4 = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", incl. the unspecified 0.0.0.0
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast 255.255.255.255
    )
)

# IPv6 ranges refused outright. Forms that embed an IPv4 address (mapped,
# NAT64 64:ff9b::/96, 6to4) are judged by the embedded address instead.
_BLOCKED_V6 = tuple(
    IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and deprecated IPv4-compatible ::a.b.c.d
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, incl. Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local (private)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = IPv6Network("64:ff9b::/96")

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
# A last label that is a number makes a host an IPv4 address in some parsers
# (2130706433, 127.1, 0x7f.1); only the canonical dotted quad is accepted.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class BlockedAddressError(OSError):
    """A connection to an address on a blocked network was refused."""

    def __init__(self, host: str, address: str) -> None:
        self.host = host
        self.address = address
        where = address if host == address else f"{host} ({address})"
        super().__init__(f"refused to connect to {where}: address is on a blocked network")

    def __reduce__(self) -> tuple[type[BlockedAddressError], tuple[str, str]]:
        return (type(self), (self.host, self.address))


def parse_ip(value: str) -> IPAddress | None:
    """The address in `value` (brackets and IPv6 zone id allowed), else None."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_blocked_address(ip: str | IPv4Address | IPv6Address) -> bool:
    """True for every address a webhook must never reach: loopback, private,
    link-local, CGNAT, multicast, unspecified, reserved, documentation, and IPv6
    forms that embed any of these. A string that is not an IP address is blocked."""
    addr = parse_ip(ip) if isinstance(ip, str) else ip
    if addr is None:
        return True
    if isinstance(addr, IPv4Address):
        return _is_blocked_v4(addr)
    addr = IPv6Address(int(addr))  # drop any zone id
    embedded = _embedded_ipv4(addr)
    if embedded is not None:
        return _is_blocked_v4(embedded)
    if addr.sixtofour is not None and _is_blocked_v4(addr.sixtofour):
        return True
    return (
        any(addr in net for net in _BLOCKED_V6)
        or addr.is_loopback
        or addr.is_unspecified
        or addr.is_link_local
        or addr.is_site_local
        or addr.is_multicast
        or addr.is_private
        or addr.is_reserved
        or not addr.is_global
    )


def _is_blocked_v4(addr: IPv4Address) -> bool:
    return (
        any(addr in net for net in _BLOCKED_V4)
        or addr.is_loopback
        or addr.is_unspecified
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_private
        or addr.is_reserved
        or not addr.is_global
    )


def _embedded_ipv4(addr: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv4-mapped (::ffff:a.b.c.d) or NAT64
    (64:ff9b::a.b.c.d) address stands for; connecting to one reaches the other."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def is_blocked_error(exc: BaseException) -> bool:
    """True if `exc`, or anything it wraps (`__cause__`, `__context__`, aiohttp's
    `os_error`, exception-group members), is a BlockedAddressError."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BlockedAddressError):
            return True
        linked = [current.__cause__, current.__context__, getattr(current, "os_error", None)]
        if isinstance(current, BaseExceptionGroup):
            linked.extend(current.exceptions)
        pending.extend(e for e in linked if isinstance(e, BaseException))
    return False


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, field="url")


def validate_endpoint_url(url: object, cfg: UrlPolicyConfig) -> str:
    """The endpoint URL, stripped, if the policy accepts it; else ValidationError
    (field "url") saying why. Resolved addresses are checked again at connect time."""
    if not isinstance(url, str):
        raise _invalid("url must be a string")
    text = url.strip()
    if not text:
        raise _invalid("url is required")
    if len(text) > cfg.max_length:
        raise _invalid(f"url must be at most {cfg.max_length} characters")
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in text):
        raise _invalid("url must not contain spaces, control characters or backslashes")
    try:
        parsed = URL(text)
        netloc = urlsplit(text).netloc
    except ValueError as exc:
        raise _invalid(f"url is not a valid URL: {exc}") from exc
    allowed = ("https", "http") if cfg.allow_http else ("https",)
    if parsed.scheme not in allowed:
        raise _invalid("url must use " + " or ".join(allowed)
                       + (_DEV_HINT if parsed.scheme == "http" else ""))
    if not parsed.is_absolute() or not parsed.raw_host:
        raise _invalid("url must include a host")
    if "@" in netloc:
        raise _invalid("url must not contain a user name or password")
    if "#" in text:
        raise _invalid("url must not contain a fragment")
    port = parsed.port
    if not cfg.allow_any_port and port not in (80, 443):
        raise _invalid("url port must be 80 or 443" + _DEV_HINT)
    if port == 0:
        raise _invalid("url port must not be 0")
    _check_host(parsed.raw_host, cfg)
    return text


# What a developer pointing an endpoint at their own machine needs to hear.
_DEV_HINT = ("; to deliver to a receiver on this machine while you develop, run the daemon "
             "in development mode (`make dev`, `dispatcher serve --dev`), never in production")


def _check_host(raw_host: str, cfg: UrlPolicyConfig) -> None:
    host = raw_host.lower()
    if ":" in host:  # yarl gives IPv6 literals without brackets
        if "%" in host:
            raise _invalid("url must not contain an IPv6 zone id")
        addr = parse_ip(host)
        if addr is None:
            raise _invalid("url host is not a valid IPv6 address")
        _check_literal(addr, cfg)
        return
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise _invalid("url host is not a valid host name")
    if _NUMERIC_LABEL.match(labels[-1]):
        addr = parse_ip(name)
        if not isinstance(addr, IPv4Address) or str(addr) != name:
            raise _invalid("url host is not a canonical IPv4 address (use a.b.c.d)")
        _check_literal(addr, cfg)
        return
    if not cfg.allow_private_networks and labels[-1] == "localhost":
        raise _invalid("url host must not be localhost" + _DEV_HINT)


def _check_literal(addr: IPAddress, cfg: UrlPolicyConfig) -> None:
    if not cfg.allow_private_networks and is_blocked_address(addr):
        raise _invalid(f"url host {addr} is a private, loopback, link-local or reserved "
                       "address" + _DEV_HINT)
