"""Endpoint pages: the list with health, one endpoint with its actions, and the form
POSTs. Every change is made by the API's own handler (api/endpoints.py,
api/secrets.py, api/lookup.py), so the console validates and writes exactly as
the API does; the console only turns forms into bodies and answers into pages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from aiohttp import web

from dispatcher.api import endpoints as api_endpoints
from dispatcher.api import lookup as api_lookup
from dispatcher.api import secrets as api_secrets
from dispatcher.api.context import CLOCK, CONFIG, POLICIES, POOL, TENANT
from dispatcher.api.request import path_uuid
from dispatcher.api.views import endpoint_json, event_status_json, health_json
from dispatcher.clock import to_ms
from dispatcher.console.access import FORM
from dispatcher.console.render import ms_time, render
from dispatcher.errors import ValidationError
from dispatcher.model import SIGNING_SCHEMES, EndpointKind
from dispatcher.store import endpoints as store
from dispatcher.store import health, lookup
from dispatcher.transport.validate import AUTH_TYPES, header_lines

MAX_LISTED = 500
RECENT_EVENTS = 20
# Form fields the edit form sends; blank numbers mean "the default".
NUMBERS = ("timeout_seconds", "max_in_flight", "pause_window_threshold",
           "pause_total_threshold")
TEXTS = ("url", "description", "signing_scheme", "retry_policy")
NULLABLE = ("pause_window_threshold", "pause_total_threshold")
# Auth inputs of the edit form -> the API's field. Secret inputs are never filled in.
AUTH_INPUTS = {"auth_username": "username", "auth_password": "password",
               "auth_token": "token", "oauth2_token_url": "token_url",
               "oauth2_client_id": "client_id", "oauth2_client_secret": "client_secret",
               "oauth2_scope": "scope", "oauth2_audience": "audience"}
UNSTRIPPED = ("auth_password",)  # a password is taken exactly as typed
TLS_INPUTS = {"tls_client_certificate": "client_certificate",
              "tls_client_key": "client_key", "tls_ca_certificate": "ca_certificate"}


def answer(response: web.StreamResponse) -> Any:
    """The JSON an API handler answered (None for an empty answer)."""
    assert isinstance(response, web.Response)
    return json.loads(response.text or "null")


def _number(text: str) -> Any:
    """A form's number as JSON would carry it; anything else is passed on as text so
    the API's validation names the field."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def endpoint_body(form: dict[str, str], *, partial: bool) -> dict[str, Any]:
    """The API body for a create (`partial=False`) or an edit form."""
    body: dict[str, Any] = {}
    for key in TEXTS:
        if key in form and (form[key].strip() or key == "description"):
            body[key] = form[key].strip()
    if not partial and form.get("kind", "").strip():
        body["kind"] = form["kind"].strip()
    # A callback endpoint takes no event types: a blank field is left out (the API
    # refuses any given).
    if body.get("kind") == EndpointKind.CALLBACK and not form.get("event_types", "").strip():
        pass
    elif "event_types" in form:
        types = [t.strip() for t in form["event_types"].replace("\n", ",").split(",")]
        body["event_types"] = [t for t in types if t] or ["*"]
    for key in NUMBERS:
        text = form.get(key, "").strip()
        if text:
            body[key] = _number(text)
        elif partial and key in form and key in NULLABLE:
            body[key] = None
    return body


def options_body(form: dict[str, str]) -> dict[str, Any]:
    """The delivery options of the create and edit forms as API fields: the headers textarea
    (one `Name: value` per line) replaces the headers; auth and TLS are replaced
    when any of their fields is filled in, kept when all are blank, removed when
    their remove box is ticked."""
    body: dict[str, Any] = {}
    if "headers" in form:
        body["headers"] = header_lines(form["headers"].splitlines())
    if form.get("auth_remove"):
        body["auth"] = None
    else:
        given = {key: form[name] if name in UNSTRIPPED else form[name].strip()
                 for name, key in AUTH_INPUTS.items() if form.get(name, "").strip()}
        if given:
            body["auth"] = {"type": form.get("auth_type", "").strip(), **given}
    if form.get("tls_remove"):
        body["tls"] = None
    else:
        pems = {key: form[name] for name, key in TLS_INPUTS.items()
                if form.get(name, "").strip()}
        if pems:
            body["tls"] = pems
    return body


def choices(request: web.Request) -> dict[str, Any]:
    config = request.app[CONFIG]
    policies = request.app[POLICIES]
    return {"schemes": SIGNING_SCHEMES, "policies": sorted(policies),
            "kinds": [str(k) for k in EndpointKind], "auth_types": AUTH_TYPES,
            "callback_policy": config.callbacks.retry_policy,
            "default_scheme": config.signing.default_scheme,
            "default_policy": config.delivery.default_retry_policy}


async def endpoint_rows(request: web.Request) -> list[dict[str, Any]]:
    """Every endpoint of the tenant with its health, newest first."""
    tenant_id = request[TENANT]
    config = request.app[CONFIG]
    now = request.app[CLOCK].now()
    async with request.app[POOL].acquire() as conn:
        found = await store.list_endpoints(conn, tenant_id, state=None, after=None,
                                           limit=MAX_LISTED)
        healths = await health.list_endpoint_health(conn, now, config.health.window_seconds,
                                                     tenant_id=tenant_id, limit=MAX_LISTED)
    by_id = {h.endpoint_id: health_json(h, config.health, now) for h in healths}
    return [{**endpoint_json(ep), "health": by_id.get(ep.id)} for ep in found]


