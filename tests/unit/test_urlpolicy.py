"""URL validation at create/update time and the address block list."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.config import UrlPolicyConfig
from dispatcher.errors import ValidationError
from dispatcher.transport.addresses import DNS_TTL_SECONDS, AddressGuard, Destination, ResolveError
from dispatcher.urlpolicy import (
    BlockedAddressError,
    is_blocked_address,
    is_blocked_error,
    validate_endpoint_url,
)

STRICT = UrlPolicyConfig()  # the production defaults: https, 80/443, no private networks


def url_of_length(n: int) -> str:
    base = "https://example.com/"
    return base + "a" * (n - len(base))


# ---------------------------------------------------------------- validate_endpoint_url


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://example.com:443/hook",
        "https://example.com:80/hook",
        "https://api.example.com/hooks/in?tenant=7&x=1",
        "https://8.8.8.8/hook",
        "https://[2606:4700::1111]/hook",
        "https://bücher.de/hook",
        "https://xn--bcher-kva.de/hook",
        "https://my_host.example.com/",
        "https://example.com./",
        url_of_length(500),
    ],
)
def test_accepts_public_https_urls(url: str) -> None:
    assert validate_endpoint_url(url, STRICT) == url


def test_returns_the_url_stripped() -> None:
    assert validate_endpoint_url("  https://example.com/x \n", STRICT) == "https://example.com/x"


REJECTED: list[tuple[object, str]] = [
    (None, "must be a string"),
    (42, "must be a string"),
    ("", "required"),
    ("   ", "required"),
    (url_of_length(501), "at most 500 characters"),
    ("http://example.com/", "must use https"),
    ("ftp://example.com/", "must use https"),
    ("example.com/hook", "must use https"),
    ("//example.com/hook", "must use https"),
    ("https:///hook", "must include a host"),
    ("https:example.com", "must include a host"),
    ("https://example.com:8080/", "port must be 80 or 443"),
    ("https://example.com:444/", "port must be 80 or 443"),
    ("https://example.com:99999/", "not a valid URL"),
    ("https://user:pass@example.com/", "user name or password"),
    ("https://user@example.com/", "user name or password"),
    ("https://@example.com/", "user name or password"),
    ("https://example.com/hook#frag", "fragment"),
    ("https://example.com/hook#", "fragment"),
    ("https://exa mple.com/", "spaces"),
    ("https://example.com/\x00", "control characters"),
    ("https://example.com\\@evil.com/", "backslashes"),
    ("https://exa%6dple.com/", "not a valid host name"),
    ("https://-bad-.example.com/", "not a valid host name"),
    ("https://localhost/", "localhost"),
    ("https://LOCALHOST./", "localhost"),
    ("https://api.localhost/", "localhost"),
    ("https://127.0.0.1/", "127.0.0.1 is a private"),
    ("https://10.1.2.3/", "private"),
    ("https://169.254.169.254/latest/meta-data", "private"),
    ("https://[::1]/", "private"),
    ("https://[::ffff:127.0.0.1]/", "private"),
    ("https://[::ffff:169.254.169.254]/", "private"),
    ("https://[64:ff9b::a9fe:a9fe]/", "private"),
    ("https://[fe80::1%25eth0]/", "zone id"),
    ("https://2130706433/", "canonical IPv4"),
    ("https://127.1/", "canonical IPv4"),
    ("https://0x7f.0.0.1/", "canonical IPv4"),
    ("https://017.0.0.1/", "canonical IPv4"),
]


@pytest.mark.parametrize(("url", "reason"), REJECTED)
def test_rejects_with_a_clear_message_on_the_url_field(url: object, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_endpoint_url(url, STRICT)
    assert info.value.field == "url"
    assert info.value.status == 422
    assert reason in info.value.message


def test_max_length_follows_config() -> None:
    cfg = UrlPolicyConfig(max_length=30)
    assert validate_endpoint_url(url_of_length(30), cfg)
    with pytest.raises(ValidationError, match="at most 30 characters"):
        validate_endpoint_url(url_of_length(31), cfg)


def test_http_only_when_allowed() -> None:
    cfg = UrlPolicyConfig(allow_http=True)
    assert validate_endpoint_url("http://example.com/", cfg) == "http://example.com/"
    assert validate_endpoint_url("http://example.com:443/", cfg)
    with pytest.raises(ValidationError, match="must use https or http"):
        validate_endpoint_url("ftp://example.com/", cfg)


def test_any_port_only_when_allowed() -> None:
    cfg = UrlPolicyConfig(allow_any_port=True)
    assert validate_endpoint_url("https://example.com:8080/", cfg)
    assert validate_endpoint_url("https://example.com:65535/", cfg)
    with pytest.raises(ValidationError, match="port must not be 0"):
        validate_endpoint_url("https://example.com:0/", cfg)


def test_private_hosts_only_when_allowed() -> None:
    cfg = UrlPolicyConfig(allow_private_networks=True, allow_http=True, allow_any_port=True)
    for url in (
        "http://localhost:8080/hook",
        "http://127.0.0.1:9000/",
        "http://[::1]:9000/",
        "https://10.0.0.5/",
        "https://169.254.169.254/",
    ):
        assert validate_endpoint_url(url, cfg) == url
    # still refused: they are malformed, not merely private
    for url in ("http://127.1/", "http://[fe80::1%25lo]/", "http://u:p@localhost/"):
        with pytest.raises(ValidationError):
            validate_endpoint_url(url, cfg)


# ------------------------------------------------------------------- is_blocked_address

BLOCKED = [
    "127.0.0.1", "127.255.255.254",  # loopback
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",  # private
    "169.254.169.254", "169.254.0.1",  # link-local, cloud metadata
    "100.64.0.1", "100.127.255.254",  # carrier-grade NAT
    "224.0.0.1", "239.255.255.250",  # multicast
    "0.0.0.0", "0.1.2.3",  # unspecified, "this network"
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "192.0.2.10", "198.51.100.1", "203.0.113.9", "198.18.0.1", "192.0.0.8",
    "::1", "::",  # loopback, unspecified
    "fc00::1", "fd12:3456::1",  # unique local
    "fe80::1", "fe80::1%eth0",  # link-local
    "fec0::1",  # site-local
    "ff02::1", "ff0e::1",  # multicast
    "2001:db8::1", "100::1", "2001::1",  # documentation, discard, Teredo
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:0.0.0.0",
    "::127.0.0.1", "::10.0.0.1", "::8.8.8.8",  # deprecated IPv4-compatible
    "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b::192.168.0.1",  # NAT64
    "64:ff9b:1::8.8.8.8",  # local-use NAT64
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::",  # 6to4
    "not an address", "", "127.1",
]
ALLOWED = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.1",
    "172.15.255.255", "172.32.0.1", "192.167.255.255", "223.255.255.255",
    "2606:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001::200e",
    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_addresses(address: str) -> None:
    assert is_blocked_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_allowed(address: str) -> None:
    assert not is_blocked_address(address)


def test_accepts_ipaddress_objects() -> None:
    assert is_blocked_address(IPv4Address("127.0.0.1"))
    assert is_blocked_address(IPv6Address("::ffff:127.0.0.1"))
    assert not is_blocked_address(IPv6Address("2606:4700::1111"))


BLOCKED_V4_NETWORKS = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
]


@given(st.sampled_from(BLOCKED_V4_NETWORKS).flatmap(lambda n: st.ip_addresses(network=n)))
def test_every_address_in_a_blocked_range_and_its_ipv6_forms_is_blocked(
    addr: IPv4Address | IPv6Address,
) -> None:
    assert isinstance(addr, IPv4Address)
    v4 = int(addr)
    assert is_blocked_address(addr)
    assert is_blocked_address(IPv6Address((0xFFFF << 32) | v4))  # ::ffff:a.b.c.d
    assert is_blocked_address(IPv6Address(v4))  # ::a.b.c.d
    assert is_blocked_address(IPv6Address((0x64FF9B << 96) | v4))  # 64:ff9b::a.b.c.d
    assert is_blocked_address(IPv6Address((0x2002 << 112) | (v4 << 80)))  # 6to4


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_and_nat64_forms_judged_like_the_ipv4_address(addr: IPv4Address) -> None:
    expected = is_blocked_address(addr)
    assert is_blocked_address(IPv6Address((0xFFFF << 32) | int(addr))) == expected
    assert is_blocked_address(IPv6Address((0x64FF9B << 96) | int(addr))) == expected


@given(st.ip_addresses(v=4, network="8.0.0.0/7"))
def test_public_ipv4_block_allowed(addr: IPv4Address) -> None:
    assert IPv4Network("8.0.0.0/7").supernet_of(IPv4Network(addr))
    assert not is_blocked_address(addr)


# ---------------------------------------------------------------------- is_blocked_error


def test_is_blocked_error_walks_cause_context_and_os_error() -> None:
    blocked = BlockedAddressError("internal.example", "10.0.0.1")
    assert is_blocked_error(blocked)
    assert blocked.host == "internal.example" and blocked.address == "10.0.0.1"
    assert "10.0.0.1" in str(blocked)

    try:
        try:
            raise blocked
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert is_blocked_error(outer)

    try:
        try:
            raise blocked
        except OSError:
            raise ValueError("during handling") from None
    except ValueError as outer:
        # `from None` suppresses display, but __context__ is still the truth
        assert is_blocked_error(outer)

    key = aiohttp.client_reqrep.ConnectionKey(
        "10.0.0.1", 443, True, True, None, None, None
    )
    connector_error = aiohttp.ClientConnectorError(key, blocked)
    assert is_blocked_error(connector_error)
    assert is_blocked_error(ExceptionGroup("many", [ValueError(), connector_error]))


def test_is_blocked_error_false_for_other_failures() -> None:
    assert not is_blocked_error(ConnectionRefusedError(111, "refused"))
    assert not is_blocked_error(TimeoutError())
    looped = RuntimeError("loop")
    looped.__context__ = ValueError("inner")
    looped.__context__.__context__ = looped
    assert not is_blocked_error(looped)


# ------------------------------------------------------------------- address guard (unit)


class ScriptedResolver:
    """Answers each lookup with the next address list: simulates DNS rebinding."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if not self.answers:
            raise ResolveError(host, "no such name")
        return self.answers.pop(0)


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_guard_pins_the_checked_address_and_refuses_a_rebind_after_the_ttl() -> None:
    resolver, ticks = ScriptedResolver(["93.184.216.34"], ["169.254.169.254"]), Ticks()
    guard = AddressGuard(True, resolve=resolver, clock=ticks)
    first = await guard.check("hooks.example.com", 443)
    assert first == Destination("hooks.example.com", 443, "93.184.216.34")
    ticks.now = DNS_TTL_SECONDS - 1  # cached: the same checked address, no new lookup
    assert (await guard.check("hooks.example.com", 443)).address == "93.184.216.34"
    assert resolver.lookups == ["hooks.example.com"]
    ticks.now = DNS_TTL_SECONDS + 1
    with pytest.raises(BlockedAddressError) as info:
        await guard.check("hooks.example.com", 443)
    assert info.value.host == "hooks.example.com"
    assert info.value.address == "169.254.169.254"


