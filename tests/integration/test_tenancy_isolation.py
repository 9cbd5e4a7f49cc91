"""The isolation matrix: every operation of the OpenAPI document, called against a
victim tenant's objects by three outsiders (another tenant's key, an operator key
acting for another tenant, another tenant's portal token), answers 404 or 403 and
none of the victim's data, and leaves the victim's objects as they were.

Operations are read from the served document, so a new route is covered by this
test the day it is declared; a new kind of path id needs a line in VICTIM_IDS."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatcher.store.console_sessions import open_session
from dispatcher.store.tenants import create_operator_key, find_api_key
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, new_api

api_server = support.api_server
http = support.http

METHODS = ("get", "post", "put", "patch", "delete")
# Bodies that would succeed on the caller's own objects, so that a refusal is the
# isolation at work and not a validation error. Others get {}.
BODIES: dict[str, Any] = {
    "createEndpoint": {"url": "https://outsider.example.com/in"},
    "updateEndpoint": {"description": "taken over", "url": "https://outsider.example.com/in"},
    "publishEvent": {"type": "transaction", "data": {"outsider": True}},
    "publishEvents": {"events": [{"type": "transaction", "data": {"outsider": True}}]},
    "retryEvents": {"status": ["Failed", "Retrying"]},
    "createEventType": {"name": "outsider.type"},
    "createTenant": {"name": "outsider-made"},
    "createCallback": {"type": "withdrawal", "data": {"outsider": True}},
    "updateTenant": {"name": "taken-over", "metadata": {"owner": "outsider"}},
}


async def _victim(api: Api) -> dict[str, Any]:
    """A tenant with an endpoint, an event delivered to it, an event type and a
    signing key; every value an outsider must never see."""
    marker = "victim-" + uuid.uuid4().hex
    ep = await api.create_endpoint(f"https://{marker}.example.com/in", description=marker,
                                   metadata={"marker": marker})
    type_name = f"victim.{uuid.uuid4().hex[:8]}"
    assert (await api.post("/v1/event-types", {"name": type_name})).status == 201
    assert (await api.post(f"/v1/endpoints/{ep['id']}/pause")).status == 200
    event = await api.publish("transaction", {"marker": marker})
    signing_key = (await api.get("/v1/signing-key")).body
    cb_ep = await api.create_endpoint(f"https://{marker}.example.com/callback", kind="callback")
    callback = await api.post("/v1/callbacks", {"type": "withdrawal", "data": {"marker": marker}})
    assert callback.status in (200, 201, 202), callback
    return {"marker": marker, "endpoint": ep, "event": event, "type": type_name,
            "callback": callback.body, "callback_endpoint": cb_ep,
            "secrets": [ep["secret"], cb_ep["secret"], signing_key["public_key"]]}


async def _snapshot(server: ApiServer, tenant: str) -> list[Any]:
    conn = await asyncpg.connect(server.dsn)
    try:
        return [tuple(r) for r in await conn.fetch(
            """SELECT 'endpoint', e.id::text, e.url, e.description, e.state, e.version::text,
                      e.secret_enc
               FROM endpoints e JOIN tenants t ON t.id = e.tenant_id WHERE t.name = $1
               UNION ALL
               SELECT 'event', v.id::text, v.type, NULL, NULL, NULL, NULL
               FROM events v JOIN tenants t ON t.id = v.tenant_id WHERE t.name = $1
               UNION ALL
               SELECT 'delivery', d.id::text, d.status::text, d.retry_pending::text,
                      d.next_attempt_at::text, d.retries_left::text, NULL
               FROM deliveries d JOIN events v ON v.id = d.event_id
               JOIN tenants t ON t.id = v.tenant_id
               -- the paused endpoint's: the engine leaves them alone (the callback's
               -- endpoint is active and its delivery moves on by itself)
               JOIN endpoints pe ON pe.id = d.endpoint_id AND pe.state = 'paused'
               WHERE t.name = $1
               UNION ALL
               SELECT 'type', y.name, y.description, NULL, NULL, NULL, NULL
               FROM event_types y JOIN tenants t ON t.id = y.tenant_id WHERE t.name = $1
               UNION ALL
               SELECT 'tenant', t.id::text, t.name, t.metadata::text, NULL, NULL, NULL
               FROM tenants t WHERE t.name = $1
               UNION ALL
               SELECT 'key', k.id::text, k.prefix, k.revoked_at::text, NULL, NULL, NULL
               FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE t.name = $1
               UNION ALL
               SELECT 'session', s.id::text, s.ended_at::text, NULL, NULL, NULL, NULL
               FROM console_sessions s JOIN tenants t ON t.id = s.tenant_id WHERE t.name = $1
               ORDER BY 1, 2""", tenant)]
    finally:
        await conn.close()


async def test_no_operation_lets_another_tenant_reach_a_tenants_objects(
    http: aiohttp.ClientSession, api_server: ApiServer
) -> None:
    victim_api = await new_api(http, api_server)
    outsider = await new_api(http, api_server)
    victim = await _victim(victim_api)
    conn = await asyncpg.connect(api_server.dsn)
    try:
        operator_key = await create_operator_key(conn, "matrix")
        victim_key = await find_api_key(conn, victim_api.key)
        now = datetime.now(UTC)  # a console session of the victim's key, to stay open
        await open_session(conn, victim_key.id, victim_key.tenant_id, now,
                           now + timedelta(hours=1))
    finally:
        await conn.close()
    link = await outsider.post("/v1/portal-links", {"expires_in": 600})
    assert link.status == 201, link

    victim_ids = {
        "endpoint_id": victim["endpoint"]["id"],
        "event_id": victim["event"]["id"],
        "name": victim["type"],
        "tenant": victim_api.tenant,
        "callback_id": victim["callback"]["id"],
        "key_id": str(victim_key.id),
    }
    never_seen = [victim["marker"], victim_api.tenant, victim["type"], *victim_ids.values(),
                  *victim["secrets"]]
    callers = {
        "another tenant's key": ({"Authorization": f"Bearer {outsider.key}"}),
        "an operator key acting for another tenant": {
            "Authorization": f"Bearer {operator_key}", "Dispatcher-Tenant": outsider.tenant},
        "another tenant's portal token": {"Authorization": f"Bearer {link.body['token']}"},
    }
    before = await _snapshot(api_server, victim_api.tenant)

    document = (await outsider.get("/v1/openapi.json")).body
    covered = []
    for path, item in document["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            missing = [n for n in names if n not in victim_ids]
            assert not missing, f"{op['operationId']}: no victim object for {missing}"
            url = path.format(**victim_ids)
            body = BODIES.get(op["operationId"], {}) if "requestBody" in op else None
            for who, headers in callers.items():
                if op.get("x-operator-only") and who.startswith("an operator"):
                    continue  # the tenants API is the operator's, for every tenant
                reply = await outsider.call(method.upper(), url, json_body=body,
                                            headers=headers, auth=False)
                where = f"{method.upper()} {url} by {who}: {reply.status} {reply.body!r}"
                text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                for secret in never_seen:
                    if secret not in url:  # an error may echo the id it was asked for
                        assert secret not in text, where
                if names or (op["security"] and op.get("x-operator-only")):
                    assert reply.status in (403, 404), where
                    assert reply.error["code"] in ("forbidden", "not_found"), where
                else:
                    assert reply.status < 500, where
            covered.append(op["operationId"])

    assert len(covered) == len(set(covered))
    assert {"getEndpoint", "deleteEndpoint", "getEvent", "getAttemptLogs", "retryEvent",
            "rotateEndpointSecret", "revealEndpointSecret", "deleteEventType", "getTenant",
            "deleteTenant", "createTenantPortalLink", "publishEvents"} <= set(covered)
    # Nothing of the victim's changed: no object, delivery, key or secret.
    assert await _snapshot(api_server, victim_api.tenant) == before
    # And the victim still sees its own objects.
    assert (await victim_api.get(f"/v1/endpoints/{victim_ids['endpoint_id']}")).status == 200


@pytest.mark.parametrize("who", ["tenant key", "portal token"])
async def test_the_matrix_would_catch_a_leak(
    http: aiohttp.ClientSession, api_server: ApiServer, who: str
) -> None:
    """The same callers, given the victim's own identity, do reach its objects: the
    matrix's 404s come from the isolation, not from a broken request."""
    victim_api = await new_api(http, api_server)
    victim = await _victim(victim_api)
    key = victim_api.key
    if who == "portal token":
        key = (await victim_api.post("/v1/portal-links", {})).body["token"]
    reply = await victim_api.get(f"/v1/endpoints/{victim['endpoint']['id']}/events/"
                                 f"{victim['event']['id']}", key=key)
    assert reply.status == 200 and victim["marker"] in json.dumps(reply.body)
