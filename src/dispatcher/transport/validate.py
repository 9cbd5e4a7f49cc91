"""Checking per-endpoint delivery options as a user sends them (custom headers,
receiver authentication, client TLS) into the values of `transport.options`, and
their public views: what the API and the console may show. Pure: no I/O; every
refusal is a ValidationError naming the offending part (`headers.X-Api-Key`,
`auth.token_url`, `tls.client_key`)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from dispatcher import signing
from dispatcher.config import UrlPolicyConfig
from dispatcher.errors import ValidationError
from dispatcher.transport.options import (
    BasicAuth,
    BearerAuth,
    ClientTls,
    OAuth2ClientCredentials,
    ReceiverAuth,
)
from dispatcher.urlpolicy import validate_endpoint_url

MAX_HEADERS = 20
MAX_HEADER_NAME = 100
MAX_HEADER_VALUE_BYTES = 1024
MAX_AUTH_TEXT = 4096
MAX_PEM_CHARS = 65536

# RFC 7230 token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

AUTH_HEADER_REASON = ("is not allowed as a custom header: use `auth` so it is stored "
                      "encrypted and redacted")
# Lower-case name -> why the sender owns it.
REFUSED_HEADERS: dict[str, str] = {
    **{name: "is set by the HTTP client" for name in (
        "host", "content-length", "content-type", "transfer-encoding", "connection")},
    **{name: "is a hop-by-hop header" for name in (
        "keep-alive", "upgrade", "te", "trailer", "proxy-authorization", "proxy-connection")},
    "authorization": AUTH_HEADER_REASON,
    **{name.lower(): "is a signature header the dispatcher sets" for name in (
        signing.WEBHOOK_ID, signing.WEBHOOK_TIMESTAMP, signing.WEBHOOK_SIGNATURE,
        signing.COBALT_SIGNATURE, signing.COBO_TIMESTAMP, signing.COBO_SIGNATURE)},
    **{name: "is a trace context header the dispatcher sets" for name in (
        "traceparent", "tracestate")},
}

BASIC, BEARER, OAUTH2 = "basic", "bearer", "oauth2_client_credentials"
AUTH_TYPES = (BASIC, BEARER, OAUTH2)
# Per type: required fields, optional fields; the secret ones are never shown.
_AUTH_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    BASIC: (("username", "password"), ()),
    BEARER: (("token",), ()),
    OAUTH2: (("token_url", "client_id", "client_secret"), ("scope", "audience")),
}

TLS_FIELDS = ("client_certificate", "client_key", "ca_certificate")
_PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_ENCRYPTED_KEY = re.compile(r"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED")


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"{field} {message}", field=field)


def _has_control(text: str, *, allow_tab: bool = False) -> bool:
    return any(unicodedata.category(ch) == "Cc" and not (allow_tab and ch == "\t")
               for ch in text)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- headers -----------------------------------------------------------------------


def _header_field(name: str) -> str:
    return f"headers.{name}" if len(name) <= MAX_HEADER_NAME else "headers"


def check_header_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise _fail("headers", "names must be non-empty strings")
    field = _header_field(name)
    if len(name) > MAX_HEADER_NAME:
        raise _fail(field, f"names must be at most {MAX_HEADER_NAME} characters")
    if not _TOKEN.fullmatch(name):
        raise _fail(field, "is not a valid header name (letters, digits and "
                           "!#$%&'*+-.^_`|~ only)")
    reason = REFUSED_HEADERS.get(name.lower())
    if reason is not None:
        raise _fail(field, reason)
    return name


def check_header_value(name: str, value: object) -> str:
    field = _header_field(name)
    if not isinstance(value, str):
        raise _fail(field, "must be a string")
    if not _is_utf8(value):
        raise _fail(field, "must be valid UTF-8 text")
    if len(value.encode("utf-8")) > MAX_HEADER_VALUE_BYTES:
        raise _fail(field, f"must be at most {MAX_HEADER_VALUE_BYTES} bytes")
    if _has_control(value, allow_tab=True):
        raise _fail(field, "must not contain control characters (CR, LF, NUL, ...)")
    if value != value.strip(" \t"):
        raise _fail(field, "must not start or end with spaces or tabs")
    return value


def parse_headers(value: object) -> tuple[tuple[str, str], ...]:
    """A JSON object of header name -> value as (name, value) pairs in the given
    order; `null` is no headers."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _fail("headers", 'must be a JSON object of name -> value, e.g. '
                               '{"X-Api-Key": "..."}')
    if len(value) > MAX_HEADERS:
        raise _fail("headers", f"must have at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for name, text in value.items():
        check_header_name(name)
        if name.lower() in seen:
            raise _fail(_header_field(name), "is given twice (header names are "
                                             "case-insensitive)")
        seen.add(name.lower())
        out.append((name, check_header_value(name, text)))
    return tuple(out)


def header_lines(lines: Iterable[str]) -> dict[str, str]:
    """`Name: value` lines (the CLI's --header, the console's textarea) as the JSON
    object `parse_headers` takes; blank lines are skipped."""
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name:
            raise _fail("headers", f"line {n} must look like `Name: value`")
        if name in out:
            raise _fail(_header_field(name), "is given twice")
        out[name] = value.strip(" \t")
    return out


def headers_view(headers: tuple[tuple[str, str], ...] | list[list[str]]) -> dict[str, str]:
    """Stored pairs as the JSON object the API shows (order kept)."""
    return {name: value for name, value in headers}


# --- receiver authentication -------------------------------------------------------


def _auth_text(data: dict[str, Any], key: str, *, required: bool) -> str | None:
    field = f"auth.{key}"
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(field, "is required")
        return None
    if not isinstance(value, str):
        raise _fail(field, "must be a string")
    if not 1 <= len(value) <= MAX_AUTH_TEXT:
        raise _fail(field, f"must be 1 to {MAX_AUTH_TEXT} characters")
    if not _is_utf8(value):
        raise _fail(field, "must be valid UTF-8 text")
    if _has_control(value):
        raise _fail(field, "must not contain control characters")
    return value


def _token_url(value: str, urls: UrlPolicyConfig) -> str:
    try:
        return validate_endpoint_url(value, urls)
    except ValidationError as exc:
        message = exc.message
        message = ("auth.token_url" + message[3:] if message.startswith("url")
                   else f"auth.token_url: {message}")
        raise ValidationError(message, field="auth.token_url") from exc


def parse_auth(value: object, urls: UrlPolicyConfig) -> ReceiverAuth | None:
    """`{"type": "basic" | "bearer" | "oauth2_client_credentials", ...}`, or `null`
    for none. `urls` is the policy the OAuth2 token URL must pass, as endpoint
    URLs do."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("auth", "must be a JSON object or null")
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in _AUTH_FIELDS:
        raise _fail("auth.type", f"must be one of {', '.join(AUTH_TYPES)}")
    required, optional = _AUTH_FIELDS[kind]
    for key in value:
        if key != "type" and key not in required and key not in optional:
            raise _fail(f"auth.{key}", f"is not a field of {kind} auth")
    text = {k: _auth_text(value, k, required=True) or "" for k in required}
    extra = {k: _auth_text(value, k, required=False) for k in optional}
    if kind == BASIC:
        if ":" in text["username"]:
            raise _fail("auth.username", "must not contain ':'")
        return BasicAuth(username=text["username"], password=text["password"])
    if kind == BEARER:
        return BearerAuth(token=text["token"])
    return OAuth2ClientCredentials(
        token_url=_token_url(text["token_url"], urls), client_id=text["client_id"],
        client_secret=text["client_secret"], scope=extra["scope"], audience=extra["audience"])


def auth_type(auth: ReceiverAuth) -> str:
    if isinstance(auth, BasicAuth):
        return BASIC
    if isinstance(auth, BearerAuth):
        return BEARER
    return OAUTH2


def auth_view(auth: ReceiverAuth) -> dict[str, Any]:
    """The type and the fields that are not secret (never the password, token or
    client secret)."""
    if isinstance(auth, BasicAuth):
        return {"type": BASIC, "username": auth.username}
    if isinstance(auth, BearerAuth):
        return {"type": BEARER}
    return {"type": OAUTH2, "token_url": auth.token_url, "client_id": auth.client_id,
            "scope": auth.scope, "audience": auth.audience}


def auth_document(auth: ReceiverAuth) -> dict[str, Any]:
    """Every field, the secret ones included: what is stored encrypted."""
    if isinstance(auth, BasicAuth):
        return {"type": BASIC, "username": auth.username, "password": auth.password}
    if isinstance(auth, BearerAuth):
        return {"type": BEARER, "token": auth.token}
    return {**auth_view(auth), "client_secret": auth.client_secret}


# --- client TLS --------------------------------------------------------------------


def _pem_text(data: dict[str, Any], key: str, *, required: bool) -> str | None:
    field = f"tls.{key}"
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(field, "is required (PEM text)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(field, "must be PEM text")
    if len(value) > MAX_PEM_CHARS:
        raise _fail(field, f"must be at most {MAX_PEM_CHARS} characters")
    if not value.isascii() or "\x00" in value:
        raise _fail(field, "must be PEM text (ASCII)")
    return value


def _certificates(text: str, field: str) -> list[x509.Certificate]:
    if _PRIVATE_KEY_BLOCK.search(text):
        raise _fail(field, "must hold certificates only (the private key goes in "
                           "tls.client_key)")
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError as exc:
        raise _fail(field, "is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from exc
    return certs


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _private_key(text: str) -> PrivateKey:
    field = "tls.client_key"
    if _ENCRYPTED_KEY.search(text):
        raise _fail(field, "is encrypted; give the key unencrypted (e.g. "
                           "`openssl pkey -in key.pem -out plain.pem`): it is stored "
                           "encrypted at rest")
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except TypeError as exc:  # encrypted without the usual marker
        raise _fail(field, "is encrypted; give the key unencrypted") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _fail(field, "is not a PEM private key (-----BEGIN PRIVATE KEY-----)") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey):
        raise _fail(field, "must be an RSA, EC or Ed25519 key")
    return key


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _pem(certs: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def parse_tls(value: object) -> ClientTls | None:
    """`{"client_certificate": PEM, "client_key": PEM, "ca_certificate"?: PEM}`, or
    `null` for none. The certificate chain holds the leaf first; the key must be
    unencrypted and match the leaf. Certificates are re-encoded as plain PEM and
    the key as unencrypted PKCS#8 PEM."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("tls", "must be a JSON object or null")
    for key in value:
        if key not in TLS_FIELDS:
            raise _fail(f"tls.{key}", "is not a known field (client_certificate, "
                                      "client_key, ca_certificate)")
    chain = _certificates(_pem_text(value, "client_certificate", required=True) or "",
                          "tls.client_certificate")
    key = _private_key(_pem_text(value, "client_key", required=True) or "")
    try:
        leaf_key = chain[0].public_key()
    except ValueError as exc:  # a key type cryptography cannot load
        raise _fail("tls.client_certificate", "has a public key of an unsupported "
                                              "type") from exc
    if _spki(key.public_key()) != _spki(leaf_key):
        raise _fail("tls.client_key", "does not match the client certificate (the first "
                                      "certificate of tls.client_certificate)")
    ca_text = _pem_text(value, "ca_certificate", required=False)
    ca = None if ca_text is None else _pem(_certificates(ca_text, "tls.ca_certificate"))
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode("ascii")
    return ClientTls(client_certificate=_pem(chain), client_key=pkcs8, ca_certificate=ca)


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    return {"subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "not_after": rfc3339(cert.not_valid_after_utc),
            "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex()}


def tls_view(tls: ClientTls) -> dict[str, Any]:
    """What may be shown of the TLS material: the client (leaf) certificate's
    subject, issuer, expiry and SHA-256 fingerprint, and the CA's subject and
    expiry (null without a CA). Never the key."""
    leaf = x509.load_pem_x509_certificate(tls.client_certificate.encode("ascii"))
    ca = None
    if tls.ca_certificate is not None:
        first = x509.load_pem_x509_certificates(tls.ca_certificate.encode("ascii"))[0]
        ca = {"subject": first.subject.rfc4514_string(),
              "not_after": rfc3339(first.not_valid_after_utc)}
    return {"client_certificate": describe_certificate(leaf), "ca_certificate": ca}


def tls_document(tls: ClientTls) -> dict[str, Any]:
    """The PEM texts: what is stored encrypted."""
    return {"client_certificate": tls.client_certificate, "client_key": tls.client_key,
            "ca_certificate": tls.ca_certificate}
