"""Signature verification for Python receivers of dispatcher webhooks. Needs only
the standard library and `cryptography`; copy this file into a receiver as is.

    from dispatcher.verify import VerificationError, verify_standard
    verify_standard(secret, request.headers, raw_body)   # raises on failure
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = ["VerificationError", "verify_cobalt", "verify_cobo", "verify_standard"]

DEFAULT_TOLERANCE = 300  # seconds either side of the receiver's clock


class VerificationError(Exception):
    """The request is not a genuine, fresh webhook from the sender."""


def _header(headers: Mapping[str, str], *names: str) -> str:
    """The first header present among `names`, matched case-insensitively and with
    `_` and `-` treated alike (some proxies rewrite one into the other)."""
    wanted = {n.lower().replace("_", "-") for n in names}
    for key, value in headers.items():
        if key.lower().replace("_", "-") in wanted:
            return value
    raise VerificationError(f"missing header {names[0]}")


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def _now_seconds(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return now.timestamp()
    return float(now)


def _check_fresh(ts_seconds: float, tolerance: float, now: datetime | float | None) -> None:
    skew = _now_seconds(now) - ts_seconds
    if skew > tolerance:
        raise VerificationError(f"timestamp too old ({int(skew)} s > {tolerance} s tolerance)")
    if -skew > tolerance:
        raise VerificationError(f"timestamp too new ({int(-skew)} s > {tolerance} s tolerance)")


def _parse_int(text: str, header: str) -> int:
    if not text.strip().isdigit():
        raise VerificationError(f"{header} is not an integer: {text[:32]!r}")
    return int(text)


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _load_public_key(key: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, hex of the raw 32 bytes, or `whpk_` + base64."""
    text = key.decode() if isinstance(key, bytes) else key
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            loaded = load_pem_public_key(text.encode())
            if not isinstance(loaded, Ed25519PublicKey):
                raise VerificationError("the PEM key is not an Ed25519 public key")
            return loaded
        raw = _b64decode(text[5:]) if text.startswith("whpk_") else bytes.fromhex(text)
        if raw is None or len(raw) != 32:
            raise VerificationError("an Ed25519 public key is 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise VerificationError(f"unreadable public key: {exc}") from exc


def _standard_checker(key_text: str, content: bytes) -> tuple[str, Callable[[bytes], bool]]:
    """The signature version a key checks and a predicate on one decoded signature."""
    if key_text.startswith("whpk_"):
        public = _load_public_key(key_text)

        def ed25519_matches(given: bytes) -> bool:
            try:
                public.verify(given, content)
            except InvalidSignature:
                return False
            return True

        return "v1a", ed25519_matches
    key = _b64decode(key_text.removeprefix("whsec_"))
    if not key:
        raise VerificationError("the secret is neither whsec_ + base64 nor a whpk_ public key")
    expected = hmac.new(key, content, hashlib.sha256).digest()
    return "v1", lambda given: hmac.compare_digest(expected, given)


def verify_standard(
    secret_or_public_key: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    now: datetime | float | None = None,
) -> None:
    """Verify a Standard Webhooks request: `whsec_...` checks `v1` (HMAC-SHA256)
    entries, `whpk_...` checks `v1a` (Ed25519) entries. Passes if any entry of
    `webhook-signature` verifies and `webhook-timestamp` is within `tolerance`
    seconds of `now`. Raises VerificationError otherwise."""
    msg_id = _header(headers, "webhook-id")
    ts_text = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    ts = _parse_int(ts_text, "webhook-timestamp")
    _check_fresh(ts, tolerance, now)
    content = f"{msg_id}.{ts_text}.".encode() + _as_bytes(body)

    version, matches = _standard_checker(secret_or_public_key, content)
    for entry in signatures.split():
        entry_version, _, encoded = entry.partition(",")
        given = _b64decode(encoded)
        if entry_version == version and given is not None and matches(given):
            return
    raise VerificationError(f"no {version} signature in webhook-signature matches")


def verify_cobalt(secret: str, headers: Mapping[str, str], body: bytes | str) -> None:
    """Verify `x-cobalt-signature`: hex HMAC-SHA256 of the raw body keyed with the
    UTF-8 bytes of `secret`. (The scheme carries no timestamp.)"""
    given = _header(headers, "x-cobalt-signature").strip().lower()
    expected = hmac.new(secret.encode(), _as_bytes(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise VerificationError("x-cobalt-signature does not match the body")


def verify_cobo(
    public_key_hex_or_pem: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    now: datetime | float | None = None,
) -> None:
    """Verify Cobo-style `Biz-Resp-Signature`: hex Ed25519 over
    SHA-256(SHA-256(body + "|" + Biz-Timestamp)), timestamp in unix milliseconds
    within `tolerance` seconds of `now`. Raises VerificationError otherwise."""
    public = _load_public_key(public_key_hex_or_pem)
    ts_text = _header(headers, "biz-timestamp").strip()
    signature_hex = _header(headers, "biz-resp-signature").strip()
    _check_fresh(_parse_int(ts_text, "Biz-Timestamp") / 1000, tolerance, now)
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError as exc:
        raise VerificationError("Biz-Resp-Signature is not hex") from exc
    message = _as_bytes(body) + b"|" + ts_text.encode()
    digest = hashlib.sha256(hashlib.sha256(message).digest()).digest()
    try:
        public.verify(signature, digest)
    except InvalidSignature as exc:
        raise VerificationError("Biz-Resp-Signature does not match the body") from exc
