"""Checking per-endpoint delivery options as a user sends them: custom headers,
receiver auth and client TLS; every refusal names the offending part, the values
come out normalised, and the public views hold no secret. Also the health
warning for a client certificate near its expiry."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from dispatcher.config import HealthConfig, UrlPolicyConfig
from dispatcher.errors import ValidationError
from dispatcher.model import EndpointState
from dispatcher.store.health import EndpointHealth
from dispatcher.transport.options import (
    BasicAuth,
    BearerAuth,
    ClientTls,
    OAuth2ClientCredentials,
)
from dispatcher.transport.validate import (
    REFUSED_HEADERS,
    auth_view,
    header_lines,
    parse_auth,
    parse_headers,
    parse_tls,
    tls_view,
)
from dispatcher.web.views import health_json

STRICT = UrlPolicyConfig()
TOKEN_URL = "https://auth.example.com/oauth/token"


# --- certificates for the tests ------------------------------------------------------


@dataclass
class Identity:
    """A client certificate chain (leaf first) with its key, and the CA that issued it."""

    chain_pem: str
    key: Any
    leaf: x509.Certificate
    ca_pem: str
    ca: x509.Certificate

    def key_pem(self, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
                password: bytes | None = None) -> str:
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption() if password is None
            else serialization.BestAvailableEncryption(password))
        return self.key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()

    def body(self, **extra: Any) -> dict[str, Any]:
        return {"client_certificate": self.chain_pem, "client_key": self.key_pem(), **extra}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Bank"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(subject: str, public_key: Any, issuer: str, issuer_key: Any,
                 not_after: datetime, *, ca: bool) -> x509.Certificate:
    now = datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(min(now, not_after) - timedelta(days=1))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def make_identity(*, days: float = 365, cn: str = "dispatcher-client",
                  rsa_key: bool = False, intermediate: bool = False) -> Identity:
    """A private CA and a client certificate it issued, valid for `days` more days."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    far = datetime.now(UTC) + timedelta(days=3650)
    ca = _certificate("Example Root CA", ca_key.public_key(), "Example Root CA", ca_key, far,
                      ca=True)
    key: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key
                else ec.generate_private_key(ec.SECP256R1()))
    issuer_name, issuer_key, chain = "Example Root CA", ca_key, []
    if intermediate:
        mid_key = ec.generate_private_key(ec.SECP256R1())
        mid = _certificate("Example Issuing CA", mid_key.public_key(), issuer_name, ca_key,
                           far, ca=True)
        issuer_name, issuer_key, chain = "Example Issuing CA", mid_key, [mid]
    not_after = (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)
    leaf = _certificate(cn, key.public_key(), issuer_name, issuer_key, not_after, ca=False)
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in [leaf, *chain])
    return Identity(pem, key, leaf, ca.public_bytes(serialization.Encoding.PEM).decode(), ca)


def _refused(call: Any, field: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        call()
    assert caught.value.field == field, caught.value.message
    assert caught.value.status == 422
    return caught.value


# --- headers ---------------------------------------------------------------------------


def test_headers_come_back_as_pairs_in_the_given_order() -> None:
    given = {"X-Api-Key": "k1", "x-tenant": "acme", "Accept": "application/json",
             "X-Tab": "a\tb", "X-Utf8": "café"}
    assert parse_headers(given) == tuple(given.items())
    assert parse_headers(None) == () and parse_headers({}) == ()


@pytest.mark.parametrize("name", [
    "Host", "Content-Length", "Content-Type", "Transfer-Encoding", "Connection",
    "Keep-Alive", "Upgrade", "TE", "Trailer", "Proxy-Authorization", "Proxy-Connection",
    "Authorization", "webhook-id", "webhook-timestamp", "webhook-signature",
    "x-cobalt-signature", "Biz-Timestamp", "Biz-Resp-Signature", "traceparent",
    "tracestate", "HOST", "authorization", "Webhook-Signature", "TraceParent",
])
def test_headers_the_sender_owns_are_refused_by_name(name: str) -> None:
    err = _refused(lambda: parse_headers({"X-Ok": "1", name: "v"}), f"headers.{name}")
    assert name in err.message
    assert name.lower() in REFUSED_HEADERS


def test_authorization_is_refused_with_a_pointer_to_auth() -> None:
    err = _refused(lambda: parse_headers({"Authorization": "Bearer x"}), "headers.Authorization")
    assert "use `auth`" in err.message and "encrypted" in err.message


@pytest.mark.parametrize("name", ["Bad Name", "X:Y", "X-Ü", "X(1)", 'X"', "X@", "X\x00",
                                  "X-A\n", "\nX-A", "X-A\r"])
def test_header_names_must_be_tokens(name: str) -> None:
    _refused(lambda: parse_headers({name: "v"}), f"headers.{name}")


def test_header_name_length_count_and_duplicates() -> None:
    assert parse_headers({"X" * 100: "v"}) == (("X" * 100, "v"),)
    _refused(lambda: parse_headers({"X" * 101: "v"}), "headers")
    _refused(lambda: parse_headers({"": "v"}), "headers")
    twenty = {f"X-H{i}": str(i) for i in range(20)}
    assert len(parse_headers(twenty)) == 20
    _refused(lambda: parse_headers({**twenty, "X-H20": "x"}), "headers")
    err = _refused(lambda: parse_headers({"X-Api-Key": "a", "x-api-key": "b"}),
                   "headers.x-api-key")
    assert "twice" in err.message
    _refused(lambda: parse_headers(["X-Api-Key", "a"]), "headers")
    _refused(lambda: parse_headers("X-Api-Key: a"), "headers")


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "a\x01b", "a\x7fb", "a\x85b",
                                   "\ud800", " lead", "trail\t", "x" * 1025, "é" * 513,
                                   5, None, ["a"], {"a": "b"}])
