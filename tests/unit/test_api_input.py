"""Pure pieces of the API: strict JSON parsing, body fields naming the bad field,
cursors that reject tampering, the catalogue and config-defined event types, and
when a delivery shows a next retry time."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.catalogue import builtin_event_types, load_catalogue, valid_name
from dispatcher.config import Config
from dispatcher.errors import BadRequest, ConfigError, ValidationError
from dispatcher.model import DeliveryStatus
from dispatcher.operations.fields import Fields, check_json_value
from dispatcher.operations.pages import decode_cursor, encode_cursor
from dispatcher.store.lookup import DeliveryView
from dispatcher.web.request import parse_json


@pytest.mark.parametrize("raw", [
    b"{", b"", b"\xff", b'{"a": NaN}', b'{"a": Infinity}', b'"\\ud800"', b"[" * 65 + b"]" * 65,
    b"[" * 5000 + b"]" * 5000, b'{"a": 1,}', b'{"a": 1e400}', b'{"a": -1e999}', b"9" * 5000,
    b'{"a": 1E-400}', b'{"a": -0.5e-999}', b"[2e-324]",
])
def test_bad_json_is_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json(raw)


@pytest.mark.parametrize(("raw", "value"), [
    (b"0.0", 0.0), (b"-0.0e-400", 0.0), (b"0e5", 0.0), (b"5e-324", 5e-324),
    (b"1.5E-300", 1.5e-300), (b"0.1", 0.1),
])
def test_zero_and_the_smallest_numbers_are_kept(raw: bytes, value: float) -> None:
    assert parse_json(raw) == value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=3),
    max_leaves=20)


@given(_JSON, st.integers(min_value=0, max_value=70))
def test_nesting_is_refused_exactly_past_64_levels(value: Any, wrap: int) -> None:
    """Containers wrapped in `wrap` more levels, mixing objects and arrays."""
    for k in range(wrap):
        value = [value, 1] if k % 2 else {"k": value, "n": 1}
    raw = json.dumps(value).encode()
    if _depth(value) <= 64:
        assert parse_json(raw) == value
    else:
        with pytest.raises(BadRequest):
            parse_json(raw)


def test_good_json_parses() -> None:
    assert parse_json(b'{"a": "\\ud83d\\ude00", "b": [1, 2.5, null]}') == {
        "a": "\U0001F600", "b": [1, 2.5, None]}
    assert parse_json(b"[" * 64 + b"]" * 64) is not None


def test_nul_is_refused_for_jsonb_but_its_escape_text_is_not() -> None:
    assert check_json_value({"a": ["\\u0000"]}, "metadata") == {"a": ["\\u0000"]}
    for bad in ({"a": "\u0000"}, {"\u0000": 1}, [[{"b": "x\u0000"}]]):
        with pytest.raises(ValidationError):
            check_json_value(bad, "metadata")


def test_fields_name_the_bad_field() -> None:
    f = Fields({"n": True, "s": 5, "l": ["a", 3], "o": {"k": "\u0000"}, "x": 1}, "events[2].")
    cases: list[tuple[Any, str]] = [
        (lambda: f.integer("n", default=1, lo=0, hi=9), "events[2].n"),
        (lambda: f.string("s"), "events[2].s"),
        (lambda: f.string_list("l"), "events[2].l[1]"),
        (lambda: f.obj("o"), "events[2].o"),
        (lambda: f.reject_unknown(("n", "s", "l", "o")), "events[2].x"),
        (lambda: f.string("missing"), "events[2].missing"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.field == field
    with pytest.raises(ValidationError) as info:
        Fields([1], "events[0].")
    assert info.value.field == "events[0]"


@given(st.lists(st.one_of(st.integers(0, 2**62), st.text(max_size=20)), max_size=3))
def test_cursors_round_trip(values: list[Any]) -> None:
    text = encode_cursor("things", values)
    assert decode_cursor(text, "things") == values


@pytest.mark.parametrize("cursor", ["!!!", "e30", encode_cursor("other", [1]), "eyJrIjoxfQ"])
def test_foreign_or_tampered_cursors_are_422(cursor: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode_cursor(cursor, "things")
    assert info.value.field == "cursor"


def test_catalogue_covers_the_reference_providers() -> None:
    types = builtin_event_types()
    cobo = {n for n, t in types.items() if t.group == "cobo"}
    assert len(cobo) == 60  # seed 001 and every WebhookEventType of Cobo's SDK (1.46.0)
    assert {"transaction", "block"} <= types.keys()
    assert {"messages", "statuses", "errors"} <= types.keys()
    assert {"workflow-completed", "workflow-errored"} <= types.keys()
    assert {"endpoint.paused", "endpoint.failing"} <= types.keys()
    for t in types.values():
        assert valid_name(t.name) and t.description and t.sample is not None


def test_config_adds_event_types(config: Config) -> None:
    cfg = dataclasses.replace(config, event_types={
        "invoice.paid": {"description": "Paid", "sample": {"id": "inv_1"}}})
    catalogue = load_catalogue(cfg)
    assert catalogue["invoice.paid"].source == "config"
    assert catalogue["invoice.paid"].sample == {"id": "inv_1"}
    for bad, field in (({"bad name": {}}, "event_types.bad name"),
                       ({"ok": {"colour": "red"}}, "event_types.ok.colour"),
                       ({"ok": {"description": 5}}, "event_types.ok.description")):
        with pytest.raises(ConfigError) as info:
            load_catalogue(dataclasses.replace(config, event_types=bad))
        assert info.value.field == field


def _view(status: DeliveryStatus, *, leased: bool = False, held: bool = False) -> DeliveryView:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return DeliveryView(1, uuid4(), uuid4(), "https://x", "t", now, b"{}", status, 1, 3, now,
                        leased, now if held else None, now, None)


def test_next_retry_only_while_scheduled() -> None:
    assert _view(DeliveryStatus.RETRYING).next_retry_at is not None
    assert _view(DeliveryStatus.PENDING).next_retry_at is not None
    assert _view(DeliveryStatus.RETRYING, leased=True).next_retry_at is None
    assert _view(DeliveryStatus.RETRYING, held=True).next_retry_at is None
    assert _view(DeliveryStatus.SUCCESS).next_retry_at is None
    assert _view(DeliveryStatus.FAILED).next_retry_at is None
