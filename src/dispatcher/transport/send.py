"""One outgoing request as every part of the daemon makes it: exact body and
headers, the endpoint's delivery options, a total timeout, no redirects, at most a
capped number of response bytes read, and a classified outcome. It signs nothing
and knows no queue."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from dispatcher.clock import monotonic
from dispatcher.config import Config
from dispatcher.model import FailureReason
from dispatcher.transport.addresses import AddressGuard
from dispatcher.transport.auth import (
    TOKEN_BODY_LIMIT,
    Token,
    TokenCache,
    TokenError,
    parse_token,
    static_authorization,
    token_request,
)
from dispatcher.transport.classify import classify_error, failure_for_status
from dispatcher.transport.clients import TlsContexts, create_session
from dispatcher.transport.options import NO_OPTIONS, EndpointOptions, OAuth2ClientCredentials

REDACTED = "[redacted]"
TOKEN_TIMEOUT_SECONDS = 5.0
# Token fetches are not recorded as attempts; their exchanges carry no real time.
_UNRECORDED = datetime(1970, 1, 1, tzinfo=UTC)
UNAUTHORIZED = 401
# Headers whose values are credentials: recorded in attempt logs as [redacted].
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})


@dataclass(slots=True)
class Exchange:
    """What was sent (headers as recorded, credentials redacted) and what came back."""

    started_at: datetime
    finished_at: datetime
    duration_ms: float
    request_headers: dict[str, str]
    status: int | None = None
    response_headers: dict[str, str] | None = None
    response_body: str | None = None
    failure: FailureReason | None = None
    error_detail: str | None = None
    status_text: str = ""

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def request_headers_json(self) -> str:
        return json.dumps(self.request_headers)

    def response_headers_json(self) -> str | None:
        if self.response_headers is None:
            return None
        return json.dumps(self.response_headers)


class Transport:
    """The process's one way out. `guarded` refuses blocked addresses (everything
    but the sandbox, unless private networks are allowed); `proxy_url` sends every
    request through a forward proxy (http://, https:// or socks5://)."""

    def __init__(self, *, guarded: bool, proxy_url: str = "",
                 guard: AddressGuard | None = None,
                 clock: Callable[[], float] = monotonic) -> None:
        self.guard = guard or AddressGuard(guarded, proxied=bool(proxy_url))
        self.proxy_url = proxy_url
        proxy_host = URL(proxy_url).raw_host if proxy_url else None
        if proxy_host:
            self.guard.exempt = frozenset({proxy_host})
        # aiohttp takes an HTTP(S) proxy per request; a SOCKS one is the connector's.
        self._request_proxy = proxy_url if proxy_url.startswith("http") else None
        self._session: aiohttp.ClientSession | None = None
        self._tls = TlsContexts()
        self._clock = clock
        self.tokens = TokenCache(self._fetch_token, clock)

    @classmethod
    def from_config(cls, config: Config) -> Transport:
        """The daemon's transport: guarded unless private networks are allowed."""
        return cls(guarded=not config.urls.allow_private_networks,
                   proxy_url=config.delivery.proxy_url)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use, inside the running loop
            self._session = create_session(self.guard, self.proxy_url)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        body_limit: int,
        started_at: datetime,
        options: EndpointOptions = NO_OPTIONS,
        success_statuses: Collection[int] = (),
        method: str = "POST",
    ) -> Exchange:
        """Send `body` with `headers` (the endpoint's custom headers and credentials
        added) and classify the outcome. An OAuth2 token the receiver answers 401 to
        is fetched again once, and the request sent again with the new one."""
        t0 = monotonic()
        sent = {**dict(options.headers), **headers} if options.headers else dict(headers)
        result: Exchange | None = None
        auth = options.auth
        creds = auth if isinstance(auth, OAuth2ClientCredentials) else None
        if auth is not None and not isinstance(auth, OAuth2ClientCredentials):
            sent["Authorization"] = static_authorization(auth)
        for _ in range(2):
            fresh = False
            if creds is not None:
                try:
                    token, fresh = await self.tokens.token(creds)
                except TokenError as exc:
                    result = Exchange(started_at, started_at, 0.0, _recorded(sent),
                                      failure=FailureReason.AUTH_ERROR,
                                      error_detail=str(exc)[:500])
                    break
                sent["Authorization"] = f"Bearer {token}"
            result = await self._exchange(method, url, body, sent, timeout, body_limit,
                                          success_statuses, started_at, options)
            if creds is None or fresh or result.status != UNAUTHORIZED:
                break
            self.tokens.invalidate(creds, token)
        assert result is not None
        result.duration_ms = (monotonic() - t0) * 1000
        return result

    async def _exchange(
        self, method: str, url: str, body: bytes, headers: dict[str, str], timeout: float,
        body_limit: int, success_statuses: Collection[int], started_at: datetime,
        options: EndpointOptions,
    ) -> Exchange:
        result = Exchange(started_at, started_at, 0.0, _recorded(headers))
        try:
            if self.guard.guarded:
                await self.guard.check(*_host_port(url))
            tls: ssl.SSLContext | bool = self._tls.context(options.tls) if options.tls else True
            async with self.session.request(
                method, url, data=body, headers=headers, allow_redirects=False,
                timeout=_client_timeout(timeout), ssl=tls, proxy=self._request_proxy,
            ) as resp:
                result.status = resp.status
                result.status_text = resp.reason or ""
                result.response_headers = dict(resp.headers)
                raw = await _read_capped(resp.content, body_limit)
                # PostgreSQL text cannot hold NUL: store it as U+FFFD like other bad bytes.
                result.response_body = raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
                result.failure = failure_for_status(resp.status, success_statuses)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            result.failure = classify_error(exc, url.startswith("https:"), options.tls is not None)
            result.error_detail = describe(exc)
            if result.failure == FailureReason.TLS_ERROR and not isinstance(exc, ssl.SSLError):
                result.error_detail = ("the receiver closed the connection during or right "
                                       "after the TLS handshake (is the client certificate "
                                       f"one it trusts?): {result.error_detail}")[:500]
        return result

    async def _fetch_token(self, creds: OAuth2ClientCredentials) -> Token:
        body, headers = token_request(creds)
        answer = await self._exchange("POST", creds.token_url, body, headers,
                                      TOKEN_TIMEOUT_SECONDS, TOKEN_BODY_LIMIT, (),
                                      _UNRECORDED, NO_OPTIONS)
        if answer.status is None:
            raise TokenError(f"token endpoint unreachable: {answer.failure}: "
                             f"{answer.error_detail}")
        if not 200 <= answer.status < 300:
            raise TokenError(f"token endpoint answered {answer.status}")
        return parse_token(answer.status, answer.response_body or "", self._clock())


