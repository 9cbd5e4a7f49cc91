"""Sample events and signing keys for the sandbox. An event is built exactly like a
published one: the envelope from `event_body`, serialized once."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher.catalogue import EventType, valid_name
from dispatcher.clock import SystemClock
from dispatcher.errors import ValidationError
from dispatcher.signing import (
    COBALT,
    COBO,
    STANDARD_V1,
    STANDARD_V1A,
    generate_secret,
    make_signer,
    public_key,
    public_key_pem,
    serialize_body,
)
from dispatcher.store.events import cobo_envelope, event_body

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SampleEvent:
    id: uuid.UUID
    type: str
    created_at: datetime
    data: Any
    body: bytes  # the exact bytes signed and sent


def build_event(type_: str, data: Any, *, event_id: uuid.UUID | None = None,
                created_at: datetime | None = None) -> SampleEvent:
    """An event as the engine would send it: a new id, created now."""
    eid = event_id or uuid.uuid4()
    when = created_at or SystemClock().now()
    return SampleEvent(eid, type_, when, data, event_body(eid, type_, when, data))


def addressed(event: SampleEvent, scheme: str, url: str) -> SampleEvent:
    """The event as sent to `url`: with `cobo`, the envelope carries the URL."""
    if scheme != COBO:
        return event
    return dataclasses.replace(event, body=cobo_envelope(event.body, url))


def parse_data(text: str, option: str = "--data") -> Any:
    """`--data`: JSON text, or `@path` to a file holding it."""
    where = option
    if text.startswith("@"):
        path = Path(text[1:])
        where = f"{option} file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read {where}: {exc}", field="data") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{where} is not valid JSON: {exc}", field="data") from exc


def event_data(catalogue: Mapping[str, EventType], type_: str, data: Any = None,
               *, has_data: bool = False) -> Any:
    """The `data` to send for `type_`: `data` when given, else the catalogue's sample.
    A type outside the catalogue needs its own data (it may be a tenant's type)."""
    if not valid_name(type_):
        raise ValidationError(
            f"invalid event type {type_!r}: 1-100 letters, digits or . _ - : / "
            "starting with a letter or digit", field="type")
    if has_data:
        return data
    found = catalogue.get(type_)
    if found is None:
        raise ValidationError(
            f"unknown event type {type_!r}: not in the catalogue (see `dispatcher "
            "event-types list`); pass --data to send a type of your own", field="type")
    return found.sample


@dataclass(frozen=True)
class SigningKey:
    """What the sandbox signs with, and what the receiver verifies with."""

    scheme: str
    secret: str
    generated: bool = False

    @property
    def verifier_key(self) -> str:
        """The shared secret (HMAC schemes) or the public key (Ed25519 schemes)."""
        return public_key(self.scheme, self.secret) or self.secret

    def describe(self) -> list[str]:
        """Lines telling the user what to configure their receiver with: a generated
        secret, and the public key of an Ed25519 scheme. A shared secret the user gave
        is not echoed back."""
        lines = []
        if self.scheme in (STANDARD_V1, COBALT):
            if self.generated:
                lines.append(f"secret: {self.secret}  (generated; verify with this shared "
                             "secret)")
            return lines
        if self.generated:
            lines.append(f"secret: {self.secret}  (generated; private: the sandbox signs "
                         "with it)")
        lines += [f"public key: {self.verifier_key}  (verify with this)", "public key (PEM):",
                  *public_key_pem(self.secret).strip().splitlines()]
        return lines


def signing_key(scheme: str, secret: str | None) -> SigningKey:
    """The given secret checked against the scheme, or a new one."""
    if secret is None:
        return SigningKey(scheme, generate_secret(scheme), generated=True)
    secret = secret.strip()
    if scheme in (STANDARD_V1A, COBO) and secret.startswith(("whpk_", "-----BEGIN")):
        raise ValidationError(
            f"{scheme} signs with the private key; --secret takes the "
            f"{'whsk_...' if scheme == STANDARD_V1A else 'hex Ed25519 seed'} secret, "
            "not the public key", field="secret")
    make_signer(scheme, [secret])  # raises ValidationError naming what is wrong
    return SigningKey(scheme, secret)


def incoming_event(body: bytes, catalogue: Mapping[str, EventType]) -> SampleEvent:
    """An event given to `listen`: either a whole envelope (`event_id`, `type`,
    `created_timestamp`, `data`, e.g. a real delivery or a captured one), kept as is,
    or `{"type": ..., "data": ...}` (data optional: the catalogue's sample), which
    becomes a new event."""
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"not valid JSON: {exc}", field="body") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValidationError('expected a JSON object with a "type" (and "data")',
                              field="type")
    type_ = obj["type"]
    data = event_data(catalogue, type_, obj.get("data"), has_data="data" in obj)
    if "event_id" not in obj:
        return build_event(type_, data)
    try:
        eid = uuid.UUID(str(obj["event_id"]))
    except ValueError:
        raise ValidationError(f"event_id is not a UUID: {obj['event_id']!r}",
                              field="event_id") from None
    created = obj.get("created_timestamp")
    if created is None:
        return build_event(type_, data, event_id=eid)
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        raise ValidationError("created_timestamp must be unix milliseconds",
                              field="created_timestamp")
    try:
        when = _EPOCH + timedelta(milliseconds=created)
    except OverflowError:
        raise ValidationError("created_timestamp is out of range",
                              field="created_timestamp") from None
    # The envelope's own milliseconds, not a round trip through a float.
    body = serialize_body({"event_id": str(eid), "type": type_, "created_timestamp": created,
                           "data": data})
    return SampleEvent(eid, type_, when, data, body)
