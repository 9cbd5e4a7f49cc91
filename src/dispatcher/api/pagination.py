"""Opaque cursors for keyset pagination: `?limit=1..100&cursor=...`, answered as
`{"data": [...], "next_cursor": "..." | null}`. A cursor is base64url JSON tagged
with the list it belongs to; a tampered or foreign cursor is a 422 on `cursor`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web

from dispatcher.api.request import query_int, query_str
from dispatcher.errors import ValidationError

DEFAULT_LIMIT = 50
MAX_LIMIT = 100

T = TypeVar("T")


def page_limit(request: web.Request) -> int:
    return query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)


def encode_cursor(kind: str, values: list[Any]) -> str:
    raw = json.dumps({"k": kind, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid() -> ValidationError:
    return ValidationError("cursor is not valid for this list", field="cursor")


def decode_cursor(request: web.Request, kind: str) -> list[Any] | None:
    text = query_str(request, "cursor")
    if text is None or text == "":
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


def page(data: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"data": data, "next_cursor": next_cursor}
