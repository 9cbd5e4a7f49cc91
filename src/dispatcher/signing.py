"""Signing schemes (Standard Webhooks v1/v1a, Cobalt, Cobo): secret generation,
public-key export and per-delivery signature headers. Pure: no I/O.

`make_signer` parses the secrets once (HMAC and Ed25519 key objects), so the
per-delivery `sign` call is one hash or signature plus a few string joins.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dispatcher.errors import ValidationError

STANDARD_V1 = "standard-v1"
STANDARD_V1A = "standard-v1a"
COBALT = "cobalt"
COBO = "cobo"
SCHEMES = (STANDARD_V1, STANDARD_V1A, COBALT, COBO)

V1_PREFIX = "whsec_"
V1A_SECRET_PREFIX = "whsk_"
V1A_PUBLIC_PREFIX = "whpk_"
SECRET_BYTES = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_MILLISECOND = timedelta(milliseconds=1)

# Header names as sent. HTTP header names are case-insensitive; these are the
# spellings the providers document.
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
COBALT_SIGNATURE = "x-cobalt-signature"
COBO_TIMESTAMP = "Biz-Timestamp"
COBO_SIGNATURE = "Biz-Resp-Signature"


class Signer(Protocol):
    def sign(self, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
        """The signature headers to add to a POST of `body` made at `when`."""
        ...


def serialize_body(obj: Any) -> bytes:
    """The one serialization of an event body: compact separators, UTF-8, no
    escaping of non-ASCII, so `JSON.stringify(JSON.parse(body))` gives the same bytes."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a "\ud800" escape
        raise ValidationError(
            "event data contains an unpaired UTF-16 surrogate, which UTF-8 cannot encode",
            field="data",
        ) from exc


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValidationError(
            f"unknown signing scheme {scheme!r}; expected one of {', '.join(SCHEMES)}",
            field="signing_scheme",
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _invalid_secret(scheme: str, why: str) -> ValidationError:
    return ValidationError(f"invalid {scheme} secret: {why}", field="secret")


def _b64decode(text: str, scheme: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid_secret(scheme, "not valid base64") from exc


def _v1_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (the prefix is optional, as in the
    reference libraries)."""
    key = _b64decode(secret.removeprefix(V1_PREFIX), STANDARD_V1)
    if not key:
        raise _invalid_secret(STANDARD_V1, "empty key")
    return key


def _ed25519_from_seed(seed: bytes, scheme: str) -> Ed25519PrivateKey:
    if len(seed) == 64:  # seed + public key, as some libraries export it
        seed = seed[:32]
    if len(seed) != 32:
        raise _invalid_secret(scheme, f"expected a 32-byte Ed25519 seed, got {len(seed)} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _v1a_key(secret: str) -> Ed25519PrivateKey:
    if not secret.startswith(V1A_SECRET_PREFIX):
        raise _invalid_secret(STANDARD_V1A, f"must start with {V1A_SECRET_PREFIX}")
    seed = _b64decode(secret[len(V1A_SECRET_PREFIX) :], STANDARD_V1A)
    return _ed25519_from_seed(seed, STANDARD_V1A)


def _cobo_key(secret: str) -> Ed25519PrivateKey:
    try:
        seed = bytes.fromhex(secret)
    except ValueError as exc:
        raise _invalid_secret(COBO, "not valid hex") from exc
    return _ed25519_from_seed(seed, COBO)


def _cobalt_key(secret: str) -> bytes:
    if not secret:
        raise _invalid_secret(COBALT, "empty secret")
    return secret.encode()


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def generate_secret(scheme: str) -> str:
    """New random secret text for `scheme` (32 bytes of entropy)."""
    _check_scheme(scheme)
    if scheme == STANDARD_V1:
        return V1_PREFIX + _b64(_random.token_bytes(SECRET_BYTES))
    if scheme == STANDARD_V1A:
        return V1A_SECRET_PREFIX + _b64(_random.token_bytes(SECRET_BYTES))
    if scheme == COBO:
        return _random.token_bytes(SECRET_BYTES).hex()
    return _random.token_hex(SECRET_BYTES)  # cobalt: used as the UTF-8 text itself


def public_key(scheme: str, secret: str) -> str | None:
    """What a receiver verifies with: `whpk_...` for standard-v1a, hex of the raw
    Ed25519 public key for cobo, None for the HMAC schemes (shared secret)."""
    _check_scheme(scheme)
    if scheme == STANDARD_V1A:
        return V1A_PUBLIC_PREFIX + _b64(_raw_public(_v1a_key(secret)))
    if scheme == COBO:
        return _raw_public(_cobo_key(secret)).hex()
    return None


def public_key_pem(secret: str) -> str:
    """PEM (SubjectPublicKeyInfo) of the Ed25519 public key of a `whsk_` (standard-v1a)
    or hex (cobo) secret."""
    if secret.startswith(V1_PREFIX) or not (
        secret.startswith(V1A_SECRET_PREFIX) or len(secret) in (64, 128)
    ):
        raise ValidationError(
            "a public key exists only for standard-v1a (whsk_...) and cobo (hex) secrets",
            field="secret",
        )
    key = _v1a_key(secret) if secret.startswith(V1A_SECRET_PREFIX) else _cobo_key(secret)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def _since_epoch(when: datetime) -> timedelta:
    """Exact time since the epoch; a naive `when` is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when - _EPOCH


def _unix_seconds(when: datetime) -> str:
    return str(_since_epoch(when) // _SECOND)


def _unix_millis(when: datetime) -> str:
    return str(_since_epoch(when) // _MILLISECOND)


class StandardV1Signer:
    """`webhook-signature: v1,<b64 HMAC-SHA256("{id}.{ts}.{body}")>`, one entry per secret."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._macs = [hmac.new(k, digestmod=hashlib.sha256) for k in keys]

    def sign(self, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
        ts = _unix_seconds(when)
        prefix = f"{msg_id}.{ts}.".encode()
        entries = []
        for base in self._macs:
            mac = base.copy()
            mac.update(prefix)
            mac.update(body)  # not prefix + body: no copy of a large body per delivery
            entries.append("v1," + _b64(mac.digest()))
        return {WEBHOOK_ID: msg_id, WEBHOOK_TIMESTAMP: ts, WEBHOOK_SIGNATURE: " ".join(entries)}


class StandardV1aSigner:
    """`webhook-signature: v1a,<b64 Ed25519("{id}.{ts}.{body}")>`, one entry per key."""

    def __init__(self, keys: Sequence[Ed25519PrivateKey]) -> None:
        self._keys = list(keys)

    def sign(self, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
        ts = _unix_seconds(when)
        content = f"{msg_id}.{ts}.".encode() + body
        entries = " ".join("v1a," + _b64(k.sign(content)) for k in self._keys)
        return {WEBHOOK_ID: msg_id, WEBHOOK_TIMESTAMP: ts, WEBHOOK_SIGNATURE: entries}


class CobaltSigner:
    """`x-cobalt-signature: <hex HMAC-SHA256(body)>` with the newest secret only."""

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def sign(self, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
        mac = self._mac.copy()
        mac.update(body)
        return {COBALT_SIGNATURE: mac.hexdigest()}


class CoboSigner:
    """`Biz-Timestamp: <unix ms>`, `Biz-Resp-Signature: <hex Ed25519 over
    SHA-256(SHA-256(body + b"|" + timestamp))>` with the newest key only."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
        ts = _unix_millis(when)
        inner = hashlib.sha256(body)  # updated in parts: no copy of the body
        inner.update(b"|" + ts.encode())
        digest = hashlib.sha256(inner.digest()).digest()
        return {COBO_TIMESTAMP: ts, COBO_SIGNATURE: self._key.sign(digest).hex()}


def make_signer(scheme: str, secrets: Sequence[str]) -> Signer:
    """A signer for `scheme` from `secrets`, newest first. Standard schemes sign with
    every secret given (rotation: old and new); cobalt and cobo use the newest only."""
    _check_scheme(scheme)
    if not secrets:
        raise ValidationError(f"no secret to sign with for scheme {scheme}", field="secret")
    if scheme == STANDARD_V1:
        return StandardV1Signer([_v1_key(s) for s in secrets])
    if scheme == STANDARD_V1A:
        return StandardV1aSigner([_v1a_key(s) for s in secrets])
    if scheme == COBALT:
        return CobaltSigner(_cobalt_key(secrets[0]))
    return CoboSigner(_cobo_key(secrets[0]))
