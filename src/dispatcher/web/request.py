"""Reading HTTP input, for both front ends: JSON bodies (415, 413, 400), path ids
(404 when not a UUID), headers and query parameters (422 naming the parameter).
Body fields are checked by the operations (operations/fields.py)."""

from __future__ import annotations

import asyncio
import json
import math
import re
from datetime import datetime
from typing import Any, NoReturn
from uuid import UUID

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from dispatcher.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationError,
)
from dispatcher.operations.fields import check_text, ms_to_datetime
from dispatcher.operations.pages import DEFAULT_LIMIT, MAX_LIMIT, PageQuery
from dispatcher.web.context import CONFIG

MAX_JSON_DEPTH = 64
_NONZERO_MANTISSA = re.compile(r"-?[0-9.]*[1-9]")  # a digit 1-9 before any exponent
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A float that is the number written: one that overflows (1e400) or underflows
    to zero (1E-400, which would silently become 0.0) is refused."""
    value = float(text)
    if not math.isfinite(value) or (value == 0.0 and _NONZERO_MANTISSA.match(text)):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    # Level by level, keeping only containers: half the time of pushing every value
    # (about 0.5 ms for a batch of 200 events, more than json.loads itself).
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 1
    while level:
        if depth > limit:
            return False
        inner = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, (dict, list)):
                    inner.append(child)
        level = inner
        depth += 1
    return True


def is_json_content_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def parse_json(raw: bytes) -> Any:
    """Strict JSON from bytes: UTF-8, no NaN/Infinity (nor numbers that overflow to
    it or underflow to zero), no integers over 4300 digits, no unpaired surrogates,
    nesting at most MAX_JSON_DEPTH. BadRequest otherwise."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise BadRequest("request body is not valid UTF-8") from exc
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not _depth_ok(value):
        raise BadRequest(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("request body contains an unpaired UTF-16 surrogate escape") from exc
    return value


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The request's JSON body. When `required` is False an absent (or blank) body
    reads as `{}`: optional bodies are objects, so a literal `null` is still refused
    by whoever expects an object."""
    max_bytes = request.app[CONFIG].server.max_body_bytes
    if not required and not request.body_exists:
        return {}
    if not is_json_content_type(request.content_type):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type}"
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    timeout = request.app[CONFIG].server.body_timeout_seconds or None
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError as exc:
        # The connection cannot be reused: the rest of the body may still come.
        raise RequestTimeout(f"request body did not arrive within {timeout} s") from exc
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes") from exc
    except (HttpProcessingError, RequestPayloadError) as exc:  # e.g. gzip that is not
        raise BadRequest("request body could not be decoded as its Content-Encoding says",
                         field="Content-Encoding") from exc
    if not raw.strip():
        if not required:
            return {}
        raise BadRequest("request body is empty; expected JSON")
    return parse_json(raw)


def path_uuid(request: web.Request, name: str) -> UUID:
    """A UUID path parameter; anything else is 404, like an unknown id."""
    raw = request.match_info[name]
    try:
        value = UUID(raw)
    except ValueError as exc:
        raise NotFound(f"{name.replace('_', ' ')} {raw!r} not found", field=name) from exc
    return value


def header_text(request: web.Request, name: str) -> str | None:
    """A request header as text, None when absent. A header sent twice (which one
    would count?) or with a byte that is not UTF-8 (it arrives as a lone surrogate)
    is a malformed request: 400."""
    values = request.headers.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"header {name} given more than once", field=name)
    value = values[0]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"header {name} is not valid UTF-8", field=name) from exc
    return value


# --- Query parameters --------------------------------------------------------------


# An empty query parameter (`?type=&status=`, what a form sends for fields left
# blank) means the same as an absent one: any.


def query_str(request: web.Request, name: str) -> str | None:
    values = [v for v in request.query.getall(name, []) if v.strip()]
    if not values:
        return None
    if len(values) > 1:
        raise ValidationError(f"{name} given more than once", field=name)
    return check_text(values[0], name)


def query_list(request: web.Request, name: str) -> list[str] | None:
    """Repeated (`?type=a&type=b`) or comma-separated (`?type=a,b`) values."""
    values = request.query.getall(name, [])
    out = [part.strip() for v in values for part in v.split(",") if part.strip()]
    if not out:
        return None
    if len(out) > 100:
        raise ValidationError(f"{name}: at most 100 values", field=name)
    return [check_text(v, name) for v in out]


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = query_str(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} must be an integer", field=name) from exc
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}", field=name)
    return value


def query_ms(request: web.Request, name: str) -> datetime | None:
    raw = query_str(request, name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationError(
            f"{name} must be a Unix timestamp in milliseconds", field=name
        ) from exc
    return ms_to_datetime(value, name)


def page_query(request: web.Request) -> PageQuery:
    """`?limit=1..100&cursor=...` of a list route."""
    return PageQuery(query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                     query_str(request, "cursor") or None)