# Per-request work kept small (it runs for every delivery): what is the same for
# many requests is computed once. Each memo is bounded; past the bound it computes.
_MEMO_LIMIT = 4096
_DESTINATIONS: dict[str, tuple[str, int]] = {}
_TIMEOUTS: dict[float, aiohttp.ClientTimeout] = {}


def _host_port(url: str) -> tuple[str, int]:
    known = _DESTINATIONS.get(url)
    if known is None:
        parsed = URL(url)
        known = (parsed.raw_host or "", parsed.port or 0)
        if len(_DESTINATIONS) < _MEMO_LIMIT:
            _DESTINATIONS[url] = known
    return known


def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    known = _TIMEOUTS.get(seconds)
    if known is None:
        known = aiohttp.ClientTimeout(total=seconds)
        if len(_TIMEOUTS) < _MEMO_LIMIT:
            _TIMEOUTS[seconds] = known
    return known


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes (read until then or the end, within the total
    timeout: a body trickled slowly times out); the rest is never read."""
    data = await content.read(limit)
    if len(data) >= limit or content.at_eof():
        return data
    chunks = [data]
    size = len(data)
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _recorded(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: REDACTED if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


def describe(exc: BaseException) -> str:
    """What went wrong, in words a receiver's owner acts on: "nothing is listening on
    host:port" rather than aiohttp's connector text."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"nothing is listening on {where} (connection refused)"
        reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return f"cannot connect to {where}: {reason}"[:500]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
