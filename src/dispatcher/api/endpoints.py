"""Endpoint routes: create (the secret or public key is shown once), list, show,
update, delete, pause and resume."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from dispatcher.api.context import CATALOGUE, CLOCK, CONFIG, POLICIES, POOL, SECRET_BOX, TENANT
from dispatcher.api.pagination import (
    as_time,
    as_uuid,
    cursor_part,
    decode_cursor,
    encode_cursor,
    page,
    page_limit,
)
from dispatcher.api.request import Fields, path_uuid, query_str, read_json
from dispatcher.api.secrets import secret_material
from dispatcher.api.spec import CURSOR, LIMIT, Param, Route
from dispatcher.api.views import endpoint_json, health_json
from dispatcher.errors import NotFound, ValidationError
from dispatcher.model import SIGNING_SCHEMES, EndpointKind, EndpointState
from dispatcher.signing import COBO, generate_secret
from dispatcher.store import endpoints as store
from dispatcher.store import health
from dispatcher.store.delivery_options import OPTION_KEYS, set_delivery_options
from dispatcher.store.event_types import known_tenant_types
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import set_endpoint_secret
from dispatcher.transport.validate import parse_auth, parse_headers, parse_tls
from dispatcher.urlpolicy import validate_endpoint_url

FIELDS = ("url", "description", "event_types", "signing_scheme", "retry_policy",
          "timeout_seconds", "max_in_flight", "metadata", "pause_window_threshold",
          "pause_total_threshold", *OPTION_KEYS)
CREATE_ONLY = ("kind",)
READ_ONLY = ("id", "state", "state_reason", "state_changed_timestamp", "created_timestamp",
             "updated_timestamp", "secret", "public_key", "public_key_pem")
MAX_MAX_IN_FLIGHT = 1000
MAX_THRESHOLD = 10_000_000
ALL_TYPES = "*"
MANUAL = "manual"


def endpoint_not_found(endpoint_id: UUID | str) -> NotFound:
    return NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")


async def _check_event_types(
    request: web.Request, conn: Conn, tenant_id: UUID, f: Fields, types: list[str]
) -> list[str]:
    """`["*"]`, or known types without repeats."""
    if not types:
        f.fail("event_types", 'must list at least one type, or ["*"] for all')
    if ALL_TYPES in types:
        return [ALL_TYPES]
    unique = list(dict.fromkeys(types))
    catalogue = request.app[CATALOGUE]
    others = [t for t in unique if t not in catalogue]
    known = await known_tenant_types(conn, tenant_id, others)
    for t in others:
        if t not in known:
            f.fail(f"event_types[{types.index(t)}]", f"is not a known event type: {t!r}")
    return unique


def _check_choice(f: Fields, key: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    if value not in choices:
        f.fail(key, f"must be one of {', '.join(sorted(choices))}")
    return value


async def _validate(
    request: web.Request, conn: Conn, tenant_id: UUID, f: Fields, *, partial: bool,
    kind: str | None = None,
) -> dict[str, Any]:
    """The columns to write from the body; on create, defaults fill the rest.
    `kind` is the kind of the endpoint being updated (None on create)."""
    config = request.app[CONFIG]
    if partial:
        f.reject_unknown(FIELDS, (*READ_ONLY, *CREATE_ONLY))
    else:
        f.reject_unknown((*FIELDS, *CREATE_ONLY), READ_ONLY)
        kind = _check_choice(f, "kind", f.string("kind", default=EndpointKind.WEBHOOK,
                                                 max_len=20), tuple(EndpointKind))
    callback = kind == EndpointKind.CALLBACK
    out: dict[str, Any] = {} if partial else {"kind": kind}

    def wanted(key: str) -> bool:
        return not partial or f.has(key)

    if wanted("url"):
        out["url"] = validate_endpoint_url(f.string("url", max_len=10_000), config.urls)
    if wanted("description"):
        out["description"] = f.string("description", default="", max_len=1000)
    if callback and f.has("event_types"):
        f.fail("event_types", "is not accepted for a callback endpoint (it receives "
                              "callbacks, never events)")
    if callback and not partial:
        out["event_types"] = []
    elif wanted("event_types"):
        types = f.string_list("event_types", default=[ALL_TYPES])
        out["event_types"] = await _check_event_types(request, conn, tenant_id, f, types)
    if wanted("signing_scheme"):
        scheme = f.string("signing_scheme", default=config.signing.default_scheme, max_len=50)
        out["signing_scheme"] = _check_choice(f, "signing_scheme", scheme, SIGNING_SCHEMES)
    if wanted("retry_policy"):
        default_policy = (config.callbacks.retry_policy if callback
                          else config.delivery.default_retry_policy)
        name = f.string("retry_policy", default=default_policy, max_len=100)
        policies = request.app[POLICIES]
        out["retry_policy"] = _check_choice(f, "retry_policy", name, list(policies))
    if wanted("timeout_seconds"):
        default = min(max(config.delivery.timeout_seconds, 1.0), 30.0)
        out["timeout_seconds"] = f.number("timeout_seconds", default=default, lo=1, hi=30)
    if wanted("max_in_flight"):
        default_n = min(config.delivery.default_max_in_flight, MAX_MAX_IN_FLIGHT)
        out["max_in_flight"] = f.integer("max_in_flight", default=default_n, lo=1,
                                         hi=MAX_MAX_IN_FLIGHT)
    if wanted("metadata"):
        out["metadata"] = f.obj("metadata", default={})
    for key in ("pause_window_threshold", "pause_total_threshold"):
        if wanted(key):
            out[key] = f.optional_integer(key, lo=1, hi=MAX_THRESHOLD)
    return out


def _delivery_options(request: web.Request, f: Fields) -> dict[str, Any]:
    """The delivery options given in the body, checked: headers as pairs, auth and
    tls as values or None (none / remove)."""
    out: dict[str, Any] = {}
    if f.has("headers"):
        out["headers"] = parse_headers(f.data["headers"])
    if f.has("auth"):
        out["auth"] = parse_auth(f.data["auth"], request.app[CONFIG].urls)
    if f.has("tls"):
        out["tls"] = parse_tls(f.data["tls"])
    return out


def _changed_options(current: store.Endpoint, options: dict[str, Any]) -> dict[str, Any]:
    """Drop what would change nothing: the same headers, or removing what is not set.
    Auth and TLS given are always written (their secrets are not compared)."""
    out = dict(options)
    if "headers" in out and [list(p) for p in out["headers"]] == current.headers:
        del out["headers"]
    if "auth" in out and out["auth"] is None and current.auth is None:
        del out["auth"]
    if "tls" in out and out["tls"] is None and current.tls is None:
        del out["tls"]
    return out


async def create_endpoint(request: web.Request) -> web.Response:
    return await create_endpoint_from(request, await read_json(request))


async def create_endpoint_from(request: web.Request, body: Any) -> web.Response:
    """Create from an already decoded body (the JSON API, or the console's form)."""
    tenant_id = request[TENANT]
    f = Fields(body)
    now = request.app[CLOCK].now()
    box = request.app[SECRET_BOX]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        fields = await _validate(request, conn, tenant_id, f, partial=False)
        options = {k: v for k, v in _delivery_options(request, f).items() if v}
        limit = request.app[CONFIG].server.max_endpoints_per_tenant
        if await store.lock_tenant_endpoint_count(conn, tenant_id) >= limit:
            raise ValidationError(
                f"this tenant already has {limit} endpoints, the most allowed "
                "(server.max_endpoints_per_tenant)", code="endpoint_limit_reached")
        endpoint_id = uuid.uuid4()
        ep = await store.create_endpoint(conn, tenant_id, endpoint_id, fields, now)
        secret = None
        if ep.signing_scheme != COBO:
            secret = generate_secret(ep.signing_scheme)
            await set_endpoint_secret(conn, box, endpoint_id, secret, tenant_id=tenant_id)
        if options:
            await set_delivery_options(conn, box, tenant_id, endpoint_id, options, now)
        material = await secret_material(conn, box, tenant_id, ep.signing_scheme, secret)
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id) or ep
    return web.json_response({**endpoint_json(ep), **material}, status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    limit = page_limit(request)
    state = query_str(request, "state")
    if state is not None and state not in set(EndpointState):
        raise ValidationError("state must be active, paused or disabled", field="state")
    cursor = decode_cursor(request, "endpoints")
    after = None
    if cursor is not None:
        after = (cursor_part(cursor, 0, as_time), cursor_part(cursor, 1, as_uuid))
    async with request.app[POOL].acquire() as conn:
        found = await store.list_endpoints(conn, tenant_id, state=state, after=after,
                                           limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    next_cursor = None
    if more:
        last = found[-1]
        next_cursor = encode_cursor("endpoints", [last.created_at.isoformat(), str(last.id)])
    return web.json_response(page([endpoint_json(ep) for ep in found], next_cursor))


async def get_endpoint(request: web.Request) -> web.Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    async with request.app[POOL].acquire() as conn:
        ep = await store.get_endpoint(conn, request[TENANT], endpoint_id)
    if ep is None:
        raise endpoint_not_found(endpoint_id)
    return web.json_response(endpoint_json(ep))


async def update_endpoint(request: web.Request) -> web.Response:
    """A partial update. A change of signing scheme makes a new secret (shown in
    this answer, as on create); the old one stops at once."""
    return await update_endpoint_from(request, await read_json(request))


async def update_endpoint_from(request: web.Request, body: Any) -> web.Response:
    tenant_id = request[TENANT]
    endpoint_id = path_uuid(request, "endpoint_id")
    now = request.app[CLOCK].now()
    box = request.app[SECRET_BOX]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        current = await store.get_endpoint(conn, tenant_id, endpoint_id, for_update=True)
        if current is None:
            raise endpoint_not_found(endpoint_id)
        f = Fields(body)
        changes = await _validate(request, conn, tenant_id, f, partial=True,
                                  kind=current.kind)
        changes = {k: v for k, v in changes.items() if getattr(current, k) != v}
        options = _changed_options(current, _delivery_options(request, f))
        if not changes and not options:
            return web.json_response(endpoint_json(current))
        new_scheme = changes.get("signing_scheme")
        ep = current
        if changes:
            updated = await store.update_endpoint(conn, tenant_id, endpoint_id, changes, now,
                                                  clear_secrets=new_scheme == COBO)
            assert updated is not None  # locked above
            ep = updated
        if options:
            await set_delivery_options(conn, box, tenant_id, endpoint_id, options, now)
            ep = await store.get_endpoint(conn, tenant_id, endpoint_id) or ep
        material: dict[str, Any] = {}
        if new_scheme is not None:
            secret = None
            if new_scheme != COBO:
                secret = generate_secret(new_scheme)
                await set_endpoint_secret(conn, box, endpoint_id, secret, tenant_id=tenant_id)
            material = await secret_material(conn, box, tenant_id, new_scheme, secret)
            ep = await store.get_endpoint(conn, tenant_id, endpoint_id) or ep
    return web.json_response({**endpoint_json(ep), **material})


async def delete_endpoint(request: web.Request) -> web.Response:
    endpoint_id = path_uuid(request, "endpoint_id")
    async with request.app[POOL].acquire() as conn:
        deleted = await store.delete_endpoint(conn, request[TENANT], endpoint_id)
    if not deleted:
        raise endpoint_not_found(endpoint_id)
    return web.Response(status=204)


async def pause_endpoint(request: web.Request) -> web.Response:
    return await _change_state(
        request,
        lambda conn, eid, now, tid: health.pause_endpoint(conn, eid, MANUAL, now, tenant_id=tid),
    )


async def resume_endpoint(request: web.Request) -> web.Response:
    return await _change_state(
        request, lambda conn, eid, now, tid: health.resume_endpoint(conn, eid, now, tenant_id=tid)
    )


async def _change_state(
    request: web.Request,
    change: Callable[[Conn, UUID, datetime, UUID], Awaitable[object]],
) -> web.Response:
    """Pause or resume, answering the endpoint as it is afterwards."""
    tenant_id = request[TENANT]
    endpoint_id = path_uuid(request, "endpoint_id")
    now = request.app[CLOCK].now()
    async with request.app[POOL].acquire() as conn:
        try:
            await change(conn, endpoint_id, now, tenant_id)
        except NotFound as exc:
            raise endpoint_not_found(endpoint_id) from exc
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id)
    if ep is None:
        raise endpoint_not_found(endpoint_id)
    return web.json_response(endpoint_json(ep))


async def get_endpoint_health(request: web.Request) -> web.Response:
    tenant_id = request[TENANT]
    endpoint_id = path_uuid(request, "endpoint_id")
    config = request.app[CONFIG]
    now = request.app[CLOCK].now()
    async with request.app[POOL].acquire() as conn:
        found = await health.list_endpoint_health(
            conn, now, config.health.window_seconds, tenant_id=tenant_id,
            endpoint_id=endpoint_id, limit=1)
    if not found:
        raise endpoint_not_found(endpoint_id)
    return web.json_response(health_json(found[0], config.health, now))


STATE = Param("state", {"type": "string", "enum": ["active", "paused", "disabled"]},
              "Only endpoints in this state.")
TAG = "Endpoints"

ROUTES = [
    Route("POST", "/v1/endpoints", create_endpoint, "createEndpoint", "Create an endpoint",
          TAG, ok=201, response="EndpointCreated", body="EndpointCreate",
          description="Answers the endpoint with its signing `secret` (HMAC schemes) or "
                      "`public_key` (Ed25519 schemes), shown only here."),
    Route("GET", "/v1/endpoints", list_endpoints, "listEndpoints", "List endpoints", TAG,
          response="EndpointPage", params=(LIMIT, CURSOR, STATE)),
    Route("GET", "/v1/endpoints/{endpoint_id}", get_endpoint, "getEndpoint", "Show an endpoint",
          TAG, response="Endpoint"),
    Route("PATCH", "/v1/endpoints/{endpoint_id}", update_endpoint, "updateEndpoint",
          "Update an endpoint", TAG, response="EndpointUpdated", body="EndpointUpdate",
          description="Fields not given are left as they are. Changing `signing_scheme` "
                      "issues a new secret (or public key), returned here once. `headers`, "
                      "`auth` and `tls` are each replaced whole when given; null removes "
                      "one."),
    Route("DELETE", "/v1/endpoints/{endpoint_id}", delete_endpoint, "deleteEndpoint",
          "Delete an endpoint with its deliveries", TAG, ok=204),
    Route("POST", "/v1/endpoints/{endpoint_id}/pause", pause_endpoint, "pauseEndpoint",
          "Pause an endpoint", TAG, response="Endpoint", errors=(409,),
          description="New and unfinished deliveries are held (not attempted, retry budget "
                      "untouched) until the endpoint is resumed."),
    Route("POST", "/v1/endpoints/{endpoint_id}/resume", resume_endpoint, "resumeEndpoint",
          "Resume a paused or disabled endpoint", TAG, response="Endpoint",
          description="The endpoint becomes active, its failure counters reset, and its held "
                      "deliveries are sent again at a bounded rate."),
    Route("GET", "/v1/endpoints/{endpoint_id}/health", get_endpoint_health,
          "getEndpointHealth", "An endpoint's failure counters and held deliveries", TAG,
          response="EndpointHealth",
          description="Why an endpoint is (or is about to be) paused: failures in the "
                      "rolling window and since the last resume, against their thresholds."),
]
