"""Receiver-side verification: dispatcher.verify, and the README's Python and Node
snippets, accept what the signers send and reject altered, stale or foreign requests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher.signing import (
    generate_secret,
    make_signer,
    public_key,
    public_key_pem,
    serialize_body,
)
from dispatcher.verify import VerificationError, verify_cobalt, verify_cobo, verify_standard

README = Path(__file__).resolve().parents[2] / "README.md"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
BODY = '{"event_id":"e1","data":{"amount":"10","note":"naïve ✓"},"n":3}'.encode()


def altered(body: bytes) -> bytes:
    return body.replace(b"10", b"11")


def sign(scheme: str, secrets: list[str], when: datetime = NOW) -> dict[str, str]:
    return make_signer(scheme, secrets).sign("msg_1", when, BODY)


def test_standard_v1_accepts_any_of_the_rotation_signatures() -> None:
    new, old = generate_secret("standard-v1"), generate_secret("standard-v1")
    headers = sign("standard-v1", [new, old])
    verify_standard(new, headers, BODY, now=NOW)
    verify_standard(old, headers, BODY, now=NOW)
    verify_standard(old, headers, BODY.decode(), now=NOW.timestamp())


def test_standard_v1_rejects_altered_body_and_other_secret() -> None:
    secret = generate_secret("standard-v1")
    headers = sign("standard-v1", [secret])
    with pytest.raises(VerificationError, match="no v1 signature"):
        verify_standard(secret, headers, altered(BODY), now=NOW)
    with pytest.raises(VerificationError, match="no v1 signature"):
        verify_standard(generate_secret("standard-v1"), headers, BODY, now=NOW)


def test_standard_official_vector_verifies() -> None:
    headers = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    verify_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", headers, b'{"test": 2432232314}',
                    now=1614265330 + 10)


def test_standard_timestamp_tolerance_is_five_minutes() -> None:
    secret = generate_secret("standard-v1")
    headers = sign("standard-v1", [secret])
    verify_standard(secret, headers, BODY, now=NOW + timedelta(seconds=299))
    with pytest.raises(VerificationError, match="too old"):
        verify_standard(secret, headers, BODY, now=NOW + timedelta(seconds=301))
    with pytest.raises(VerificationError, match="too new"):
        verify_standard(secret, headers, BODY, now=NOW - timedelta(seconds=301))


def test_header_lookup_is_case_insensitive_and_missing_headers_are_named() -> None:
    secret = generate_secret("standard-v1")
    headers = {k.upper(): v for k, v in sign("standard-v1", [secret]).items()}
    verify_standard(secret, headers, BODY, now=NOW)
    del headers["WEBHOOK-SIGNATURE"]
    with pytest.raises(VerificationError, match="missing header webhook-signature"):
        verify_standard(secret, headers, BODY, now=NOW)


def test_standard_v1a_verifies_with_public_key_only() -> None:
    new, old = generate_secret("standard-v1a"), generate_secret("standard-v1a")
    headers = sign("standard-v1a", [new, old])
    for secret in (new, old):
        pub = public_key("standard-v1a", secret)
        assert pub is not None and pub.startswith("whpk_")
        verify_standard(pub, headers, BODY, now=NOW)
        with pytest.raises(VerificationError, match="no v1a signature"):
            verify_standard(pub, headers, altered(BODY), now=NOW)
    other = public_key("standard-v1a", generate_secret("standard-v1a"))
    assert other is not None
    with pytest.raises(VerificationError):
        verify_standard(other, headers, BODY, now=NOW)


def test_v1_secret_does_not_accept_v1a_entries() -> None:
    headers = sign("standard-v1a", [generate_secret("standard-v1a")])
    with pytest.raises(VerificationError):
        verify_standard(generate_secret("standard-v1"), headers, BODY, now=NOW)


def test_cobalt_verify() -> None:
    secret = generate_secret("cobalt")
    headers = sign("cobalt", [secret])
    verify_cobalt(secret, {"X-Cobalt-Signature": headers["x-cobalt-signature"]}, BODY)
    with pytest.raises(VerificationError, match="does not match"):
        verify_cobalt(secret, headers, altered(BODY))
    with pytest.raises(VerificationError, match="missing header"):
        verify_cobalt(secret, {}, BODY)


def test_cobo_verify_with_hex_and_pem_and_underscore_header_names() -> None:
    secret = generate_secret("cobo")
    headers = sign("cobo", [secret])
    hex_key = public_key("cobo", secret)
    assert hex_key is not None
    for key in (hex_key, public_key_pem(secret)):
        verify_cobo(key, headers, BODY, now=NOW)
        with pytest.raises(VerificationError, match="does not match"):
            verify_cobo(key, headers, altered(BODY), now=NOW)
    underscored = {
        "BIZ_TIMESTAMP": headers["Biz-Timestamp"],
        "BIZ_RESP_SIGNATURE": headers["Biz-Resp-Signature"],
    }
    verify_cobo(hex_key, underscored, BODY, now=NOW)
    with pytest.raises(VerificationError, match="too old"):
        verify_cobo(hex_key, headers, BODY, now=NOW + timedelta(minutes=6))
    other = public_key("cobo", generate_secret("cobo"))
    assert other is not None
    with pytest.raises(VerificationError):
        verify_cobo(other, headers, BODY, now=NOW)


def test_bad_public_key_is_a_verification_error() -> None:
    headers = sign("cobo", [generate_secret("cobo")])
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_cobo("abcd", headers, BODY, now=NOW)


# --- The README's snippets, run as written -------------------------------------


def readme_blocks(lang: str) -> list[str]:
    text = README.read_text()
    section = text.split("<!-- section:signing -->")[1].split("<!-- /section:signing -->")[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def fresh_cases() -> dict[str, Any]:
    """Freshly signed requests for each scheme, plus a tampered body."""
    now = datetime.now(UTC)
    v1 = [generate_secret("standard-v1"), generate_secret("standard-v1")]
    v1a = generate_secret("standard-v1a")
    cobalt = generate_secret("cobalt")
    cobo = generate_secret("cobo")

    def lower(h: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v for k, v in h.items()}

    return {
        "body": BODY.decode(),
        "tampered": altered(BODY).decode(),
        "v1_old_secret": v1[1],
        "v1_headers": lower(make_signer("standard-v1", v1).sign("m1", now, BODY)),
        "v1a_pem": public_key_pem(v1a),
        "v1a_headers": lower(make_signer("standard-v1a", [v1a]).sign("m2", now, BODY)),
        "cobalt_secret": cobalt,
        "cobalt_headers": lower(make_signer("cobalt", [cobalt]).sign("m3", now, BODY)),
        "cobo_hex": public_key("cobo", cobo),
        "cobo_pem": public_key_pem(cobo),
        "cobo_headers": lower(make_signer("cobo", [cobo]).sign("m4", now, BODY)),
    }


def test_readme_python_snippet_verifies_and_rejects() -> None:
    blocks = [b for b in readme_blocks("python") if "def verify_standard_v1" in b]
    assert len(blocks) == 1
    ns: dict[str, Any] = {}
    exec(blocks[0], ns)
    c = fresh_cases()
    for body, ok in ((c["body"].encode(), True), (c["tampered"].encode(), False)):
        assert ns["verify_standard_v1"](c["v1_old_secret"], c["v1_headers"], body) is ok
        assert ns["verify_cobalt"](c["cobalt_secret"], c["cobalt_headers"], body) is ok
        assert ns["verify_cobo"](c["cobo_hex"], c["cobo_headers"], body) is ok


NODE_HARNESS = """
const c = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = {};
for (const [name, body] of [['good', c.body], ['tampered', c.tampered]]) {
  const raw = Buffer.from(body, 'utf8');
  out[name] = [
    verifyStandard(c.v1_old_secret, c.v1_headers, raw),
    verifyStandard(c.v1a_pem, c.v1a_headers, raw),
    verifyCobalt(c.cobalt_secret, c.cobalt_headers, raw),
    verifyCobo(c.cobo_pem, c.cobo_headers, raw),
  ];
}
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_readme_node_snippet_verifies_and_rejects() -> None:
    blocks = readme_blocks("js")
    assert len(blocks) == 1
    result = subprocess.run(
        ["node", "-e", blocks[0] + NODE_HARNESS],
        input=json.dumps(fresh_cases()), capture_output=True, text=True, timeout=30, check=True,
    )
    assert json.loads(result.stdout) == {"good": [True] * 4, "tampered": [False] * 4}


