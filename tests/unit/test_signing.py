"""Signing schemes: the headers a real verifier accepts, checked with independent
code (the `standardwebhooks` package, `cryptography`'s Ed25519 public keys, hmac)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dispatcher.errors import ValidationError
from dispatcher.signing import (
    SCHEMES,
    generate_secret,
    make_signer,
    public_key,
    public_key_pem,
    serialize_body,
)

BODY = serialize_body({"type": "deposit", "data": {"amount": "1.5", "memo": "héllo ✓"}})


def flip_one_byte(body: bytes) -> bytes:
    return body[:5] + bytes([body[5] ^ 0x01]) + body[6:]


def test_official_standard_webhooks_vector_byte_for_byte() -> None:
    signer = make_signer("standard-v1", ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    headers = signer.sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, UTC),
        b'{"test": 2432232314}',
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_standard_timestamp_is_unix_seconds_of_when() -> None:
    signer = make_signer("standard-v1", [generate_secret("standard-v1")])
    when = datetime(2025, 3, 1, 12, 0, 5, 987654, tzinfo=UTC)
    assert signer.sign("m", when, b"{}")["webhook-timestamp"] == str(int(when.timestamp()))


def test_standard_v1_verifies_with_standardwebhooks_package() -> None:
    secret = generate_secret("standard-v1")
    headers = make_signer("standard-v1", [secret]).sign("msg_1", datetime.now(UTC), BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(flip_one_byte(BODY), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret("standard-v1")).verify(BODY, headers)


def test_rotation_signs_with_both_secrets_and_each_verifies() -> None:
    new, old = generate_secret("standard-v1"), generate_secret("standard-v1")
    headers = make_signer("standard-v1", [new, old]).sign("msg_2", datetime.now(UTC), BODY)
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    assert all(e.startswith("v1,") for e in entries)
    for secret in (new, old):
        Webhook(secret).verify(BODY, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(flip_one_byte(BODY), headers)


def ed25519_from_whpk(whpk: str) -> Ed25519PublicKey:
    assert whpk.startswith("whpk_")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk[5:]))


def test_standard_v1a_verifies_with_only_the_public_key() -> None:
    new, old = generate_secret("standard-v1a"), generate_secret("standard-v1a")
    assert new.startswith("whsk_") and len(base64.b64decode(new[5:])) == 32
    when = datetime.now(UTC)
    headers = make_signer("standard-v1a", [new, old]).sign("msg_3", when, BODY)
    ts = str(int(when.timestamp()))
    assert headers["webhook-id"] == "msg_3" and headers["webhook-timestamp"] == ts
    content = f"msg_3.{ts}.".encode() + BODY
    entries = headers["webhook-signature"].split(" ")
    assert [e.split(",")[0] for e in entries] == ["v1a", "v1a"]
    for secret, entry in zip((new, old), entries, strict=True):
        pub_text = public_key("standard-v1a", secret)
        assert pub_text is not None
        for pub in (
            ed25519_from_whpk(pub_text),
            load_pem_public_key(public_key_pem(secret).encode()),
        ):
            assert isinstance(pub, Ed25519PublicKey)
            signature = base64.b64decode(entry.split(",")[1])
            pub.verify(signature, content)
            with pytest.raises(InvalidSignature):
                pub.verify(signature, f"msg_3.{ts}.".encode() + flip_one_byte(BODY))


def cobo_digest(body: bytes, ts: str) -> bytes:
    return hashlib.sha256(hashlib.sha256(body + b"|" + ts.encode()).digest()).digest()


def test_cobo_signature_verifies_with_exported_hex_and_pem_public_key() -> None:
    secret = generate_secret("cobo")
    assert len(bytes.fromhex(secret)) == 32
    when = datetime(2025, 3, 1, 12, 0, 5, 123456, tzinfo=UTC)
    headers = make_signer("cobo", [secret]).sign("evt_1", when, BODY)
    assert set(headers) == {"Biz-Timestamp", "Biz-Resp-Signature"}
    assert headers["Biz-Timestamp"] == str(int(when.timestamp()) * 1000 + 123)
    signature = bytes.fromhex(headers["Biz-Resp-Signature"])
    hex_key = public_key("cobo", secret)
    assert hex_key is not None and len(bytes.fromhex(hex_key)) == 32
    pem_key = load_pem_public_key(public_key_pem(secret).encode())
    assert isinstance(pem_key, Ed25519PublicKey)
    for pub in (Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key)), pem_key):
        pub.verify(signature, cobo_digest(BODY, headers["Biz-Timestamp"]))
        with pytest.raises(InvalidSignature):
            pub.verify(signature, cobo_digest(flip_one_byte(BODY), headers["Biz-Timestamp"]))


def test_cobo_and_cobalt_sign_with_the_newest_secret_only() -> None:
    now = datetime.now(UTC)
    cobalt_new, cobalt_old = generate_secret("cobalt"), generate_secret("cobalt")
    headers = make_signer("cobalt", [cobalt_new, cobalt_old]).sign("e", now, BODY)
    assert headers == {
        "x-cobalt-signature": hmac.new(cobalt_new.encode(), BODY, hashlib.sha256).hexdigest()
    }
    cobo_new, cobo_old = generate_secret("cobo"), generate_secret("cobo")
    headers = make_signer("cobo", [cobo_new, cobo_old]).sign("e", now, BODY)
    pub_hex = public_key("cobo", cobo_new)
    assert pub_hex is not None
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex)).verify(
        bytes.fromhex(headers["Biz-Resp-Signature"]), cobo_digest(BODY, headers["Biz-Timestamp"])
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(obj=st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_cobalt_signature_matches_hmac_of_reserialized_body(obj: dict[str, Any]) -> None:
    secret = generate_secret("cobalt")
    body = serialize_body(obj)
    reserialized = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    assert reserialized.encode() == body
    headers = make_signer("cobalt", [secret]).sign("e", datetime.now(UTC), body)
    expected = hmac.new(secret.encode(), reserialized.encode(), hashlib.sha256).hexdigest()
    assert headers["x-cobalt-signature"] == expected


def test_serialize_body_is_compact_utf8_without_escapes() -> None:
    body = serialize_body({"a": [1, 2.5, None, True], "b": {"c": "ü€😀"}})
    assert body == '{"a":[1,2.5,null,true],"b":{"c":"ü€😀"}}'.encode()


def test_generated_secrets_have_documented_formats_and_differ() -> None:
    v1 = generate_secret("standard-v1")
    assert v1.startswith("whsec_") and len(base64.b64decode(v1[6:])) == 32
    assert len(generate_secret("cobalt")) >= 32
    for scheme in SCHEMES:
        assert generate_secret(scheme) != generate_secret(scheme)


def test_public_key_is_none_for_hmac_schemes() -> None:
    assert public_key("standard-v1", generate_secret("standard-v1")) is None
    assert public_key("cobalt", generate_secret("cobalt")) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: generate_secret("rsa"),
        lambda: public_key("standard", "x"),
        lambda: make_signer("v1", ["whsec_AAAA"]),
    ],
)
def test_unknown_scheme_is_a_validation_error_on_signing_scheme(call: Any) -> None:
    with pytest.raises(ValidationError) as err:
        call()
    assert err.value.field == "signing_scheme"


@pytest.mark.parametrize(
    ("scheme", "secret"),
    [
        ("standard-v1", "whsec_not base64!"),
        ("standard-v1", "whsec_"),
        ("standard-v1a", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("standard-v1a", "whsk_AAAA"),
        ("cobo", "zz"),
        ("cobo", "00" * 16),
        ("cobalt", ""),
    ],
)
def test_malformed_secret_is_a_validation_error(scheme: str, secret: str) -> None:
    with pytest.raises(ValidationError) as err:
        make_signer(scheme, [secret])
    assert err.value.field == "secret"


def test_no_secret_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        make_signer("standard-v1", [])


def test_signing_is_deterministic_per_attempt_time() -> None:
    signer = make_signer("standard-v1", [generate_secret("standard-v1")])
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    first = signer.sign("m", t0, BODY)
    assert signer.sign("m", t0, BODY) == first
    later = signer.sign("m", t0 + timedelta(seconds=5), BODY)
    assert later["webhook-id"] == "m" and later["webhook-signature"] != first["webhook-signature"]


def test_serialize_body_rejects_unpaired_surrogates_clearly() -> None:
    with pytest.raises(ValidationError) as err:
        serialize_body(json.loads('{"s": "\\ud800"}'))
    assert err.value.field == "data"


def test_public_key_pem_refuses_hmac_secrets() -> None:
    with pytest.raises(ValidationError, match="only for standard-v1a"):
        public_key_pem(generate_secret("standard-v1"))
