"""The process's HTTP client (aiohttp): no redirects, no cookies, no decompression,
no proxy from the environment, and, when guarded, a resolver that answers only
with addresses the guard checked (so aiohttp connects to exactly those) and a
socket factory that refuses a blocked address whatever asked for it. TLS
contexts with a client certificate are built once per identity."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from dispatcher import __version__
from dispatcher.transport.addresses import AddressGuard
from dispatcher.transport.options import ClientTls
from dispatcher.urlpolicy import BlockedAddressError

USER_AGENT = f"dispatcher/{__version__}"
# Sent on every request: who we are, and that responses must not be compressed (we
# keep the raw bytes, capped). Session headers rather than skip_auto_headers, which
# makes aiohttp copy the request's headers on every request.
CLIENT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
# What every webhook request carries besides its signature (part of what is recorded).
BASE_HEADERS = {"Content-Type": "application/json"}
MAX_TLS_CONTEXTS = 1024


class GuardedResolver(AbstractResolver):
    """Answers with the guard's checked addresses: a name with any blocked address
    raises BlockedAddressError, and the addresses returned are the ones checked."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await self._guard.addresses(host, port)
        results = [
            ResolveResult(hostname=host, host=a, port=port, proto=0,
                          family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                          flags=socket.AI_NUMERICHOST)
            for a in addresses
        ]
        wanted = [r for r in results if family in (socket.AF_UNSPEC, r["family"])]
        return wanted or results

    async def close(self) -> None:
        return None


def guarded_socket_factory(guard: AddressGuard) -> Callable[[AddrInfoType], socket.socket]:
    """An aiohttp socket factory that refuses before a socket exists if the address
    about to be connected is blocked (IP literals, anything that bypassed the
    resolver)."""

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        if guard.is_blocked(address):
            raise BlockedAddressError(address, address)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def create_session(guard: AddressGuard, proxy_url: str) -> aiohttp.ClientSession:
    """One session for the process. With a SOCKS proxy the connector talks SOCKS
    (the proxy resolves names); with an HTTP(S) proxy each request names it."""
    kwargs: dict[str, object] = {
        # The engine bounds requests in flight itself (its slots); so does the sandbox.
        "limit": 0,
        "limit_per_host": 0,
        "enable_cleanup_closed": True,
    }
    if guard.guarded:
        kwargs["resolver"] = GuardedResolver(guard)
        kwargs["use_dns_cache"] = False  # the guard caches what it checked
        if not proxy_url:
            # Behind a proxy every connection goes to the proxy, which may be internal.
            kwargs["socket_factory"] = guarded_socket_factory(guard)
    else:
        kwargs["ttl_dns_cache"] = 60
    connector: aiohttp.TCPConnector
    if proxy_url.startswith("socks"):
        from aiohttp_socks import ProxyConnector

        connector = ProxyConnector.from_url(proxy_url, rdns=True, **kwargs)
    else:
        connector = aiohttp.TCPConnector(**kwargs)  # type: ignore[arg-type]
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers=CLIENT_HEADERS,
        auto_decompress=False,
        trust_env=False,  # HTTP(S)_PROXY and .netrc are never used implicitly
    )


class TlsContexts:
    """SSL contexts presenting a client certificate (and trusting a private CA),
    one per identity: aiohttp pools connections per context."""

    def __init__(self) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}

    def context(self, tls: ClientTls) -> ssl.SSLContext:
        key = tls.fingerprint
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = _client_context(tls)
            if len(self._contexts) >= MAX_TLS_CONTEXTS:
                self._contexts.clear()
            self._contexts[key] = ctx
        return ctx


def _client_context(tls: ClientTls) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_certificate:
        ctx.load_verify_locations(cadata=tls.ca_certificate)
    # The ssl module loads a certificate chain only from a file: a private one
    # (0600 in a 0700 directory), removed as soon as it is read.
    with tempfile.TemporaryDirectory(prefix="dispatcher-tls-") as directory:
        path = Path(directory) / "identity.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(tls.identity_pem)
        ctx.load_cert_chain(path)
    return ctx
