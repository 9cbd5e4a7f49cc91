"""Keyset pagination for every list: a `PageQuery` (limit, opaque cursor) in, a
`Page` (items, next cursor) out. A cursor is base64url JSON tagged with the list it
belongs to; a tampered or foreign cursor is a 422 on `cursor`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from dispatcher.errors import ValidationError

DEFAULT_LIMIT = 50
MAX_LIMIT = 100

T = TypeVar("T")


@dataclass(frozen=True)
class PageQuery:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(kind: str, values: list[Any]) -> str:
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid() -> ValidationError:
    return ValidationError("cursor is not valid for this list", field="cursor")


def decode_cursor(text: str | None, kind: str) -> list[Any] | None:
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise _invalid() from exc
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("v"), list):
        raise _invalid()
    values: list[Any] = data["v"]
    return values


def cursor_part(values: list[Any], index: int, convert: Callable[[Any], T]) -> T:
    """values[index] converted; any failure is an invalid cursor."""
    try:
        return convert(values[index])
    except (IndexError, TypeError, ValueError, OverflowError) as exc:
        raise _invalid() from exc


def cut(found: Sequence[T], limit: int, kind: str,
        key: Callable[[T], list[Any]]) -> Page[T]:
    """The page from `limit + 1` rows read: the first `limit`, and a cursor after the
    last of them when there were more."""
    items = list(found[:limit])
    more = len(found) > limit
    return Page(items, encode_cursor(kind, key(items[-1])) if more else None)


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError("not a bigint")
    return value


def as_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a time")
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("naive time")
    return when


def as_uuid(value: Any) -> UUID:
    if not isinstance(value, str):
        raise ValueError("not a uuid")
    return UUID(value)


def as_name(value: Any) -> str:
    if not isinstance(value, str) or "\x00" in value or len(value) > 200:
        raise ValueError("not a name")
    return value


def time_and_id(created_at: datetime, id_: UUID) -> list[Any]:
    """The cursor values of a list ordered by (created_at, id)."""
    return [created_at.isoformat(), str(id_)]


def after_time_and_id(values: list[Any] | None) -> tuple[datetime, UUID] | None:
    if values is None:
        return None
    return cursor_part(values, 0, as_time), cursor_part(values, 1, as_uuid)
