"""Portal tokens: signed, expiring credentials for one tenant, handed to a customer in
a portal link and usable as a Bearer token in the API.

A token is `dpt_<payload>.<mac>` (base64url): the payload is the tenant id (16
bytes), the expiry (Unix seconds, 8 bytes), a flags byte (read-only) and 8 random
bytes; the mac is HMAC-SHA256 of it under a key derived from the master key. Nothing
is stored: a token is valid until it expires (or its tenant is deleted)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from dispatcher.errors import Unauthorized

PORTAL_TOKEN_PREFIX = "dpt_"
KEY_PURPOSE = "portal tokens v1"
_LAYOUT = struct.Struct(">16sQB8s")
_READ_ONLY = 1


@dataclass(frozen=True)
class PortalClaims:
    tenant_id: UUID
    expires_at: datetime
    read_only: bool


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, PORTAL_TOKEN_PREFIX.encode() + payload, hashlib.sha256).digest()


def sign_portal_token(key: bytes, tenant_id: UUID, expires_at: datetime, read_only: bool) -> str:
    payload = _LAYOUT.pack(tenant_id.bytes, int(expires_at.timestamp()),
                           _READ_ONLY if read_only else 0, secrets.token_bytes(8))
    return f"{PORTAL_TOKEN_PREFIX}{_b64(payload)}.{_b64(_mac(key, payload))}"


def is_portal_token(credential: str) -> bool:
    return credential.startswith(PORTAL_TOKEN_PREFIX)


def verify_portal_token(key: bytes, token: str, now: datetime) -> PortalClaims:
    """The claims of a token signed with `key` that has not expired; Unauthorized
    (one message for every failure) otherwise."""
    invalid = Unauthorized("invalid or expired portal token", field="Authorization")
    body, dot, mac_text = token.removeprefix(PORTAL_TOKEN_PREFIX).partition(".")
    if not dot:
        raise invalid
    try:
        payload, mac = _unb64(body), _unb64(mac_text)
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if len(payload) != _LAYOUT.size or not hmac.compare_digest(mac, _mac(key, payload)):
        raise invalid
    tenant, expires, flags, _ = _LAYOUT.unpack(payload)
    expires_at = datetime.fromtimestamp(expires, UTC)
    if expires_at <= now:
        raise invalid
    return PortalClaims(UUID(bytes=tenant), expires_at, bool(flags & _READ_ONLY))
