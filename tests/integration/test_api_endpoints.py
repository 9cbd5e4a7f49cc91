"""Endpoint routes through real HTTP against the daemon: create (secret shown once),
list with cursors, show, update, delete, pause/resume, validation and tenant
isolation."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import asyncpg
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, new_api

# The shared fixtures: a daemon for this module, a fresh tenant per test.
api_server, http, api, other = support.api_server, support.http, support.api, support.other

URL = "https://hooks.example.com/in"
FIELDS = {"id", "kind", "url", "description", "event_types", "signing_scheme", "retry_policy",
          "timeout_seconds", "max_in_flight", "metadata", "pause_window_threshold",
          "pause_total_threshold", "state", "state_reason",
          "state_changed_timestamp", "created_timestamp", "updated_timestamp"}
# Backpressure, read-only.
FIELDS |= {"effective_max_in_flight", "rate_limited_until_timestamp"}
# Delivery options, public views only.
FIELDS |= {"headers", "auth", "tls"}
# Tracing.
FIELDS |= {"propagate_trace_context", "channels"}


async def test_create_answers_the_endpoint_with_its_secret_once(api: Api) -> None:
    created = await api.create_endpoint(URL, description="orders",
                                        metadata={"team": "a", "limit": 1e308})
    assert set(created) == FIELDS | {"secret"}
    assert created["secret"].startswith("whsec_")
    assert created["url"] == URL
    assert created["event_types"] == ["*"]
    assert created["signing_scheme"] == "standard-v1"
    assert created["retry_policy"] == "standard"
    assert created["timeout_seconds"] == 2.0
    assert created["max_in_flight"] == 10
    assert created["state"] == "active" and created["state_reason"] is None
    assert created["metadata"] == {"team": "a", "limit": 1e308}
    meta = (await api.get(f"/v1/endpoints/{created['id']}")).body["metadata"]
    assert isinstance(meta["limit"], float)
    shown = await api.get(f"/v1/endpoints/{created['id']}")
    assert shown.status == 200
    assert set(shown.body) == FIELDS  # never the secret again
    revealed = await api.get(f"/v1/endpoints/{created['id']}/secret")
    assert revealed.body == {"signing_scheme": "standard-v1", "secret": created["secret"]}


async def test_ed25519_schemes_answer_a_public_key_only(api: Api) -> None:
    v1a = await api.create_endpoint(URL, signing_scheme="standard-v1a")
    assert "secret" not in v1a
    assert v1a["public_key"].startswith("whpk_")
    raw = base64.b64decode(v1a["public_key"][5:])
    pem_key = load_pem_public_key(v1a["public_key_pem"].encode())
    assert pem_key.public_bytes_raw() == raw  # type: ignore[union-attr]
    cobo = await api.create_endpoint(URL, signing_scheme="cobo")
    assert "secret" not in cobo
    key = await api.get("/v1/signing-key")
    assert key.status == 200
    assert key.body["scheme"] == "cobo"
    assert cobo["public_key"] == key.body["public_key"]
    assert len(bytes.fromhex(key.body["public_key"])) == 32
    pem_key = load_pem_public_key(key.body["public_key_pem"].encode())
    assert pem_key.public_bytes_raw().hex() == key.body["public_key"]  # type: ignore[union-attr]
    again = await api.get(f"/v1/endpoints/{cobo['id']}/secret")
    assert again.body["public_key"] == key.body["public_key"]
    rotate = await api.post(f"/v1/endpoints/{cobo['id']}/rotate-secret")
    assert rotate.status == 409


async def test_the_secret_is_stored_encrypted(api: Api, api_server: ApiServer) -> None:
    created = await api.create_endpoint(URL)
    conn = await asyncpg.connect(api_server.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM endpoints WHERE id = $1::uuid", created["id"])
    finally:
        await conn.close()
    assert row is not None
    dump = json.dumps({k: str(v) for k, v in dict(row).items()})
    key = created["secret"].removeprefix("whsec_")
    assert key not in dump and created["secret"] not in dump
    assert row["secret_enc"] is not None


async def test_rotation_returns_a_new_secret_and_the_overlap_end(api: Api) -> None:
    created = await api.create_endpoint(URL)
    rotated = await api.post(f"/v1/endpoints/{created['id']}/rotate-secret")
    assert rotated.status == 200
    assert rotated.body["secret"].startswith("whsec_")
    assert rotated.body["secret"] != created["secret"]
    assert rotated.body["previous_secret_expires_timestamp"] > created["created_timestamp"]
    revealed = await api.get(f"/v1/endpoints/{created['id']}/secret")
    assert revealed.body["secret"] == rotated.body["secret"]


async def test_list_pages_with_an_opaque_cursor(api: Api) -> None:
    ids = [(await api.create_endpoint(f"{URL}/{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        reply = await api.get("/v1/endpoints" + query)
        assert reply.status == 200
        assert len(reply.body["data"]) <= 2
        seen += [ep["id"] for ep in reply.body["data"]]
        pages += 1
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    for bad in ("limit=0", "limit=101", "limit=x", "cursor=nonsense", "state=sleeping"):
        reply = await api.get("/v1/endpoints?" + bad)
        assert reply.status == 422, bad
        assert reply.error["field"] == bad.split("=")[0]


async def test_update_changes_given_fields_and_bumps_the_version(
    api: Api, api_server: ApiServer
) -> None:
    created = await api.create_endpoint(URL, event_types=["transaction"])
    updated = await api.patch(f"/v1/endpoints/{created['id']}",
                              {"description": "new", "event_types": ["block", "transaction"],
                               "timeout_seconds": 5, "retry_policy": "okx",
                               "max_in_flight": 3, "metadata": {"k": "v"}})
    assert updated.status == 200, updated
    body = updated.body
    assert (body["description"], body["event_types"], body["timeout_seconds"],
            body["retry_policy"], body["max_in_flight"], body["metadata"]) == (
        "new", ["block", "transaction"], 5.0, "okx", 3, {"k": "v"})
    assert body["url"] == URL and "secret" not in body
    conn = await asyncpg.connect(api_server.dsn)
    try:
        version = await conn.fetchval("SELECT version FROM endpoints WHERE id = $1::uuid",
                                      created["id"])
    finally:
        await conn.close()
    assert version > 2  # created, secret set, updated


async def test_changing_the_scheme_issues_new_signing_material(api: Api) -> None:
    created = await api.create_endpoint(URL)
    to_cobalt = await api.patch(f"/v1/endpoints/{created['id']}", {"signing_scheme": "cobalt"})
    assert to_cobalt.status == 200
    assert to_cobalt.body["signing_scheme"] == "cobalt"
    assert to_cobalt.body["secret"] != created["secret"]
    to_cobo = await api.patch(f"/v1/endpoints/{created['id']}", {"signing_scheme": "cobo"})
    assert "public_key" in to_cobo.body and "secret" not in to_cobo.body


async def test_delete_then_404(api: Api) -> None:
    created = await api.create_endpoint(URL)
    assert (await api.delete(f"/v1/endpoints/{created['id']}")).status == 204
    assert (await api.get(f"/v1/endpoints/{created['id']}")).status == 404
    assert (await api.delete(f"/v1/endpoints/{created['id']}")).status == 404


async def test_pause_and_resume(api: Api) -> None:
    created = await api.create_endpoint(URL)
    paused = await api.post(f"/v1/endpoints/{created['id']}/pause")
    assert paused.status == 200
    assert paused.body["state"] == "paused" and paused.body["state_reason"] == "manual"
    assert paused.body["state_changed_timestamp"] is not None
    again = await api.post(f"/v1/endpoints/{created['id']}/pause")
    assert again.status == 200 and again.body["state"] == "paused"
    health = await api.get(f"/v1/endpoints/{created['id']}/health")
    assert health.status == 200
    assert health.body["state"] == "paused" and health.body["state_reason"] == "manual"
    resumed = await api.post(f"/v1/endpoints/{created['id']}/resume")
    assert resumed.status == 200
    assert resumed.body["state"] == "active" and resumed.body["state_reason"] is None


async def test_pause_thresholds_per_endpoint_and_health_view(api: Api) -> None:
    created = await api.create_endpoint(URL, pause_window_threshold=10)
    assert created["pause_window_threshold"] == 10
    assert created["pause_total_threshold"] is None
    health = await api.get(f"/v1/endpoints/{created['id']}/health")
    assert health.body == {
        "endpoint_id": created["id"], "state": "active", "state_reason": None,
        "state_changed_timestamp": None, "failures_in_window": 0, "window_seconds": 604800,
        "window_threshold": 10, "failures_since_resume": 0, "total_threshold": 500,
        "held": 0, "redrive_pending": False, "warnings": []}
    updated = await api.patch(f"/v1/endpoints/{created['id']}",
                              {"pause_window_threshold": None, "pause_total_threshold": 50})
    assert updated.status == 200
    assert (updated.body["pause_window_threshold"], updated.body["pause_total_threshold"]) == (
        None, 50)
    health = await api.get(f"/v1/endpoints/{created['id']}/health")
    assert (health.body["window_threshold"], health.body["total_threshold"]) == (100, 50)
    bad = await api.patch(f"/v1/endpoints/{created['id']}", {"pause_total_threshold": 0})
    assert bad.status == 422 and bad.error["field"] == "pause_total_threshold"


async def test_invalid_fields_are_422_naming_the_field(api: Api) -> None:
    cases = [
        ({"url": "https://x.example.com/" + "a" * 480}, "url"),  # 501 characters
        ({"url": "ftp://hooks.example.com/in"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/in"}, "url"),
        ({}, "url"),
        ({"url": 5}, "url"),
        ({"url": URL, "signing_scheme": "md5"}, "signing_scheme"),
        ({"url": URL, "retry_policy": "forever"}, "retry_policy"),
        ({"url": URL, "timeout_seconds": 31}, "timeout_seconds"),
        ({"url": URL, "timeout_seconds": 0.5}, "timeout_seconds"),
        ({"url": URL, "timeout_seconds": "2"}, "timeout_seconds"),
        ({"url": URL, "max_in_flight": 0}, "max_in_flight"),
        ({"url": URL, "max_in_flight": 1001}, "max_in_flight"),
        ({"url": URL, "event_types": []}, "event_types"),
        ({"url": URL, "event_types": "transaction"}, "event_types"),
        ({"url": URL, "event_types": ["transaction", "no.such.type"]}, "event_types[1]"),
        ({"url": URL, "metadata": [1]}, "metadata"),
        ({"url": URL, "metadata": {"a": "\u0000"}}, "metadata"),
        ({"url": URL, "description": "x" * 1001}, "description"),
        ({"url": URL, "description": "nul\u0000"}, "description"),
        ({"url": URL, "colour": "red"}, "colour"),
        ({"url": URL, "state": "paused"}, "state"),
    ]
    for body, field in cases:
        reply = await api.post("/v1/endpoints", body)
        assert reply.status == 422, (body, reply)
        assert reply.error["field"] == field, (body, reply.error)
        assert reply.error["code"] == "validation_error"
    array = await api.post("/v1/endpoints", [URL])
    assert array.status == 422
    listed = await api.get("/v1/endpoints")
    assert listed.body["data"] == []  # nothing half-written


async def test_strict_url_policy_rejects_port_and_length(
    daemon_factory: Any, http: aiohttp.ClientSession
) -> None:
    daemon = await daemon_factory(DISPATCHER_URLS__ALLOW_HTTP="false",
                                  DISPATCHER_URLS__ALLOW_ANY_PORT="false",
                                  DISPATCHER_URLS__ALLOW_PRIVATE_NETWORKS="false")
    client = await new_api(http, ApiServer(daemon.url, daemon.env["DISPATCHER_DATABASE_URL"],
                                           daemon))
    for url in ("https://hooks.example.com:8080/in", "https://hooks.example.com/" + "a" * 475,
                "http://hooks.example.com/in", "https://127.0.0.1/in",
                "https://169.254.169.254/latest", "https://[::ffff:10.0.0.1]/in",
                "https://localhost/in"):
        reply = await client.post("/v1/endpoints", {"url": url})
        assert reply.status == 422, (url, reply)
        assert reply.error["field"] == "url"
    assert len("https://hooks.example.com/" + "a" * 475) == 501
    ok = await client.post("/v1/endpoints", {"url": "https://hooks.example.com:443/in"})
    assert ok.status == 201


async def test_another_tenants_endpoint_is_404_everywhere(api: Api, other: Api) -> None:
    mine = await api.create_endpoint(URL)
    base = f"/v1/endpoints/{mine['id']}"
    for method, path, body in [
        ("GET", base, None), ("PATCH", base, {"description": "x"}), ("DELETE", base, None),
        ("POST", base + "/pause", None), ("POST", base + "/resume", None),
        ("POST", base + "/rotate-secret", None), ("GET", base + "/secret", None),
        ("GET", base + "/health", None),
        ("GET", base + "/events", None), ("POST", base + "/retry", {"status": "Failed"}),
    ]:
        reply = await other.call(method, path, json_body=body)
        assert reply.status == 404, (method, path, reply)
        assert reply.error["code"] == "not_found"
    assert (await other.get("/v1/endpoints")).body["data"] == []
    assert (await api.get(base)).status == 200  # untouched


async def test_unknown_and_malformed_ids_are_404(api: Api) -> None:
    for path in ("/v1/endpoints/00000000-0000-0000-0000-000000000000",
                 "/v1/endpoints/not-a-uuid", "/v1/endpoints/%00",
                 "/v1/endpoints/not-a-uuid/events/also-not", "/v1/events/not-a-uuid",
                 "/v1/events/00000000-0000-0000-0000-000000000000",
                 "/v1/endpoints/not-a-uuid/events/also-not/logs"):
        reply = await api.get(path)
        assert reply.status == 404, (path, reply)
        assert reply.error["code"] == "not_found"
