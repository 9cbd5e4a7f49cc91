"""A forwarding proxy on 127.0.0.1 for loopback targets: HTTP CONNECT tunnels,
absolute-form plain HTTP requests and SOCKS5 CONNECTs (RFC 1928; the same port
answers both), each recorded, optionally behind Basic Proxy-Authorization (or the
SOCKS5 username/password method, RFC 1929)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from multidict import CIMultiDict

HEAD_TIMEOUT = 10.0  # seconds for a client to send its request head
# Hop-by-hop headers for the proxy itself, not passed to the target.
_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


@dataclass
class ProxiedRequest:
    method: str  # CONNECT for a tunnel, else the forwarded request's method
    target: str  # host:port
    path: str | None  # the forwarded request's origin-form target; None for a tunnel
    headers: CIMultiDict[str]  # as the client sent them to the proxy
    refused: int | None = None  # the status the proxy answered itself; None: passed on


def _answer(status: int, reason: str, *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *extra, "Content-Length: 0", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


class ForwardProxy:
    """`seen` records every request in arrival order, refused ones too. Only
    loopback targets are reached (others: 403), so a test cannot leak traffic."""

    def __init__(self, required_auth: tuple[str, str] | None = None) -> None:
        self.seen: list[ProxiedRequest] = []
        self.port = 0
        self._auth = (None if required_auth is None else
                      "Basic " + base64.b64encode(":".join(required_auth).encode()).decode())
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # exchanges, cancelled by stop()
        self._handlers: set[asyncio.Task[None]] = set()  # their callbacks, awaited by stop()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets(self) -> list[str]:
        """`"METHOD host:port"` of each request passed on."""
        return [f"{r.method} {r.target}" for r in self.seen if r.refused is None]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The exchange runs in a task of its own that stop() cancels: cancelling the
        # task asyncio.start_server made for this callback logs an error on 3.11.
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await asyncio.wait([task])
            if not task.cancelled():
                with contextlib.suppress(ConnectionError, OSError, TimeoutError,
                                         asyncio.IncompleteReadError,
                                         asyncio.LimitOverrunError, ValueError):
                    task.result()  # a client that went away or sent garbage: dropped
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)
            self._handlers.discard(handler)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HEAD_TIMEOUT):
            first = await reader.readexactly(1)
            if first == b"\x05":
                socks_target = await self._socks_handshake(reader, writer)
            else:
                head = first + await reader.readuntil(b"\r\n\r\n")
        if first == b"\x05":
            if socks_target is not None:
                await self._serve_socks(reader, writer, *socks_target)
            return
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())

        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            path = None
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                raise ValueError(f"not an absolute-form http request: {target!r}")
            host, port_text = url.hostname, str(url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        seen = ProxiedRequest(method, f"{host}:{port_text}", path, headers)
        self.seen.append(seen)

        if self._auth is not None and headers.get("proxy-authorization") != self._auth:
            seen.refused = 407
            writer.write(_answer(407, "Proxy Authentication Required",
                                 'Proxy-Authenticate: Basic realm="proxy"'))
            return
        if not _loopback(host):
            seen.refused = 403
            writer.write(_answer(403, "Forbidden"))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port_text))
        except OSError:
            seen.refused = 502
            writer.write(_answer(502, "Bad Gateway"))
            return
        self._writers.add(up_writer)
        try:
            if path is None:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                # One request per connection (Connection: close both ways), so that each
                # request is parsed and recorded here, not hidden in a kept-alive stream.
                kept = [f"{k}: {v}" for k, v in headers.items() if k.lower() not in _HOP]
                up_writer.write("\r\n".join([f"{method} {path} {version}", *kept,
                                             "Connection: close", "", ""]).encode("latin-1"))
            await self._relay(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            self._writers.discard(up_writer)

    async def _serve_socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           host: str, port: int) -> None:
        seen = ProxiedRequest("SOCKS", f"{host}:{port}", None, CIMultiDict())
        self.seen.append(seen)
        if not _loopback(host):
            seen.refused = 403
            writer.write(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")  # not allowed
            return
        up_reader, up_writer = await asyncio.open_connection(host, port)
        self._writers.add(up_writer)
        writer.write(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")  # succeeded
        try:
            await self._relay(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            self._writers.discard(up_writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        # Either side closing ends the exchange: the answer was relayed in full, or
        # the client no longer wants it.
        pipes = [asyncio.create_task(_pipe(reader, up_writer)),
                 asyncio.create_task(_pipe(up_reader, writer))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

    async def _socks_handshake(self, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        """Method negotiation (and RFC 1929 credentials), then the CONNECT request:
        its (host, port), or None when refused."""
        methods = await reader.readexactly((await reader.readexactly(1))[0])
        wanted = 0x02 if self._auth is not None else 0x00
        if wanted not in methods:
            writer.write(b"\x05\xff")
            return None
        writer.write(bytes([5, wanted]))
        if wanted == 0x02:
            await reader.readexactly(1)  # sub-negotiation version 1
            user = await reader.readexactly((await reader.readexactly(1))[0])
            password = await reader.readexactly((await reader.readexactly(1))[0])
            given = "Basic " + base64.b64encode(user + b":" + password).decode()
            if given != self._auth:
                writer.write(b"\x01\x01")
                return None
            writer.write(b"\x01\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        if command != 1:  # CONNECT only
            writer.write(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return None
        return host, port


@asynccontextmanager
async def forward_proxy(required_auth: tuple[str, str] | None = None
                        ) -> AsyncIterator[ForwardProxy]:
    """A started ForwardProxy; on exit every connection through it is closed."""
    proxy = ForwardProxy(required_auth)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