def test_header_values_are_short_text_without_control_characters(value: Any) -> None:
    _refused(lambda: parse_headers({"X-Api-Key": value}), "headers.X-Api-Key")


def test_header_values_up_to_1024_bytes() -> None:
    assert parse_headers({"X-A": "x" * 1024}) == (("X-A", "x" * 1024),)
    assert parse_headers({"X-A": "é" * 512}) == (("X-A", "é" * 512),)
    assert parse_headers({"X-A": ""}) == (("X-A", ""),)


def test_header_lines_for_the_cli_and_the_console() -> None:
    assert header_lines(["X-Api-Key: k1", "", "X-Empty:", "X-Colon: a:b  "]) == {
        "X-Api-Key": "k1", "X-Empty": "", "X-Colon": "a:b"}
    _refused(lambda: header_lines(["no colon here"]), "headers")
    _refused(lambda: header_lines([": value"]), "headers")
    _refused(lambda: header_lines(["X-A: 1", "X-A: 2"]), "headers.X-A")


# --- auth ------------------------------------------------------------------------------


def test_the_three_auth_types() -> None:
    assert parse_auth(None, STRICT) is None
    assert parse_auth({"type": "basic", "username": "bank", "password": "p:w ss"},
                      STRICT) == BasicAuth("bank", "p:w ss")
    assert parse_auth({"type": "bearer", "token": "tok-123"}, STRICT) == BearerAuth("tok-123")
    full = parse_auth({"type": "oauth2_client_credentials", "token_url": f" {TOKEN_URL} ",
                       "client_id": "cid", "client_secret": "cs", "scope": "hooks.write",
                       "audience": "https://api.example.com"}, STRICT)
    assert full == OAuth2ClientCredentials(TOKEN_URL, "cid", "cs", "hooks.write",
                                           "https://api.example.com")
    short = parse_auth({"type": "oauth2_client_credentials", "token_url": TOKEN_URL,
                        "client_id": "cid", "client_secret": "cs", "scope": None}, STRICT)
    assert short == OAuth2ClientCredentials(TOKEN_URL, "cid", "cs")