async def list_page(request: web.Request, *, status: int = 200, message: str = "",
                    form: dict[str, str] | None = None) -> web.Response:
    return render(request, "endpoints.html", status=status, endpoints=await endpoint_rows(request),
                  message=message, form=form or {}, **choices(request))


async def endpoints_page(request: web.Request) -> web.StreamResponse:
    return await list_page(request)


async def create(request: web.Request) -> web.StreamResponse:
    form = request[FORM]
    try:
        created = answer(await api_endpoints.create_endpoint_from(
            request, {**endpoint_body(form, partial=False), **options_body(form)}))
    except ValidationError as exc:
        return await list_page(request, status=exc.status, message=exc.message, form=form)
    return await detail_page(request, endpoint_id=created["id"], secret=created,
                             message="Endpoint created. Its signing secret is shown once "
                                     "below; it can be revealed again later.")


async def detail_page(request: web.Request, *, endpoint_id: str | None = None,
                      status: int = 200, message: str = "",
                      secret: dict[str, Any] | None = None) -> web.Response:
    if endpoint_id is None:
        endpoint = answer(await api_endpoints.get_endpoint(request))
        endpoint_health = answer(await api_endpoints.get_endpoint_health(request))
    else:  # just created: not in this request's path
        rows = [r for r in await endpoint_rows(request) if r["id"] == endpoint_id]
        endpoint, endpoint_health = rows[0], rows[0]["health"]
    async with request.app[POOL].acquire() as conn:
        recent = await lookup.endpoint_events(
            conn, request[TENANT], UUID(endpoint["id"]), statuses=None, types=None,
            since=None, until=None, before=None, limit=RECENT_EVENTS)
    return render(request, "endpoint.html", status=status, endpoint=endpoint,
                  health=endpoint_health, recent=[event_status_json(d) for d in recent],
                  message=message,
                  secret=secret, **choices(request))


async def endpoint_page(request: web.Request) -> web.StreamResponse:
    path_uuid(request, "endpoint_id")
    done = request.query.get("done", "")
    return await detail_page(request, message=DONE_MESSAGES.get(done, ""))


DONE_MESSAGES = {
    "paused": "Endpoint paused: new deliveries are held until it is resumed.",
    "resumed": "Endpoint resumed: held deliveries are being sent.",
    "updated": "Endpoint updated.",
}


def _back(request: web.Request, done: str) -> web.HTTPFound:
    endpoint_id = request.match_info["endpoint_id"]
    return web.HTTPFound(f"/console/endpoints/{endpoint_id}?{urlencode({'done': done})}")


async def update(request: web.Request) -> web.StreamResponse:
    form = request[FORM]
    try:
        changed = answer(await api_endpoints.update_endpoint_from(
            request, {**endpoint_body(form, partial=True), **options_body(form)}))
    except ValidationError as exc:  # nothing was changed; the form is not echoed back
        return await detail_page(request, status=exc.status, message=exc.message)
    if "secret" in changed or "public_key" in changed:
        return await detail_page(request, secret=changed, message="Endpoint updated. The new "
                                 "signing scheme has a new secret, shown below.")
    raise _back(request, "updated")


async def pause(request: web.Request) -> web.StreamResponse:
    await api_endpoints.pause_endpoint(request)
    raise _back(request, "paused")


async def resume(request: web.Request) -> web.StreamResponse:
    await api_endpoints.resume_endpoint(request)
    raise _back(request, "resumed")


async def delete(request: web.Request) -> web.StreamResponse:
    await api_endpoints.delete_endpoint(request)
    raise web.HTTPFound("/console/endpoints")


async def rotate_secret(request: web.Request) -> web.StreamResponse:
    rotated = answer(await api_secrets.rotate_secret(request))
    return await detail_page(request, secret=rotated, message="Secret rotated. The previous "
                             "secret keeps signing deliveries alongside it until "
                             f"{_expiry(rotated)}.")


def _expiry(rotated: dict[str, Any]) -> str:
    return ms_time(rotated.get("previous_secret_expires_timestamp")) or "now"


async def reveal_secret(request: web.Request) -> web.StreamResponse:
    revealed = answer(await api_secrets.reveal_secret(request))
    return await detail_page(request, secret=revealed)


def form_time(form: dict[str, str], key: str) -> int | None:
    """A datetime-local field (taken as UTC) as Unix milliseconds."""
    text = form.get(key, "").strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(f"{key} must be a date and time", field=key) from exc
    return to_ms(when.replace(tzinfo=UTC) if when.tzinfo is None else when)


async def replay(request: web.Request) -> web.StreamResponse:
    """Bulk replay of the endpoint's Failed (and optionally Retrying) events."""
    form = request[FORM]
    body: dict[str, Any] = {"status": form.get("status", "Failed").split(",")}
    for key in ("since", "until"):
        value = form_time(form, key)
        if value is not None:
            body[key] = value
    queued = answer(await api_lookup.retry_many_from(request, body))["queued"]
    return await detail_page(request, message=f"{queued} event(s) queued for another attempt.")