COBALT_SEED_VERIFIER = """
const crypto = require('crypto');
const c = JSON.parse(require('fs').readFileSync(0, 'utf8'));
// Seed 003: the receiver re-serializes the parsed body before the HMAC.
console.log(JSON.stringify(c.cases.map(([body, signature]) => {
  const expected = crypto.createHmac('sha256', c.secret)
    .update(JSON.stringify(JSON.parse(body))).digest('hex');
  return crypto.timingSafeEqual(Buffer.from(signature, 'hex'), Buffer.from(expected, 'hex'));
})));
"""

TRICKY_BODIES: list[Any] = [
    {"event": "Workflow Completed", "status": "COMPLETED", "environment": "test"},
    {"a": {"b": {"c": [1, -2, 0, 9007199254740991, [], {}]}}, "empty": ""},
    {"unicode": "héllo ✓ 中文 😀 \u2028\u2029", "ctrl": "tab\there\nnl\u0001\u001f\x7f"},
    {"quotes": "\"'\\/<>&", "bools": [True, False, None], "neg": -0},
    {"key with spaces": 1, "ключ": "значение", "": "empty key"},
]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_cobalt_seed_node_verifier_accepts_reserialized_bodies() -> None:
    secret = generate_secret("cobalt")
    signer = make_signer("cobalt", [secret])
    cases = []
    for obj in TRICKY_BODIES:
        body = serialize_body(obj)
        cases.append([body.decode(), signer.sign("e", NOW, body)["x-cobalt-signature"]])
    result = subprocess.run(
        ["node", "-e", COBALT_SEED_VERIFIER],
        input=json.dumps({"secret": secret, "cases": cases}),
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert json.loads(result.stdout) == [True] * len(TRICKY_BODIES)