@pytest.mark.parametrize(("body", "field"), [
    ("bearer", "auth"),
    (["basic"], "auth"),
    ({}, "auth.type"),
    ({"type": "digest"}, "auth.type"),
    ({"type": 1}, "auth.type"),
    ({"type": "basic", "username": "u"}, "auth.password"),
    ({"type": "basic", "password": "p"}, "auth.username"),
    ({"type": "basic", "username": "a:b", "password": "p"}, "auth.username"),
    ({"type": "basic", "username": "", "password": "p"}, "auth.username"),
    ({"type": "basic", "username": "u", "password": "p", "realm": "x"}, "auth.realm"),
    ({"type": "basic", "username": "u", "password": 5}, "auth.password"),
    ({"type": "basic", "username": "u", "password": "a\nb"}, "auth.password"),
    ({"type": "basic", "username": "u\x00", "password": "p"}, "auth.username"),
    ({"type": "bearer", "token": ""}, "auth.token"),
    ({"type": "bearer", "token": "t" * 4097}, "auth.token"),
    ({"type": "bearer", "token": "t\r\n"}, "auth.token"),
    ({"type": "bearer", "token": "t", "username": "u"}, "auth.username"),
    ({"type": "oauth2_client_credentials", "client_id": "c", "client_secret": "s"},
     "auth.token_url"),
    ({"type": "oauth2_client_credentials", "token_url": "ftp://auth.example.com/t",
      "client_id": "c", "client_secret": "s"}, "auth.token_url"),
    ({"type": "oauth2_client_credentials", "token_url": "https://10.0.0.1/token",
      "client_id": "c", "client_secret": "s"}, "auth.token_url"),
    ({"type": "oauth2_client_credentials", "token_url": "https://u:p@auth.example.com/t",
      "client_id": "c", "client_secret": "s"}, "auth.token_url"),
    ({"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_secret": "s"},
     "auth.client_id"),
    ({"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "c"},
     "auth.client_secret"),
    ({"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "c",
      "client_secret": "s", "scope": ""}, "auth.scope"),
    ({"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "c",
      "client_secret": "s", "audience": 3}, "auth.audience"),
    ({"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "c",
      "client_secret": "s", "grant_type": "password"}, "auth.grant_type"),
])
def test_bad_auth_is_refused_naming_the_field(body: Any, field: str) -> None:
    _refused(lambda: parse_auth(body, STRICT), field)


def test_the_token_url_error_speaks_of_the_token_url() -> None:
    err = _refused(lambda: parse_auth({"type": "oauth2_client_credentials",
                                       "token_url": "http://auth.example.com/t",
                                       "client_id": "c", "client_secret": "s"}, STRICT),
                   "auth.token_url")
    assert err.message.startswith("auth.token_url must use https")
    relaxed = UrlPolicyConfig(allow_http=True, allow_any_port=True,
                              allow_private_networks=True)
    local = parse_auth({"type": "oauth2_client_credentials",
                        "token_url": "http://127.0.0.1:8099/t", "client_id": "c",
                        "client_secret": "s"}, relaxed)
    assert isinstance(local, OAuth2ClientCredentials)


def test_the_auth_view_holds_no_secret() -> None:
    assert auth_view(BasicAuth("bank", "pw-1")) == {"type": "basic", "username": "bank"}
    assert auth_view(BearerAuth("tok-1")) == {"type": "bearer"}
    assert auth_view(OAuth2ClientCredentials(TOKEN_URL, "cid", "cs-1", "s")) == {
        "type": "oauth2_client_credentials", "token_url": TOKEN_URL, "client_id": "cid",
        "scope": "s", "audience": None}


# --- TLS -------------------------------------------------------------------------------


def test_tls_keeps_the_chain_and_normalises_the_key_to_pkcs8() -> None:
    ident = make_identity(intermediate=True, rsa_key=True)
    trad = ident.key_pem(serialization.PrivateFormat.TraditionalOpenSSL)
    assert "BEGIN RSA PRIVATE KEY" in trad
    tls = parse_tls({"client_certificate": "junk before\n" + ident.chain_pem,
                     "client_key": trad, "ca_certificate": ident.ca_pem})
    assert isinstance(tls, ClientTls)
    assert tls.client_certificate == ident.chain_pem  # re-encoded: the junk is dropped
    assert len(x509.load_pem_x509_certificates(tls.client_certificate.encode())) == 2
    assert tls.client_key.startswith("-----BEGIN PRIVATE KEY-----")
    assert tls.client_key == ident.key_pem()
    assert tls.ca_certificate == ident.ca_pem
    assert parse_tls(None) is None
    plain = parse_tls(ident.body())
    assert plain is not None and plain.ca_certificate is None


def test_a_key_that_does_not_match_the_leaf_is_refused() -> None:
    ident, other = make_identity(), make_identity()
    err = _refused(lambda: parse_tls({"client_certificate": ident.chain_pem,
                                      "client_key": other.key_pem()}), "tls.client_key")
    assert "does not match" in err.message
    # The key of the intermediate (not the leaf) does not match either.
    chained = make_identity(intermediate=True)
    swapped = chained.chain_pem.split("-----END CERTIFICATE-----\n")
    wrong_order = swapped[1] + "-----END CERTIFICATE-----\n" + swapped[0] + \
        "-----END CERTIFICATE-----\n"
    _refused(lambda: parse_tls({"client_certificate": wrong_order,
                                "client_key": chained.key_pem()}), "tls.client_key")


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8,
                                 serialization.PrivateFormat.TraditionalOpenSSL])
