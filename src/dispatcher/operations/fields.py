"""Checking input, for every front end: the members of a JSON object (each error
naming the field, with a prefix such as "events[3]."), text and JSON values that
PostgreSQL can store, and Unix-millisecond timestamps. Nothing here knows HTTP."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from dispatcher.errors import ValidationError

# Unix milliseconds accepted in filters: 1970 .. 9999.
MAX_MS = 253402300799999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_text(value: str, field: str) -> str:
    """Text PostgreSQL can store: no NUL characters, and valid UTF-8 (a header with
    a byte that is not UTF-8 arrives as a lone surrogate)."""
    if "\x00" in value:
        raise ValidationError(f"{field} must not contain NUL characters", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{field} must be valid UTF-8 text", field=field) from exc
    return value


def check_json_value(value: Any, field: str) -> Any:
    """A value for a jsonb column: no NUL characters in any string or key."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            raise ValidationError(f"{field} must not contain NUL characters", field=field)
    return value


def ms_to_datetime(value: int, field: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MS:
        raise ValidationError(
            f"{field} must be a Unix timestamp in milliseconds (0 to {MAX_MS})", field=field
        )
    return _EPOCH + timedelta(milliseconds=value)



class Fields:
    """Typed access to the members of a JSON object, each error naming the field
    (with `prefix`, e.g. "events[3]."), and a check for members nobody asked for."""

    def __init__(self, value: Any, prefix: str = "") -> None:
        if not isinstance(value, dict):
            where = prefix.rstrip(".") or None
            raise ValidationError(f"{where or 'request body'} must be a JSON object",
                                  field=where)
        self.data: dict[str, Any] = value
        self.prefix = prefix

    def name(self, key: str) -> str:
        return self.prefix + key

    def fail(self, key: str, message: str) -> NoReturn:
        raise ValidationError(f"{self.name(key)} {message}", field=self.name(key))

    def has(self, key: str) -> bool:
        return key in self.data

    def reject_unknown(self, allowed: Iterable[str], read_only: Iterable[str] = ()) -> None:
        read_only = set(read_only)
        for key in self.data:
            if key in read_only:
                self.fail(key, "is read-only")
            if key not in allowed:
                self.fail(key, "is not a known field")

    def string(
        self, key: str, *, default: str | None = None, max_len: int = 1000, min_len: int = 0
    ) -> str:
        value = self.data.get(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, str):
            self.fail(key, "must be a string")
        if not min_len <= len(value) <= max_len:
            self.fail(key, f"must be {min_len} to {max_len} characters")
        return check_text(value, self.name(key))

    def optional_string(self, key: str, *, max_len: int = 1000) -> str | None:
        if self.data.get(key) is None:
            return None
        return self.string(key, max_len=max_len)

    def number(self, key: str, *, default: float, lo: float, hi: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, "must be a number")
        if not math.isfinite(value) or not lo <= value <= hi:
            self.fail(key, f"must be between {lo:g} and {hi:g}")
        return float(value)

    def integer(self, key: str, *, default: int, lo: int, hi: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "must be an integer")
        if not lo <= value <= hi:
            self.fail(key, f"must be between {lo} and {hi}")
        return value

    def optional_integer(self, key: str, *, lo: int, hi: int) -> int | None:
        if self.data.get(key) is None:
            return None
        return self.integer(key, default=0, lo=lo, hi=hi)

    def string_list(
        self, key: str, *, default: list[str] | None = None, max_items: int = 100,
        max_len: int = 100,
    ) -> list[str]:
        value = self.data.get(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, list):
            self.fail(key, "must be a list of strings")
        if len(value) > max_items:
            self.fail(key, f"must have at most {max_items} items")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not 1 <= len(item) <= max_len:
                self.fail(f"{key}[{i}]", f"must be a string of 1 to {max_len} characters")
            check_text(item, self.name(f"{key}[{i}]"))
        return list(value)

    def obj(self, key: str, *, default: dict[str, Any] | None = None,
            max_bytes: int = 16384) -> dict[str, Any]:
        value = self.data.get(key, default)
        if value is None:
            self.fail(key, "is required")
        if not isinstance(value, dict):
            self.fail(key, "must be a JSON object")
        if len(json.dumps(value)) > max_bytes:
            self.fail(key, f"must be at most {max_bytes} bytes as JSON")
        return dict(check_json_value(value, self.name(key)))


# Channels (Svix's semantics): an endpoint with channels receives only events that
# share one; an endpoint without any receives every event of its types.
MAX_CHANNELS = 10
CHANNEL_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def channel_list(f: Fields, key: str = "channels") -> list[str]:
    """Up to MAX_CHANNELS names of 1-128 letters, digits or . _ : -, without repeats
    (null or absent: none)."""
    value = f.data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_CHANNELS:
        f.fail(key, f"must be a list of at most {MAX_CHANNELS} channel names")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not CHANNEL_RE.fullmatch(name):
            f.fail(f"{key}[{i}]", "must be 1-128 letters, digits or . _ : -")
    return list(dict.fromkeys(value))