async def test_guard_refuses_a_name_mixing_public_and_internal_addresses() -> None:
    guard = AddressGuard(True, resolve=ScriptedResolver(["93.184.216.34", "::ffff:10.0.0.1"]))
    with pytest.raises(BlockedAddressError):
        await guard.check("mixed.example.com", 443)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "[::1]", "10.1.2.3",
                                  "169.254.169.254", "fe80::1", "64:ff9b::7f00:1"])
async def test_guard_refuses_blocked_ip_literals_without_resolving(host: str) -> None:
    resolver = ScriptedResolver()
    with pytest.raises(BlockedAddressError):
        await AddressGuard(True, resolve=resolver).check(host, 443)
    # Behind a proxy too: a literal is checked before anything is sent.
    with pytest.raises(BlockedAddressError):
        await AddressGuard(True, proxied=True, resolve=resolver).check(host, 443)
    assert resolver.lookups == []


async def test_guard_lets_public_literals_connect_as_written() -> None:
    destination = await AddressGuard(True, resolve=ScriptedResolver()).check("8.8.8.8", 443)
    assert destination == Destination("8.8.8.8", 443, None)


async def test_unguarded_checks_nothing_and_resolves_nothing() -> None:
    resolver = ScriptedResolver()
    guard = AddressGuard(False, resolve=resolver)
    assert await guard.check("127.0.0.1", 80) == Destination("127.0.0.1", 80, None)
    assert await guard.check("localhost", 80) == Destination("localhost", 80, None)
    assert resolver.lookups == []