def test_an_encrypted_key_is_refused_with_a_clear_message(
    fmt: serialization.PrivateFormat,
) -> None:
    ident = make_identity()
    err = _refused(lambda: parse_tls({"client_certificate": ident.chain_pem,
                                      "client_key": ident.key_pem(fmt, b"pass")}),
                   "tls.client_key")
    assert "encrypted" in err.message and "unencrypted" in err.message


def test_bad_tls_shapes_are_refused_naming_the_field() -> None:
    ident = make_identity()
    cases: list[tuple[Any, str]] = [
        ("PEM", "tls"),
        ({"client_key": ident.key_pem()}, "tls.client_certificate"),
        ({"client_certificate": ident.chain_pem}, "tls.client_key"),
        (ident.body(client_certificate="not a certificate"), "tls.client_certificate"),
        (ident.body(client_certificate=""), "tls.client_certificate"),
        (ident.body(client_certificate=5), "tls.client_certificate"),
        (ident.body(client_certificate=ident.chain_pem + ident.key_pem()),
         "tls.client_certificate"),
        (ident.body(client_key=ident.chain_pem), "tls.client_key"),
        (ident.body(client_key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
         "tls.client_key"),
        (ident.body(client_key="é"), "tls.client_key"),
        (ident.body(ca_certificate="nope"), "tls.ca_certificate"),
        (ident.body(ca_certificate=ident.key_pem()), "tls.ca_certificate"),
        (ident.body(client_certificate="x" * 70000), "tls.client_certificate"),
        (ident.body(password="pw"), "tls.password"),
    ]
    for body, field in cases:
        _refused(lambda body=body: parse_tls(body), field)


def test_the_tls_view_describes_the_certificates_without_the_key() -> None:
    ident = make_identity(days=42, cn="acme-client", intermediate=True)
    tls = parse_tls(ident.body(ca_certificate=ident.ca_pem))
    assert tls is not None
    view = tls_view(tls)
    der = ident.leaf.public_bytes(serialization.Encoding.DER)
    assert view == {
        "client_certificate": {
            "subject": "CN=acme-client,O=Example Bank",
            "issuer": "CN=Example Issuing CA,O=Example Bank",
            "not_after": ident.leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
        },
        "ca_certificate": {
            "subject": "CN=Example Root CA,O=Example Bank",
            "not_after": ident.ca.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    assert "PRIVATE" not in repr(view)
    assert tls_view(ClientTls(tls.client_certificate, tls.client_key))["ca_certificate"] is None


# --- health warning --------------------------------------------------------------------


def _health(not_after: datetime | None) -> EndpointHealth:
    return EndpointHealth(
        endpoint_id=uuid.uuid4(), tenant_id=uuid.uuid4(), url="https://x.example.com",
        state=EndpointState.ACTIVE, state_reason=None, state_changed_at=None,
        failures_in_window=0, failures_since_resume=0, window_threshold=None,
        total_threshold=None, held=0, redrive_pending=False,
        client_certificate_not_after=not_after)


def test_health_warns_of_a_client_certificate_expiring_within_30_days() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    cfg = HealthConfig()
    soon = health_json(_health(now + timedelta(days=10)), cfg, now)["warnings"]
    assert soon == [{"code": "client_certificate_expiring", "not_after": "2030-01-11T00:00:00Z",
                     "message": soon[0]["message"]}]
    assert "2030-01-11T00:00:00Z" in soon[0]["message"]
    gone = health_json(_health(now - timedelta(seconds=1)), cfg, now)["warnings"]
    assert [w["code"] for w in gone] == ["client_certificate_expired"]
    assert health_json(_health(now + timedelta(days=30)), cfg, now)["warnings"] != []
    assert health_json(_health(now + timedelta(days=31)), cfg, now)["warnings"] == []
    assert health_json(_health(now + timedelta(days=365)), cfg, now)["warnings"] == []
    assert health_json(_health(None), cfg, now)["warnings"] == []
