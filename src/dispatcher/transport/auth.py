"""Receiver authentication: the Authorization header an endpoint's `auth` asks for.
OAuth2 client-credentials tokens are fetched through the transport (so the address
guard and the proxy apply to the token URL), cached per credentials until shortly
before they expire, fetched once at a time, and shared by every request of the
process."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote_plus, urlencode

from dispatcher.clock import monotonic
from dispatcher.transport.options import BasicAuth, BearerAuth, OAuth2ClientCredentials

# A token is renewed this long before the end of its lifetime (or at 90% of it).
REFRESH_MARGIN_SECONDS = 60.0
# Lifetime assumed when a token endpoint gives no expires_in.
DEFAULT_TOKEN_SECONDS = 300.0
TOKEN_BODY_LIMIT = 64 * 1024


class TokenError(Exception):
    """The token endpoint did not give a token; the message never holds a secret."""


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    expires_at: float


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def static_authorization(auth: BasicAuth | BearerAuth) -> str:
    if isinstance(auth, BasicAuth):
        return basic_header(auth.username, auth.password)
    return f"Bearer {auth.token}"


def token_request(creds: OAuth2ClientCredentials) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a client-credentials token request (RFC 6749 4.4,
    client authenticated with HTTP Basic as section 2.3.1 recommends)."""
    form = {"grant_type": "client_credentials"}
    if creds.scope:
        form["scope"] = creds.scope
    if creds.audience:
        form["audience"] = creds.audience
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        # Form-encoded before base64, as RFC 6749 2.3.1 says.
        "Authorization": basic_header(quote_plus(creds.client_id),
                                      quote_plus(creds.client_secret)),
    }
    return urlencode(form).encode(), headers


def parse_token(status: int, body: str, now: float) -> Token:
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise TokenError(f"token endpoint answered {status} without an access_token")
    expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
    lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 \
        else DEFAULT_TOKEN_SECONDS
    margin = min(REFRESH_MARGIN_SECONDS, lifetime * 0.1)
    return Token(token, now + lifetime - margin)


def _key(creds: OAuth2ClientCredentials) -> tuple[str, ...]:
    secret = hashlib.sha256(creds.client_secret.encode()).hexdigest()
    return (creds.token_url, creds.client_id, secret, creds.scope or "", creds.audience or "")


class TokenCache:
    def __init__(self, fetch: Callable[[OAuth2ClientCredentials], Awaitable[Token]],
                 clock: Callable[[], float] = monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._tokens: dict[tuple[str, ...], Token] = {}
        self._pending: dict[tuple[str, ...], asyncio.Future[Token]] = {}

    async def token(self, creds: OAuth2ClientCredentials) -> tuple[str, bool]:
        """A valid access token, and whether it was fetched for this call."""
        key = _key(creds)
        cached = self._tokens.get(key)
        if cached is not None and cached.expires_at > self._clock():
            return cached.access_token, False
        pending = self._pending.get(key)
        if pending is not None:
            return (await asyncio.shield(pending)).access_token, True
        future: asyncio.Future[Token] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            token = await self._fetch(creds)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            self._tokens[key] = token
            future.set_result(token)
            return token.access_token, True
        finally:
            del self._pending[key]

    def invalidate(self, creds: OAuth2ClientCredentials, access_token: str) -> None:
        """Forget a token the receiver refused (unless a newer one replaced it)."""
        key = _key(creds)
        cached = self._tokens.get(key)
        if cached is not None and cached.access_token == access_token:
            del self._tokens[key]