async def test_behind_a_proxy_names_are_checked_but_not_pinned() -> None:
    guard = AddressGuard(True, proxied=True,
                         resolve=ScriptedResolver(["93.184.216.34"], ["10.0.0.1"]))
    assert await guard.check("a.example.com", 443) == Destination("a.example.com", 443, None)
    with pytest.raises(BlockedAddressError):
        await guard.check("b.example.com", 443)
    # A name only the proxy can resolve is left to the proxy's own egress rules.
    assert (await guard.check("c.example.com", 443)).address is None


async def test_without_a_proxy_an_unresolvable_name_is_a_resolve_error() -> None:
    with pytest.raises(ResolveError):
        await AddressGuard(True, resolve=ScriptedResolver()).check("nx.example.com", 443)


@pytest.mark.parametrize("url", ["http://example.com/hook", "https://example.com:8443/hook",
                                 "https://localhost/hook", "https://127.0.0.1/hook"])
def test_what_a_developer_hits_locally_says_how_to_run_for_development(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate_endpoint_url(url, UrlPolicyConfig())
    assert "`make dev`, `dispatcher serve --dev`" in str(refused.value.message)


def test_a_scheme_dev_mode_would_not_allow_either_gets_no_such_hint() -> None:
    with pytest.raises(ValidationError) as refused:
        validate_endpoint_url("ftp://example.com/hook", UrlPolicyConfig())
    assert "--dev" not in str(refused.value.message)
