"""One outgoing request as every part of the daemon makes it: exact body and
headers, the endpoint's delivery options, a total timeout, no redirects, at most a
capped number of response bytes read, and a classified outcome. It signs nothing
and knows no queue."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus

from pyreqwest.exceptions import PyreqwestError
from pyreqwest.response import ResponseBodyReader
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
from dispatcher.transport.classify import classify_error, error_chain, failure_for_status
from dispatcher.transport.clients import ClientCache
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
    request through a forward proxy."""

    def __init__(self, *, guarded: bool, proxy_url: str = "",
                 guard: AddressGuard | None = None,
                 clock: Callable[[], float] = monotonic) -> None:
        self.guard = guard or AddressGuard(guarded, proxied=bool(proxy_url))
        self.proxy_url = proxy_url
        self._clients = ClientCache(proxy_url)
        self._clock = clock
        self.tokens = TokenCache(self._fetch_token, clock)

    @classmethod
    def from_config(cls, config: Config) -> Transport:
        """The daemon's transport: guarded unless private networks are allowed."""
        return cls(guarded=not config.urls.allow_private_networks,
                   proxy_url=config.delivery.proxy_url)

    async def close(self) -> None:
        await self._clients.close()

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
        sent = {**dict(options.headers), **headers}
        result = Exchange(started_at, started_at, 0.0, _recorded(sent))
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
                    result.failure = FailureReason.AUTH_ERROR
                    result.error_detail = str(exc)[:500]
                    break
                sent["Authorization"] = f"Bearer {token}"
            result = await self._exchange(method, url, body, sent, timeout, body_limit,
                                          success_statuses, started_at, options)
            if creds is None or fresh or result.status != UNAUTHORIZED:
                break
            self.tokens.invalidate(creds, token)
        result.duration_ms = (monotonic() - t0) * 1000
        return result

    async def _exchange(
        self, method: str, url: str, body: bytes, headers: dict[str, str], timeout: float,
        body_limit: int, success_statuses: Collection[int], started_at: datetime,
        options: EndpointOptions,
    ) -> Exchange:
        result = Exchange(started_at, started_at, 0.0, _recorded(headers))
        try:
            target = URL(url)
            destination = await self.guard.check(target.raw_host or "", target.port or 0)
            client = self._clients.client(destination, options.tls)
            request = (client.request(method, url).headers(headers).body_bytes(body)
                       .timeout(timedelta(seconds=timeout)).build_streamed())
            async with request as resp:
                result.status = resp.status
                result.status_text = _phrase(resp.status)
                result.response_headers = _response_headers(resp.headers.items())
                raw = await _read_capped(resp.body_reader, body_limit)
                # PostgreSQL text cannot hold NUL: store it as U+FFFD like other bad bytes.
                result.response_body = raw.decode("utf-8", "replace").replace("\x00", "\ufffd")
                result.failure = failure_for_status(resp.status, success_statuses)
        except (PyreqwestError, OSError, TimeoutError, ValueError) as exc:
            result.failure = classify_error(exc)
            result.error_detail = describe(exc)
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


async def _read_capped(reader: ResponseBodyReader, limit: int) -> bytes:
    """At most `limit` bytes of the body; the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await reader.read(limit - size)
        if not chunk:
            break
        data = bytes(chunk)
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def _recorded(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: REDACTED if k.lower() in SECRET_HEADERS else v for k, v in headers.items()}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _response_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names as receivers usually write them (HTTP/1 names are
    case-insensitive and arrive lowercased); repeated headers joined by commas."""
    out: dict[str, str] = {}
    for name, value in items:
        key = "-".join(part.capitalize() for part in str(name).split("-"))
        out[key] = f"{out[key]}, {value}" if key in out else str(value)
    return out


def describe(exc: BaseException) -> str:
    if not isinstance(exc, PyreqwestError):
        text = str(exc) or type(exc).__name__
    else:
        text = error_chain(exc)
    return f"{type(exc).__name__}: {text}"[:500]
