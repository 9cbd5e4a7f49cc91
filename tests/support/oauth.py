"""A local OAuth2 client-credentials token server, and receivers that accept only
its current Bearer tokens or one pair of Basic credentials; all are the test
Receiver on 127.0.0.1 with a checking script."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar
from urllib.parse import parse_qsl, unquote_plus

from tests.support.receiver import Received, Receiver, Reply, Script

R = TypeVar("R", bound=Receiver)

_JSON = {"content-type": "application/json", "cache-control": "no-store"}


def form_of(req: Received) -> dict[str, str]:
    """The fields of a form-encoded body (the last value of a repeated field)."""
    return dict(parse_qsl(req.body.decode("latin-1"), keep_blank_values=True))


def basic_credentials(req: Received) -> tuple[str, str] | None:
    """The (user, password) of an `Authorization: Basic` header, else None."""
    scheme, _, value = req.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _error(status: int, code: str, **headers: str) -> Reply:
    return Reply(status, json.dumps({"error": code}), {**_JSON, **headers})


class TokenServer(Receiver):
    """POST /token, grant_type=client_credentials, the client authenticated with
    HTTP Basic or with client_id/client_secret form fields; answers tok-1, tok-2, ...
    Every request is in `requests` (its form: `forms`), refused ones too.

    `fail_with = 500` (any status) answers that instead of a token; `revoke()` makes
    a token invalid for `bearer_check` before it expires."""

    def __init__(self, client_id: str = "client-id", client_secret: str = "client-secret",
                 *, expires_in: int = 3600) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.fail_with: int | None = None
        self.issued: list[str] = []
        self._expires_at: dict[str, float] = {}
        self.script = self._token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def forms(self) -> list[dict[str, str]]:
        return [form_of(r) for r in self.requests]

    def valid(self, token: str) -> bool:
        """Issued here, not revoked, not expired."""
        return time.monotonic() < self._expires_at.get(token, 0.0)

    def revoke(self, token: str | None = None) -> None:
        """Revoke `token`, by default every token issued so far."""
        for t in [token] if token is not None else self.issued:
            self._expires_at.pop(t, None)

    def _token(self, req: Received, n: int) -> Reply:
        if req.method != "POST" or req.path.partition("?")[0] != "/token":
            return _error(404, "not_found")
        form = form_of(req)
        basic = basic_credentials(req)
        # RFC 6749 2.3.1: Basic credentials are form-encoded before base64.
        creds = ((unquote_plus(basic[0]), unquote_plus(basic[1])) if basic
                 else (form.get("client_id", ""), form.get("client_secret", "")))
        if creds != (self.client_id, self.client_secret):
            return _error(401, "invalid_client", **{"www-authenticate": 'Basic realm="token"'})
        if form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type")
        if self.fail_with is not None:
            return _error(self.fail_with, "server_error")
        token = f"tok-{len(self.issued) + 1}"
        self.issued.append(token)
        self._expires_at[token] = time.monotonic() + self.expires_in
        return Reply(200, json.dumps({"access_token": token, "token_type": "Bearer",
                                      "expires_in": self.expires_in}), _JSON)


def _then(script: Script | None) -> Script:
    return script if script is not None else (lambda req, n: Reply())


def bearer_check(server: TokenServer, then: Script | None = None) -> Script:
    """A Receiver script: 401 unless `Authorization: Bearer <a token valid at
    server>`, else `then` (default 200)."""
    after = _then(then)

    def script(req: Received, n: int) -> Reply | Awaitable[Reply]:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not server.valid(token.strip()):
            return Reply(401, "unauthorized", {"www-authenticate": 'Bearer error="invalid_token"'})
        return after(req, n)

    return script


def basic_check(username: str, password: str, then: Script | None = None) -> Script:
    """A Receiver script: 401 unless `Authorization: Basic` with these credentials,
    else `then` (default 200)."""
    after = _then(then)

    def script(req: Received, n: int) -> Reply | Awaitable[Reply]:
        if basic_credentials(req) != (username, password):
            return Reply(401, "unauthorized", {"www-authenticate": 'Basic realm="hook"'})
        return after(req, n)

    return script


@asynccontextmanager
async def running(receiver: R) -> AsyncIterator[R]:
    """`receiver` started on 127.0.0.1 for the block, stopped after it."""
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def token_server(client_id: str = "client-id", client_secret: str = "client-secret",
                 *, expires_in: int = 3600) -> AbstractAsyncContextManager[TokenServer]:
    """`async with token_server() as tokens:` a started TokenServer."""
    return running(TokenServer(client_id, client_secret, expires_in=expires_in))


def bearer_receiver(server: TokenServer) -> AbstractAsyncContextManager[Receiver]:
    """`async with bearer_receiver(tokens) as hook:` a Receiver checking bearer_check."""
    r = Receiver()
    r.script = bearer_check(server)
    return running(r)


def basic_auth_receiver(username: str, password: str) -> AbstractAsyncContextManager[Receiver]:
    """`async with basic_auth_receiver("u", "p") as hook:` a Receiver checking basic_check."""
    r = Receiver()
    r.script = basic_check(username, password)
    return running(r)
