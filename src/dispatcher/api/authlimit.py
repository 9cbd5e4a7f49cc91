"""Failed authentication: logged (the key's shown prefix at most), and limited per
client address, so guessing keys is slow and visible.

After `server.auth_failure_limit` failures from one address within
`server.auth_failure_window_seconds`, every authenticated route answers that address
429 with Retry-After until the window ends (health probes and metrics still answer).
The count lives in each worker process: with N workers an address gets at most N
times the limit per window before all of them refuse it.

Behind a load balancer every request comes from the balancer's address. List the
balancers in `server.trusted_proxies`: for a request whose peer is one of them, the
client is the right-most address of `X-Forwarded-For` that is not itself trusted."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from dispatcher.errors import TooManyRequests, Unauthorized
from dispatcher.store.tenants import SHOWN_PREFIX_LEN
from dispatcher.web.peers import Network, client_address

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_TRACKED = 100_000  # addresses remembered at once; expired ones are dropped first


@dataclass
class _Window:
    started: float
    failures: int = 0


@dataclass
class AuthFailures:
    limit: int  # 0 = never limit
    window: float
    now: Callable[[], float] = time.monotonic
    _by_address: dict[str, _Window] = field(default_factory=dict)

    def blocked_for(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None when it may now."""
        w = self._by_address.get(address)
        if not self.limit or w is None or w.failures < self.limit:
            return None
        left = w.started + self.window - self.now()
        return left if left > 0 else None

    def record(self, address: str) -> None:
        now = self.now()
        w = self._by_address.get(address)
        if w is None or now - w.started >= self.window:
            if len(self._by_address) >= MAX_TRACKED:
                self._forget_expired(now)
            w = self._by_address[address] = _Window(now)
        w.failures += 1

    def _forget_expired(self, now: float) -> None:
        for address, w in list(self._by_address.items()):
            if now - w.started >= self.window:
                del self._by_address[address]
        if len(self._by_address) >= MAX_TRACKED:  # all live: forget the oldest half
            oldest = sorted(self._by_address, key=lambda a: self._by_address[a].started)
            for address in oldest[: MAX_TRACKED // 2]:
                del self._by_address[address]


def _key_prefix(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    _, _, key = header.strip().partition(" ")
    key = key.strip()
    if not key:
        return None
    return key[:SHOWN_PREFIX_LEN].encode("ascii", "replace").decode()


def auth_failure_limit(limiter: AuthFailures, trusted: tuple[Network, ...]) -> Middleware:
    """The middleware (a factory, so the limiter and proxies are fixed at start-up)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_handler = request.match_info.handler
        if not getattr(route_handler, "authenticates", False):
            return await handler(request)
        address = client_address(request.remote, request.headers.get("X-Forwarded-For"),
                                 trusted)
        wait = limiter.blocked_for(address)
        if wait is not None:
            raise TooManyRequests("too many failed authentications from this address; "
                                  f"retry in {math.ceil(wait)} s", retry_after=wait)
        try:
            return await handler(request)
        except Unauthorized as exc:
            limiter.record(address)
            log.warning("auth.failed", remote=address, key_prefix=_key_prefix(request),
                        reason=exc.message, path=request.path)
            raise

    return middleware
