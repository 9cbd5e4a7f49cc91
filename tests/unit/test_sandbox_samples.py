"""Sandbox building blocks: sample events are the engine's envelope, --data parsing,
keys, the tampered body and the timing check."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatcher.catalogue import builtin_event_types
from dispatcher.errors import ValidationError
from dispatcher.sandbox.conformance import PASS, WARN, _timing, tampered
from dispatcher.sandbox.forward import Attempt, check_url, signed_headers
from dispatcher.sandbox.samples import (
    build_event,
    event_data,
    incoming_event,
    parse_data,
    signing_key,
)
from dispatcher.signing import SCHEMES, generate_secret
from dispatcher.store.events import event_body
from dispatcher.verify import VerificationError, verify_standard

CATALOGUE = builtin_event_types()


def test_a_sample_event_is_the_published_envelope() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    eid = uuid.uuid4()
    event = build_event("transaction", {"a": "é"}, event_id=eid, created_at=when)
    assert event.body == event_body(eid, "transaction", when, {"a": "é"})
    assert json.loads(event.body)["created_timestamp"] == 1767323045678


def test_parse_data_json_file_and_errors(tmp_path: Path) -> None:
    assert parse_data('{"x": [1, 2]}') == {"x": [1, 2]}
    (tmp_path / "d.json").write_text('"text"')
    assert parse_data(f"@{tmp_path / 'd.json'}") == "text"
    with pytest.raises(ValidationError, match="--data is not valid JSON"):
        parse_data("{'single': 'quotes'}")
    with pytest.raises(ValidationError, match="cannot read --data file"):
        parse_data(f"@{tmp_path / 'missing.json'}")


def test_event_data_uses_the_sample_unless_given() -> None:
    assert event_data(CATALOGUE, "block") == CATALOGUE["block"].sample
    assert event_data(CATALOGUE, "block", None, has_data=True) is None
    assert event_data(CATALOGUE, "tenant.own", {"k": 1}, has_data=True) == {"k": 1}
    with pytest.raises(ValidationError, match="unknown event type"):
        event_data(CATALOGUE, "tenant.own")
    with pytest.raises(ValidationError, match="invalid event type"):
        event_data(CATALOGUE, "*", {}, has_data=True)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signing_keys_generated_or_checked(scheme: str) -> None:
    key = signing_key(scheme, None)
    assert key.generated and signing_key(scheme, key.secret).secret == key.secret
    described = "\n".join(key.describe())
    assert key.secret in described and key.verifier_key in described
    if scheme in ("standard-v1a", "cobo"):
        assert "BEGIN PUBLIC KEY" in described
        assert key.secret not in "\n".join(signing_key(scheme, key.secret).describe())
    else:
        assert signing_key(scheme, key.secret).describe() == []


def test_incoming_events() -> None:
    original = build_event("statuses", {"statuses": [1]})
    kept = incoming_event(original.body, CATALOGUE)
    assert (kept.id, kept.body) == (original.id, original.body)
    pretty = incoming_event(json.dumps(json.loads(original.body), indent=2).encode(), CATALOGUE)
    assert pretty.body == original.body  # serialized the one canonical way
    new = incoming_event(b'{"type": "transaction"}', CATALOGUE)
    assert json.loads(new.body)["data"] == CATALOGUE["transaction"].sample
    for bad, field in [(b"[1]", "type"), (b"\xff", "body"), (b'{"type": 5}', "type"),
                       (b'{"type": "block", "event_id": "x"}', "event_id"),
                       (b'{"type": "block", "event_id": "%s", "created_timestamp": "soon"}'
                        % str(uuid.uuid4()).encode(), "created_timestamp")]:
        with pytest.raises(ValidationError) as caught:
            incoming_event(bad, CATALOGUE)
        assert caught.value.field == field


def test_tampered_body_no_longer_verifies_but_is_still_json() -> None:
    secret = generate_secret("standard-v1")
    for data in ({"amount": "1"}, [1, 2], "text"):
        event = build_event("block", data)
        headers = signed_headers(signing_key("standard-v1", secret), event)
        verify_standard(secret, headers, event.body)
        changed = tampered(event)
        assert json.loads(changed)["event_id"] == str(event.id)
        with pytest.raises(VerificationError):
            verify_standard(secret, headers, changed)


def test_timing_warns_above_one_second() -> None:
    def answered(ms: float) -> Attempt:
        return Attempt("u", {}, b"", status=200, duration_ms=ms)

    assert _timing(answered(10), answered(900), 2.0).status == PASS
    slow = _timing(answered(10), answered(1500), 2.0)
    assert slow.status == WARN and not slow.failed and "1500 ms" in slow.reason


def test_sandbox_urls_allow_local_receivers_only_well_formed() -> None:
    assert check_url(" http://localhost:3000/hook ") == "http://localhost:3000/hook"
    assert check_url("http://10.0.0.5:8080/x") == "http://10.0.0.5:8080/x"
    for bad in ("localhost:3000", "http://h/#frag", "file:///etc/passwd", ""):
        with pytest.raises(ValidationError):
            check_url(bad)
