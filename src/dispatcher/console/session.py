"""Console sessions: a cookie holding the credential the user signed in with, the
id of the session's row on the server (operations/sessions.py), its CSRF token and
its expiry, encrypted and authenticated with the deployment's master key (AES-GCM,
dispatcher.secretbox). Every worker process holds that key and reads the same
database, so a session works whichever process answers, and once ended (sign-out,
its key's sessions ended or the key revoked) no process accepts it again.

The credential itself (not the scope it resolved to) is kept, so every request
resolves it again: what a session may do is what its credential may, now.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from aiohttp import web

from dispatcher.clock import to_ms
from dispatcher.secretbox import SecretBox, SecretDecryptionError
from dispatcher.web.context import CONFIG
from dispatcher.web.peers import parse_networks

SESSION_COOKIE = "dispatcher_console"
LOGIN_COOKIE = "dispatcher_console_login"  # the CSRF token of the sign-in form
COOKIE_PATH = "/console/"
CSRF_FIELD = "csrf"
_AAD = b"dispatcher console session v1"


@dataclass(frozen=True)
class Session:
    credential: str
    id: UUID  # the session's row on the server
    csrf: str
    expires_ms: int
    acting: str | None = None  # an operator session: the id of the tenant it acts for


def new_session(credential: str, session_id: UUID, expires_at: datetime) -> Session:
    return Session(credential, session_id, secrets.token_urlsafe(24), to_ms(expires_at))


def seal(box: SecretBox, session: Session) -> str:
    text = json.dumps({"k": session.credential, "s": str(session.id), "c": session.csrf,
                       "e": session.expires_ms, "t": session.acting})
    return base64.urlsafe_b64encode(box.encrypt(text, _AAD)).decode("ascii")


def unseal(box: SecretBox, value: str, now: datetime) -> Session | None:
    """The session in a cookie value, or None if it is altered, foreign, expired, or
    sealed before sessions were recorded on the server (it names no session)."""
    try:
        blob = base64.urlsafe_b64decode(value.encode("ascii"))
        data = json.loads(box.decrypt(blob, _AAD))
        acting = data.get("t")
        session = Session(str(data["k"]), UUID(str(data["s"])), str(data["c"]),
                          int(data["e"]), acting if isinstance(acting, str) else None)
    except (SecretDecryptionError, binascii.Error, ValueError, KeyError, TypeError,
            UnicodeError):
        return None
    return session if session.expires_ms > to_ms(now) else None


def csrf_ok(expected: str, given: object) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(
        expected.encode(), given.encode())


def served_over_https(request: web.Request) -> bool:
    """https to this process, or to a trusted proxy (`server.trusted_proxies`) that
    says so in X-Forwarded-Proto."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
    if proto != "https" or not request.remote:
        return False
    try:
        peer = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    trusted = parse_networks(request.app[CONFIG].server.trusted_proxies)
    return any(peer in net for net in trusted)


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               max_age: int | None) -> None:
    """HttpOnly, SameSite=Strict, limited to /console/, Secure when served over https.
    With `[console] frame_ancestors` set the console may be embedded in another site,
    where a Strict cookie is never sent: then SameSite=None, which browsers accept
    only with Secure (embedding needs https; the CSRF token still guards every POST)."""
    if request.app[CONFIG].console.frame_ancestors:
        response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="None",
                            secure=True, max_age=max_age)
        return
    response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=served_over_https(request), max_age=max_age)


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=COOKIE_PATH)
