"""Endpoint routes: create (the secret or public key is shown once), list, show,
update, delete, pause and resume, over operations/endpoints.py."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.spec import CURSOR, LIMIT, Param, Route
from dispatcher.operations import endpoints as ops
from dispatcher.web.context import CALLER, services
from dispatcher.web.request import page_query, path_uuid, query_str, read_json
from dispatcher.web.views import changed_json, endpoint_json, health_json, page_json

# An answer carrying a secret is never stored by a cache or a browser.
NO_STORE = {"Cache-Control": "no-store"}


def _answer_changed(changed: ops.Changed, status: int = 200) -> web.Response:
    headers = NO_STORE if changed.material is not None else None
    return web.json_response(changed_json(changed), status=status, headers=headers)


async def create_endpoint(request: web.Request) -> web.Response:
    created = await ops.create_endpoint(services(request.app), request[CALLER],
                                        await read_json(request))
    return _answer_changed(created, 201)


async def list_endpoints(request: web.Request) -> web.Response:
    found = await ops.list_endpoints(services(request.app), request[CALLER],
                                     page_query(request), query_str(request, "state"))
    return web.json_response(page_json(found, endpoint_json))


async def get_endpoint(request: web.Request) -> web.Response:
    ep = await ops.get_endpoint(services(request.app), request[CALLER],
                                path_uuid(request, "endpoint_id"))
    return web.json_response(endpoint_json(ep))


async def update_endpoint(request: web.Request) -> web.Response:
    """A partial update. A change of signing scheme makes a new secret (shown in
    this answer, as on create); the old one stops at once."""
    endpoint_id = path_uuid(request, "endpoint_id")
    changed = await ops.update_endpoint(services(request.app), request[CALLER], endpoint_id,
                                        await read_json(request))
    return _answer_changed(changed)


async def delete_endpoint(request: web.Request) -> web.Response:
    await ops.delete_endpoint(services(request.app), request[CALLER],
                              path_uuid(request, "endpoint_id"))
    return web.Response(status=204)


async def pause_endpoint(request: web.Request) -> web.Response:
    ep = await ops.pause_endpoint(services(request.app), request[CALLER],
                                  path_uuid(request, "endpoint_id"))
    return web.json_response(endpoint_json(ep))


async def resume_endpoint(request: web.Request) -> web.Response:
    ep = await ops.resume_endpoint(services(request.app), request[CALLER],
                                   path_uuid(request, "endpoint_id"))
    return web.json_response(endpoint_json(ep))


async def get_endpoint_health(request: web.Request) -> web.Response:
    svc = services(request.app)
    found = await ops.endpoint_health(svc, request[CALLER], path_uuid(request, "endpoint_id"))
    return web.json_response(health_json(found, svc.config.health, svc.clock.now()))


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
