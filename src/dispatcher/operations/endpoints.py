"""Endpoints: create (with its signing secret, shown once), list, show, update,
delete, pause and resume, and their health. The one place an endpoint is made, so
the tenant's endpoint limit is checked here for every front end (listen included,
operations/listeners.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from dispatcher.errors import NotFound, ValidationError
from dispatcher.model import SIGNING_SCHEMES, EndpointKind, EndpointState
from dispatcher.operations import audit
from dispatcher.operations.event_types import unknown_type
from dispatcher.operations.fields import Fields, channel_list
from dispatcher.operations.pages import (
    Page,
    PageQuery,
    after_time_and_id,
    cut,
    decode_cursor,
    time_and_id,
)
from dispatcher.operations.scope import Caller
from dispatcher.operations.secrets import SecretMaterial, secret_material
from dispatcher.operations.services import Services
from dispatcher.signing import COBO, generate_secret
from dispatcher.store import endpoints as store
from dispatcher.store import health
from dispatcher.store.delivery_options import OPTION_KEYS, set_delivery_options
from dispatcher.store.endpoints import Endpoint
from dispatcher.store.event_types import known_tenant_types
from dispatcher.store.health import EndpointHealth, StateChange
from dispatcher.store.pool import Conn
from dispatcher.store.secrets import set_endpoint_secret
from dispatcher.store.tenants import count_under_tenant_lock
from dispatcher.transport.validate import parse_auth, parse_headers, parse_tls
from dispatcher.urlpolicy import validate_endpoint_url

FIELDS = ("url", "description", "event_types", "signing_scheme", "retry_policy",
          "timeout_seconds", "max_in_flight", "metadata", "pause_window_threshold",
          "pause_total_threshold", "propagate_trace_context", "channels", *OPTION_KEYS)
CREATE_ONLY = ("kind",)
READ_ONLY = ("id", "state", "state_reason", "state_changed_timestamp", "created_timestamp",
             "updated_timestamp", "secret", "public_key", "public_key_pem")
MAX_MAX_IN_FLIGHT = 1000
MAX_THRESHOLD = 10_000_000
ALL_TYPES = "*"
MANUAL = "manual"
STATES = tuple(str(s) for s in EndpointState)


@dataclass(frozen=True)
class Changed:
    """An endpoint after a create or an update, with its signing material when this
    change made some (always on create, on an update that changed the scheme)."""

    endpoint: Endpoint
    material: SecretMaterial | None


def endpoint_not_found(endpoint_id: UUID | str) -> NotFound:
    return NotFound(f"endpoint {endpoint_id} not found", field="endpoint_id")


async def check_event_types(
    svc: Services, conn: Conn, tenant_id: UUID, types: list[str], field: str
) -> list[str]:
    """`["*"]`, or known types (catalogue or the tenant's own) without repeats."""
    if not types:
        raise ValidationError(f'{field} must list at least one type, or ["*"] for all',
                              field=field)
    if ALL_TYPES in types:
        return [ALL_TYPES]
    unique = list(dict.fromkeys(types))
    others = [t for t in unique if t not in svc.catalogue]
    known = await known_tenant_types(conn, tenant_id, others)
    for t in others:
        if t not in known:
            raise unknown_type(f"{field}[{types.index(t)}]", t, svc.catalogue)
    return unique


async def check_endpoint_limit(svc: Services, conn: Conn, tenant_id: UUID) -> None:
    """Refuse one more endpoint beyond `server.max_endpoints_per_tenant`. Locks the
    tenant's count until the transaction ends, so racing creates cannot pass it."""
    limit = svc.config.server.max_endpoints_per_tenant
    if await count_under_tenant_lock(conn, tenant_id, "endpoints") >= limit:
        raise ValidationError(
            f"this tenant already has {limit} endpoints, the most allowed "
            "(server.max_endpoints_per_tenant)", code="endpoint_limit_reached")


def _check_choice(f: Fields, key: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    if value not in choices:
        f.fail(key, f"must be one of {', '.join(sorted(choices))}")
    return value


async def _validate(
    svc: Services, conn: Conn, tenant_id: UUID, f: Fields, *, partial: bool,
    kind: str | None = None,
) -> dict[str, Any]:
    """The columns to write from the body; on create, defaults fill the rest.
    `kind` is the kind of the endpoint being updated (None on create)."""
    config = svc.config
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
        out["event_types"] = await check_event_types(svc, conn, tenant_id, types,
                                                     f.name("event_types"))
    if wanted("signing_scheme"):
        scheme = f.string("signing_scheme", default=config.signing.default_scheme, max_len=50)
        out["signing_scheme"] = _check_choice(f, "signing_scheme", scheme, SIGNING_SCHEMES)
    if wanted("retry_policy"):
        default_policy = (config.callbacks.retry_policy if callback
                          else config.delivery.default_retry_policy)
        name = f.string("retry_policy", default=default_policy, max_len=100)
        out["retry_policy"] = _check_choice(f, "retry_policy", name, list(svc.policies))
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
    if wanted("propagate_trace_context"):
        value = f.data.get("propagate_trace_context", True)
        if not isinstance(value, bool):
            f.fail("propagate_trace_context", "must be true or false")
        out["propagate_trace_context"] = value
    if callback and f.has("channels"):
        f.fail("channels", "is not accepted for a callback endpoint")
    if wanted("channels") and not callback:
        out["channels"] = channel_list(f)
    return out


def _delivery_options(svc: Services, f: Fields) -> dict[str, Any]:
    """The delivery options given in the body, checked: headers as pairs, auth and
    tls as values or None (none / remove)."""
    out: dict[str, Any] = {}
    if f.has("headers"):
        out["headers"] = parse_headers(f.data["headers"])
    if f.has("auth"):
        out["auth"] = parse_auth(f.data["auth"], svc.config.urls)
    if f.has("tls"):
        out["tls"] = parse_tls(f.data["tls"])
    return out


def _changed_options(current: Endpoint, options: dict[str, Any]) -> dict[str, Any]:
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


async def _new_secret(svc: Services, conn: Conn, tenant_id: UUID, endpoint_id: UUID,
                      scheme: str) -> SecretMaterial:
    """A fresh secret for an HMAC or standard-v1a endpoint (cobo endpoints are signed
    with the tenant's key), as the receiver verifies with it."""
    secret = None
    if scheme != COBO:
        secret = generate_secret(scheme)
        await set_endpoint_secret(conn, svc.secret_box, endpoint_id, secret,
                                  tenant_id=tenant_id)
    return await secret_material(conn, svc.secret_box, tenant_id, scheme, secret)


async def create_endpoint(svc: Services, caller: Caller, body: Any) -> Changed:
    """Create from a decoded JSON object (the API's body, the console's form)."""
    caller.may_write()
    tenant_id = caller.tenant
    f = Fields(body)
    now = svc.clock.now()
    async with svc.pool.acquire() as conn, conn.transaction():
        fields = await _validate(svc, conn, tenant_id, f, partial=False)
        options = {k: v for k, v in _delivery_options(svc, f).items() if v}
        await check_endpoint_limit(svc, conn, tenant_id)
        endpoint_id = uuid.uuid4()
        ep = await store.create_endpoint(conn, tenant_id, endpoint_id, fields, now)
        material = await _new_secret(svc, conn, tenant_id, endpoint_id, ep.signing_scheme)
        if options:
            await set_delivery_options(conn, svc.secret_box, tenant_id, endpoint_id, options,
                                       now)
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id) or ep
        await audit.record(svc, conn, caller, "endpoint.create", "endpoint", endpoint_id, {
            **audit.created({**fields, **options}),
            **({"secret": "created"} if ep.signing_scheme != COBO else {})})
    return Changed(ep, material)


async def list_endpoints(svc: Services, caller: Caller, page: PageQuery,
                         state: str | None = None) -> Page[Endpoint]:
    if state is not None and state not in STATES:
        raise ValidationError("state must be active, paused or disabled", field="state")
    after = after_time_and_id(decode_cursor(page.cursor, "endpoints"))
    async with svc.pool.acquire() as conn:
        found = await store.list_endpoints(conn, caller.tenant, state=state, after=after,
                                           limit=page.limit + 1)
    return cut(found, page.limit, "endpoints", lambda ep: time_and_id(ep.created_at, ep.id))


async def get_endpoint(svc: Services, caller: Caller, endpoint_id: UUID) -> Endpoint:
    async with svc.pool.acquire() as conn:
        ep = await store.get_endpoint(conn, caller.tenant, endpoint_id)
    if ep is None:
        raise endpoint_not_found(endpoint_id)
    return ep


async def update_endpoint(svc: Services, caller: Caller, endpoint_id: UUID,
                          body: Any) -> Changed:
    """A partial update. A change of signing scheme makes a new secret (in the
    result, as on create); the old one stops at once."""
    caller.may_write()
    tenant_id = caller.tenant
    now = svc.clock.now()
    box = svc.secret_box
    async with svc.pool.acquire() as conn, conn.transaction():
        current = await store.get_endpoint(conn, tenant_id, endpoint_id, for_update=True)
        if current is None:
            raise endpoint_not_found(endpoint_id)
        f = Fields(body)
        changes = await _validate(svc, conn, tenant_id, f, partial=True, kind=current.kind)
        changes = {k: v for k, v in changes.items() if getattr(current, k) != v}
        options = _changed_options(current, _delivery_options(svc, f))
        if not changes and not options:
            return Changed(current, None)
        new_scheme = changes.get("signing_scheme")
        if changes:
            updated = await store.update_endpoint(conn, tenant_id, endpoint_id, changes, now,
                                                  clear_secrets=new_scheme == COBO)
            assert updated is not None  # locked above
        if options:
            await set_delivery_options(conn, box, tenant_id, endpoint_id, options, now)
        material = None
        if new_scheme is not None:
            material = await _new_secret(svc, conn, tenant_id, endpoint_id, new_scheme)
        ep = await store.get_endpoint(conn, tenant_id, endpoint_id)
        assert ep is not None  # locked above
        await audit.record(svc, conn, caller, "endpoint.update", "endpoint", endpoint_id, {
            **{k: {"old": audit.safe_value(k, getattr(current, k)),
                   "new": audit.safe_value(k, v)} for k, v in {**changes, **options}.items()},
            **({"secret": "created"} if new_scheme not in (None, COBO) else {})})
    return Changed(ep, material)


async def delete_endpoint(svc: Services, caller: Caller, endpoint_id: UUID) -> None:
    caller.may_write()
    async with svc.pool.acquire() as conn, conn.transaction():
        current = await store.get_endpoint(conn, caller.tenant, endpoint_id, for_update=True)
        if current is None or not await store.delete_endpoint(conn, caller.tenant,
                                                               endpoint_id):
            raise endpoint_not_found(endpoint_id)
        await audit.record(svc, conn, caller, "endpoint.delete", "endpoint", endpoint_id,
                           audit.removed({"url": current.url, "kind": current.kind}))


async def pause_endpoint(svc: Services, caller: Caller, endpoint_id: UUID) -> Endpoint:
    """Hold new and unfinished deliveries until resumed (409 if disabled or paused)."""
    return await _change_state(
        svc, caller, endpoint_id, "endpoint.pause",
        lambda conn, now: health.pause_endpoint(conn, endpoint_id, MANUAL, now,
                                                tenant_id=caller.tenant))


async def resume_endpoint(svc: Services, caller: Caller, endpoint_id: UUID) -> Endpoint:
    """Make the endpoint active, reset its counters and re-send what it held."""
    return await _change_state(
        svc, caller, endpoint_id, "endpoint.resume",
        lambda conn, now: health.resume_endpoint(conn, endpoint_id, now,
                                                 tenant_id=caller.tenant))


async def _change_state(
    svc: Services, caller: Caller, endpoint_id: UUID, action: str,
    change: Callable[[Conn, datetime], Awaitable[StateChange]],
) -> Endpoint:
    """Pause or resume, audited when it changed something (a resume always does: it
    resets the failure counters)."""
    caller.may_write()
    async with svc.pool.acquire() as conn, conn.transaction():
        before = await store.get_endpoint(conn, caller.tenant, endpoint_id)
        try:
            done = await change(conn, svc.clock.now())
        except NotFound as exc:
            raise endpoint_not_found(endpoint_id) from exc
        ep = await store.get_endpoint(conn, caller.tenant, endpoint_id)
        if ep is None or before is None:
            raise endpoint_not_found(endpoint_id)
        if done.changed or action == "endpoint.resume":
            await audit.record(svc, conn, caller, action, "endpoint", endpoint_id, {
                **audit.diff({"state": str(before.state)}, {"state": str(ep.state)}),
                "deliveries": done.deliveries})
    return ep


async def endpoint_health(svc: Services, caller: Caller, endpoint_id: UUID) -> EndpointHealth:
    """Why an endpoint is (or is about to be) paused: its failure counters."""
    async with svc.pool.acquire() as conn:
        found = await health.list_endpoint_health(
            conn, svc.clock.now(), svc.config.health.window_seconds, tenant_id=caller.tenant,
            endpoint_id=endpoint_id, limit=1)
    if not found:
        raise endpoint_not_found(endpoint_id)
    return found[0]


async def endpoints_with_health(
    svc: Services, caller: Caller, limit: int
) -> list[tuple[Endpoint, EndpointHealth | None]]:
    """Up to `limit` endpoints of the tenant, newest first, each with its health."""
    async with svc.pool.acquire() as conn:
        found = await store.list_endpoints(conn, caller.tenant, state=None, after=None,
                                           limit=limit)
        healths = await health.list_endpoint_health(
            conn, svc.clock.now(), svc.config.health.window_seconds, tenant_id=caller.tenant,
            limit=limit)
    by_id = {h.endpoint_id: h for h in healths}
    return [(ep, by_id.get(ep.id)) for ep in found]
