"""The OpenAPI 3.1 document, generated from the route declarations (api/spec.py)
and the schemas (api/schemas.py), served at `/v1/openapi.json`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from dispatcher import __version__
from dispatcher.api.schemas import SCHEMAS, ref
from dispatcher.api.spec import TENANT_HEADER_PARAM, Route
from dispatcher.web.context import OPENAPI

_ERROR_TEXT = {
    400: "Malformed JSON",
    401: "Missing, invalid or revoked API key (or an invalid or expired portal token)",
    403: "The credential may not do this (tenant key or portal token on an operator route, "
         "a read-only portal token writing, `Dispatcher-Tenant` naming another tenant)",
    404: "Unknown id (or another tenant's)",
    409: "Conflict with the object's current state",
    413: "Request body too large",
    415: "Content-Type is not application/json",
    422: "A field is invalid (named in `error.field`)",
    503: "Not ready",
}

_PATH_PARAM_DOC = {
    "endpoint_id": "The endpoint's id.",
    "event_id": "The event's id.",
    "name": "The event type's name.",
    "callback_id": "The callback's id.",
    "tenant": "The tenant's name or id.",
    "key_id": "The API key's id (as `dispatcher keys list` shows it).",
}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    }
    if route.description:
        op["description"] = route.description
    params = [
        {"name": name, "in": "path", "required": True, "description": _PATH_PARAM_DOC[name],
         "schema": {"type": "string"}}
        for name in route.path_params
    ]
    # Every tenant route acts for the tenant the credential resolves to (api/auth.py).
    tenant_param = (TENANT_HEADER_PARAM,) if route.auth and not route.operator else ()
    params += [
        {"name": p.name, "in": p.location, "required": p.required,
         "description": p.description, "schema": p.schema}
        for p in (*route.params, *tenant_param)
    ]
    if params:
        op["parameters"] = params
    if route.body:
        op["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": ref(route.body)}},
        }
    ok: dict[str, Any] = {"description": route.summary}
    if route.response:
        ok["content"] = {route.content_type: {"schema": ref(route.response)}}
    responses: dict[str, Any] = {str(route.ok): ok}
    for status in route.error_statuses():
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": ref("Error")}},
        }
    for status, schema in route.other_responses:
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "See the schema"),
            "content": {"application/json": {"schema": ref(schema)}},
        }
    op["responses"] = responses
    op["security"] = [{"bearer": []}] if route.auth else []
    if route.operator:
        op["x-operator-only"] = True
    return op


def build_document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dispatcher management API",
            "version": __version__,
            "description": "Webhook delivery: endpoints, publishing, event-status lookup, "
                           "attempt logs and retries. Authenticate with "
                           "`Authorization: Bearer <API key>` (an operator key "
                           "acts for the tenant named in `Dispatcher-Tenant`, else `default`; "
                           "a tenant key or portal token for its own tenant); every error is "
                           '`{"error": {"code", "message", "field"}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API key (dk_..., operator or tenant) or a portal token "
                               "(dpt_...)."}},
        },
        "security": [{"bearer": []}],
    }


async def serve_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


OPENAPI_ROUTE = Route("GET", "/v1/openapi.json", serve_document, "getOpenApi",
                      "This OpenAPI document", "Operations", auth=False, response="OpenApi")
