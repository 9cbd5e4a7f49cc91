"""Building the HTTP clients (pyreqwest, Rust reqwest) every outgoing request is
sent with: no redirects, no cookies, no decompression, no proxy from the
environment. One client per pinned destination and client certificate, kept in a
bounded cache so connections are reused across requests."""

from __future__ import annotations

from collections import OrderedDict

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.proxy import ProxyBuilder

from dispatcher import __version__
from dispatcher.transport.addresses import Destination
from dispatcher.transport.options import ClientTls

USER_AGENT = f"dispatcher/{__version__}"
# Sent on every request: who we are, and that responses must not be compressed (we
# keep the raw bytes, capped).
CLIENT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
# What every webhook request carries besides its signature (part of what is recorded).
BASE_HEADERS = {"Content-Type": "application/json"}
# Building a client loads the trusted roots (about 3 ms); a process sending to more
# destinations than this rebuilds the least recently used ones.
MAX_CLIENTS = 1024

_ClientKey = tuple[str | None, int, str | None, str | None]


class ClientCache:
    def __init__(self, proxy_url: str = "", max_clients: int = MAX_CLIENTS) -> None:
        self._proxy_url = proxy_url
        self._max = max_clients
        self._clients: OrderedDict[_ClientKey, Client] = OrderedDict()

    def client(self, destination: Destination, tls: ClientTls | None) -> Client:
        """The client for this destination: pinned to its checked address if it has
        one (the URL's host still goes in Host and SNI), with this TLS identity."""
        pin = destination.address
        key: _ClientKey = (destination.host if pin else None, destination.port if pin else 0,
                           pin, tls.fingerprint if tls else None)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        client = self._build(destination if pin else None, tls)
        self._clients[key] = client
        if len(self._clients) > self._max:
            # Not closed: a request still using it keeps it alive until it ends.
            self._clients.popitem(last=False)
        return client

    def _build(self, pinned: Destination | None, tls: ClientTls | None) -> Client:
        builder = (
            ClientBuilder()
            .follow_redirects(False)
            .referer(False)
            .gzip(False).brotli(False).zstd(False).deflate(False)
            .default_headers(CLIENT_HEADERS)
            .min_tls_version("TLSv1.2")
        )
        # reqwest honours HTTP(S)_PROXY by default; a proxy is only ever configured.
        builder = builder.proxy(ProxyBuilder.all(self._proxy_url)) if self._proxy_url \
            else builder.no_proxy()
        if pinned is not None and pinned.address is not None:
            builder = builder.resolve(pinned.host, pinned.address, pinned.port)
        if tls is not None:
            builder = builder.identity_pem(tls.identity_pem)
            if tls.ca_certificate:
                builder = builder.add_root_certificate_pem(tls.ca_certificate.encode())
        return builder.build()

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.close()
