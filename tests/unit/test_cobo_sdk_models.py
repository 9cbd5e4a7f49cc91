"""The Cobo catalogue against Cobo's own SDK (`cobo-waas2` 1.46.0): every webhook
event type the SDK knows is in the catalogue, and every Cobo sample parses with the
SDK's models into the data model its `data_type` names."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from cobo_waas2 import WebhookEvent, WebhookEventType

from dispatcher.catalogue import builtin_event_types
from dispatcher.signing import serialize_body
from dispatcher.store.events import cobo_envelope, event_body
from tests.support.cobo import SDK_TYPES

COBO = {name: t for name, t in builtin_event_types().items() if t.group == "cobo"}


def test_every_sdk_webhook_event_type_is_in_the_catalogue() -> None:
    assert len(SDK_TYPES) == 60  # the SDK's enum also holds a "None" placeholder
    assert [t for t in SDK_TYPES if t not in COBO] == []
    assert sorted(COBO) == sorted(SDK_TYPES)


@pytest.mark.parametrize("name", sorted(COBO))
def test_every_cobo_sample_validates_with_the_sdk_models(name: str) -> None:
    sample = COBO[name].sample
    event = WebhookEvent.from_dict({"event_id": str(uuid.uuid4()),
                                    "url": "https://hooks.example.com/cobo",
                                    "created_timestamp": 1701396866000, "type": name,
                                    "data": sample})
    assert event is not None and event.type == WebhookEventType(name)
    parsed = event.data.actual_instance
    assert parsed is not None and parsed.data_type == sample["data_type"]


def test_cobo_envelope_adds_the_url_once_and_deterministically() -> None:
    eid = uuid.uuid4()
    body = event_body(eid, "wallets.created", datetime(2026, 1, 1, tzinfo=UTC),
                      {"data_type": "WalletInfo"})
    sent = cobo_envelope(body, "https://hooks.example.com/in?x=\"1\"")
    assert sent == cobo_envelope(body, "https://hooks.example.com/in?x=\"1\"")
    assert cobo_envelope(sent, "https://hooks.example.com/in?x=\"1\"") == sent
    envelope = json.loads(sent)
    assert list(envelope) == ["event_id", "url", "type", "created_timestamp", "data"]
    assert envelope["url"] == "https://hooks.example.com/in?x=\"1\""
    assert {k: v for k, v in envelope.items() if k != "url"} == json.loads(body)
    # Not built by event_body (other key order): rebuilt with the url second.
    other = serialize_body({"type": "t", "event_id": str(eid), "data": {}})
    assert list(json.loads(cobo_envelope(other, "https://x"))) == [
        "event_id", "url", "type", "data"]


def test_a_cobo_callback_body_is_its_own_data() -> None:
    from dispatcher.store.lookup import event_data

    transaction = COBO["wallets.transaction.created"].sample
    assert event_data(serialize_body(transaction)) == transaction
    envelope = event_body(uuid.uuid4(), "t", datetime(2026, 1, 1, tzinfo=UTC), transaction)
    assert event_data(envelope) == transaction
