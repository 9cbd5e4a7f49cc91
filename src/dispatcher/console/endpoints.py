"""Endpoint pages: the list with health, one endpoint with its actions, and the form
POSTs. Every read and change is an operation (operations/endpoints.py, secrets.py,
events.py), the same the API calls, so the console validates and writes exactly as
the API does; it only turns forms into inputs and results into pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from aiohttp import web

from dispatcher.clock import to_ms
from dispatcher.console.access import FORM
from dispatcher.console.render import ms_time, render
from dispatcher.errors import ValidationError
from dispatcher.model import SIGNING_SCHEMES, EndpointKind
from dispatcher.operations import endpoints as ops
from dispatcher.operations import events as event_ops
from dispatcher.operations import secrets as secret_ops
from dispatcher.operations.pages import PageQuery
from dispatcher.transport.validate import AUTH_TYPES, header_lines
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import path_uuid
from dispatcher.web.views import (
    changed_json,
    endpoint_json,
    event_status_json,
    health_json,
    material_json,
    rotated_json,
)

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
    svc = services(request.app)
    config = svc.config
    return {"schemes": SIGNING_SCHEMES, "policies": sorted(svc.policies),
            "kinds": [str(k) for k in EndpointKind], "auth_types": AUTH_TYPES,
            "callback_policy": config.callbacks.retry_policy,
            "default_scheme": config.signing.default_scheme,
            "default_policy": config.delivery.default_retry_policy}


async def endpoint_rows(request: web.Request) -> list[dict[str, Any]]:
    """Every endpoint of the tenant with its health, newest first."""
    svc = services(request.app)
    now = svc.clock.now()
    found = await ops.endpoints_with_health(svc, request[CALLER], MAX_LISTED)
    return [{**endpoint_json(ep), "health": None if h is None
             else health_json(h, svc.config.health, now)} for ep, h in found]


async def list_page(request: web.Request, *, status: int = 200, message: str = "",
                    form: dict[str, str] | None = None) -> web.Response:
    return render(request, "endpoints.html", status=status, endpoints=await endpoint_rows(request),
                  message=message, form=form or {}, **choices(request))


async def endpoints_page(request: web.Request) -> web.StreamResponse:
    return await list_page(request)


async def create(request: web.Request) -> web.StreamResponse:
    form = request[FORM]
    try:
        created = await ops.create_endpoint(
            services(request.app), request[CALLER],
            {**endpoint_body(form, partial=False), **options_body(form)})
    except ValidationError as exc:
        return await list_page(request, status=exc.status, message=exc.message, form=form)
    return await detail_page(request, endpoint_id=created.endpoint.id,
                             secret=changed_json(created),
                             message="Endpoint created. Its signing secret is shown once "
                                     "below; it can be revealed again later.")


async def detail_page(request: web.Request, *, endpoint_id: UUID | None = None,
                      status: int = 200, message: str = "",
                      secret: dict[str, Any] | None = None) -> web.Response:
    """One endpoint (the path's, or `endpoint_id` just created) with its health and
    recent events."""
    svc, caller = services(request.app), request[CALLER]
    if endpoint_id is None:
        endpoint_id = path_uuid(request, "endpoint_id")
    endpoint = await ops.get_endpoint(svc, caller, endpoint_id)
    endpoint_health = await ops.endpoint_health(svc, caller, endpoint_id)
    recent = await event_ops.endpoint_events(svc, caller, endpoint_id,
                                             PageQuery(RECENT_EVENTS), event_ops.EventFilter())
    return render(request, "endpoint.html", status=status, endpoint=endpoint_json(endpoint),
                  health=health_json(endpoint_health, svc.config.health, svc.clock.now()),
                  recent=[event_status_json(d) for d in recent.items],
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
        changed = await ops.update_endpoint(
            services(request.app), request[CALLER], path_uuid(request, "endpoint_id"),
            {**endpoint_body(form, partial=True), **options_body(form)})
    except ValidationError as exc:  # nothing was changed; the form is not echoed back
        return await detail_page(request, status=exc.status, message=exc.message)
    if changed.material is not None:
        return await detail_page(request, secret=changed_json(changed),
                                 message="Endpoint updated. The new signing scheme has a new "
                                         "secret, shown below.")
    raise _back(request, "updated")


async def pause(request: web.Request) -> web.StreamResponse:
    await ops.pause_endpoint(services(request.app), request[CALLER],
                             path_uuid(request, "endpoint_id"))
    raise _back(request, "paused")


async def resume(request: web.Request) -> web.StreamResponse:
    await ops.resume_endpoint(services(request.app), request[CALLER],
                              path_uuid(request, "endpoint_id"))
    raise _back(request, "resumed")


async def delete(request: web.Request) -> web.StreamResponse:
    await ops.delete_endpoint(services(request.app), request[CALLER],
                              path_uuid(request, "endpoint_id"))
    raise web.HTTPFound("/console/endpoints")


async def rotate_secret(request: web.Request) -> web.StreamResponse:
    rotated = rotated_json(await secret_ops.rotate_secret(
        services(request.app), request[CALLER], path_uuid(request, "endpoint_id")))
    return await detail_page(request, secret=rotated, message="Secret rotated. The previous "
                             "secret keeps signing deliveries alongside it until "
                             f"{_expiry(rotated)}.")


def _expiry(rotated: dict[str, Any]) -> str:
    return ms_time(rotated.get("previous_secret_expires_timestamp")) or "now"


async def reveal_secret(request: web.Request) -> web.StreamResponse:
    material = await secret_ops.reveal_secret(services(request.app), request[CALLER],
                                              path_uuid(request, "endpoint_id"))
    return await detail_page(request, secret={"signing_scheme": material.signing_scheme,
                                              **material_json(material)})


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
    queued = await event_ops.replay(services(request.app), request[CALLER],
                                    path_uuid(request, "endpoint_id"), body)
    return await detail_page(request, message=f"{queued} event(s) queued for another attempt.")
