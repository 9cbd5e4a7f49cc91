"""Tenancy: operator and tenant keys, the tenants API, acting for a tenant with
`Dispatcher-Tenant`, per-event tenants in batch publish, and portal links, against a
real daemon."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest

from dispatcher.portal_tokens import KEY_PURPOSE, sign_portal_token
from dispatcher.secretbox import SecretBox
from dispatcher.store.migrate import load_migrations, migrate
from dispatcher.store.tenants import (
    authenticate,
    authenticate_key,
    create_api_key,
    create_operator_key,
    ensure_tenant,
)
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, Reply, new_api, start_server
from tests.integration.test_migrations import empty_db  # noqa: F401  (a fixture)
from tests.support.console import ConsoleUser
from tests.support.factories import make_endpoint
from tests.support.receiver import Receiver

if TYPE_CHECKING:
    from tests.support.pg import TestPostgres

MASTER = base64.b64encode(b"k" * 32).decode()
BOX = SecretBox(b"k" * 32)
URL = "https://hooks.example.com/in"

http, api, op = support.http, support.api, support.op


@pytest.fixture(scope="module")
def api_server(pg: TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from start_server(pg, tmp_path_factory.mktemp("tenancy"),
                            DISPATCHER_MASTER_KEY=MASTER,
                            DISPATCHER_SERVER__MAX_BATCH_EVENTS="1000")


async def _sql(server: ApiServer, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(server.dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


@pytest.fixture
async def other(http: aiohttp.ClientSession, api_server: ApiServer) -> Api:
    return await new_api(http, api_server)


def as_tenant(tenant: str) -> dict[str, str]:
    return {"Dispatcher-Tenant": tenant}


def forbidden(reply: Reply, field: str | None = None) -> None:
    assert reply.status == 403, reply
    assert reply.error["code"] == "forbidden"
    if field:
        assert reply.error["field"] == field


async def new_tenant(op: Api, **body: Any) -> dict[str, Any]:
    reply = await op.post("/v1/tenants", {"name": "c-" + uuid.uuid4().hex[:10], **body})
    assert reply.status == 201, reply
    tenant: dict[str, Any] = reply.body
    return tenant


async def endpoint_for(op: Api, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    reply = await op.post("/v1/endpoints", {"url": URL, **fields}, headers=headers)
    assert reply.status == 201, reply
    body: dict[str, Any] = reply.body
    return body


# --- keys ---------------------------------------------------------------------------


async def test_an_operator_key_acts_on_default_without_the_header_and_on_the_named_tenant(
    op: Api, api: Api, api_server: ApiServer
) -> None:
    ep = await op.create_endpoint(URL, description="for default")
    [default_id] = [r["id"] for r in await _sql(api_server,
                                                 "SELECT id FROM tenants WHERE name = 'default'")]
    owner = await _sql(api_server, "SELECT tenant_id FROM endpoints WHERE id = $1",
                       uuid.UUID(ep["id"]))
    assert owner[0]["tenant_id"] == default_id

    # By name or by id, the operator sees exactly what the tenant's own key sees.
    theirs = await api.create_endpoint(URL)
    for ref in (api.tenant, str((await _sql(api_server, "SELECT id FROM tenants WHERE name = $1",
                                            api.tenant))[0]["id"])):
        listed = await op.get("/v1/endpoints", headers=as_tenant(ref))
        assert [e["id"] for e in listed.body["data"]] == [theirs["id"]]
    assert (await op.get(f"/v1/endpoints/{ep['id']}", headers=as_tenant(api.tenant))).status == 404
    made = await op.post("/v1/endpoints", {"url": URL}, headers=as_tenant(api.tenant))
    assert made.status == 201
    assert made.body["id"] in {e["id"] for e in (await api.get("/v1/endpoints")).body["data"]}

    unknown = await op.get("/v1/endpoints", headers=as_tenant("no-such-tenant"))
    assert unknown.status == 404 and unknown.error["field"] == "Dispatcher-Tenant"


async def test_a_tenant_key_naming_another_tenant_is_refused_and_naming_itself_is_ignored(
    api: Api, other: Api, api_server: ApiServer
) -> None:
    mine = await api.create_endpoint(URL)
    forbidden(await api.get("/v1/endpoints", headers=as_tenant(other.tenant)),
              "Dispatcher-Tenant")
    forbidden(await api.post("/v1/endpoints", {"url": URL}, headers=as_tenant(other.tenant)))
    forbidden(await api.get("/v1/endpoints", headers=as_tenant("default")))
    [own_id] = [r["id"] for r in await _sql(api_server, "SELECT id FROM tenants WHERE name = $1",
                                             api.tenant)]
    for ref in (api.tenant, str(own_id), str(own_id).upper(), ""):
        listed = await api.get("/v1/endpoints", headers=as_tenant(ref))
        assert listed.status == 200, (ref, listed)
        assert [e["id"] for e in listed.body["data"]] == [mine["id"]]
    assert (await other.get("/v1/endpoints")).body["data"] == []


async def test_keys_of_a_database_made_before_operator_keys_stay_tenant_keys(
    empty_db: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn, [m for m in load_migrations() if m.name < "0009"])
        key = await create_api_key(conn, "acme")  # as the old code did
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'acme'")
        await migrate(conn)
        owner = await authenticate_key(conn, key)
        assert owner is not None
        assert (owner.kind, owner.tenant_id, owner.tenant) == ("tenant", tenant_id, "acme")
        assert await authenticate(conn, key) == tenant_id
        # An operator key belongs to no tenant; a tenant key always to one.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE api_keys SET kind = 'operator'")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE api_keys SET tenant_id = NULL")
        operator = await create_operator_key(conn)
        owner = await authenticate_key(conn, operator)
        assert owner is not None and (owner.kind, owner.tenant_id) == ("operator", None)
        assert await authenticate(conn, operator) is None  # no `default` tenant here
        default_id = await ensure_tenant(conn, "default")
        assert await authenticate(conn, operator) == default_id
    finally:
        await conn.close()


# --- tenants API --------------------------------------------------------------------


async def test_tenants_are_created_listed_shown_and_updated_by_operators_only(
    op: Api, api: Api
) -> None:
    prefix = "p" + uuid.uuid4().hex[:8]
    made = []
    for i in range(3):
        reply = await op.post("/v1/tenants", {"name": f"{prefix}.c-{i}", "metadata": {"plan": i}})
        assert reply.status == 201, reply
        assert set(reply.body) == {"id", "name", "metadata", "created_timestamp",
                                   "updated_timestamp"}
        made.append(reply.body)
    dup = await op.post("/v1/tenants", {"name": f"{prefix}.c-0"})
    assert dup.status == 409 and dup.error["field"] == "name"
    for bad in ("", "Upper", "a b", "x" * 101, "é", str(uuid.uuid4())):
        reply = await op.post("/v1/tenants", {"name": bad})
        assert reply.status == 422 and reply.error["field"] == "name", bad
    assert (await op.post("/v1/tenants", {"name": "ok-1", "extra": 1})).status == 422

    first = await op.get(f"/v1/tenants?name_prefix={prefix}&limit=2")
    assert [t["name"] for t in first.body["data"]] == [f"{prefix}.c-0", f"{prefix}.c-1"]
    rest = await op.get(f"/v1/tenants?name_prefix={prefix}&limit=2&cursor="
                        f"{first.body['next_cursor']}")
    assert [t["name"] for t in rest.body["data"]] == [f"{prefix}.c-2"]
    assert rest.body["next_cursor"] is None
    # `_` and `%` in a prefix are literal characters, not patterns.
    assert (await op.get(f"/v1/tenants?name_prefix={prefix[:3]}_")).body["data"] == []

    by_id = await op.get(f"/v1/tenants/{made[1]['id']}")
    by_name = await op.get(f"/v1/tenants/{made[1]['name']}")
    assert by_id.body == by_name.body == made[1]
    assert (await op.get("/v1/tenants/nobody-here")).status == 404

    renamed = await op.patch(f"/v1/tenants/{made[1]['id']}",
                             {"name": f"{prefix}.renamed", "metadata": {"plan": "pro"}})
    assert renamed.status == 200
    assert (renamed.body["name"], renamed.body["metadata"]) == (f"{prefix}.renamed",
                                                                 {"plan": "pro"})
    taken = await op.patch(f"/v1/tenants/{made[1]['id']}", {"name": made[0]["name"]})
    assert taken.status == 409

    for method, path, body in (
        ("GET", "/v1/tenants", None), ("POST", "/v1/tenants", {"name": "mine-too"}),
        ("GET", f"/v1/tenants/{api.tenant}", None),
        ("PATCH", f"/v1/tenants/{api.tenant}", {"metadata": {}}),
        ("DELETE", f"/v1/tenants/{api.tenant}", None),
        ("POST", f"/v1/tenants/{api.tenant}/keys", {}),
        ("GET", f"/v1/tenants/{api.tenant}/stats", None),
        ("POST", f"/v1/tenants/{api.tenant}/portal-links", {}),
    ):
        forbidden(await api.call(method, path, json_body=body), "Authorization")


async def test_a_tenant_key_made_through_the_api_acts_for_that_tenant_only(
    op: Api, http: aiohttp.ClientSession, api_server: ApiServer
) -> None:
    tenant = await new_tenant(op)
    reply = await op.post(f"/v1/tenants/{tenant['name']}/keys", {"name": "ci"})
    assert reply.status == 201, reply
    assert reply.body["key"].startswith("dk_") and reply.body["tenant"] == tenant["name"]
    assert reply.body["prefix"] == reply.body["key"][:11]
    key = Api(http, api_server, reply.body["key"], tenant["name"])
    ep = await key.create_endpoint(URL)
    theirs = await op.get("/v1/endpoints", headers=as_tenant(tenant["id"]))
    assert [e["id"] for e in theirs.body["data"]] == [ep["id"]]
    forbidden(await key.get("/v1/endpoints", headers=as_tenant("default")))


async def test_deleting_a_tenant_refuses_while_it_has_endpoints_unless_forced(
    op: Api, http: aiohttp.ClientSession, api_server: ApiServer
) -> None:
    tenant = await new_tenant(op)
    key = (await op.post(f"/v1/tenants/{tenant['id']}/keys")).body["key"]
    ep = await endpoint_for(op, as_tenant(tenant["name"]))
    await op.publish("transaction", {"n": 1}, headers=as_tenant(tenant["name"]))

    refused = await op.delete(f"/v1/tenants/{tenant['name']}")
    assert refused.status == 409 and refused.error["field"] == "force"
    assert (await op.get(f"/v1/endpoints/{ep['id']}", headers=as_tenant(tenant["id"]))).status \
        == 200
    assert (await op.delete(f"/v1/tenants/{tenant['name']}?force=yes")).status == 422

    assert (await op.delete(f"/v1/tenants/{tenant['name']}?force=true")).status == 204
    assert (await op.get(f"/v1/tenants/{tenant['id']}")).status == 404
    left = await _sql(api_server, """SELECT (SELECT count(*) FROM endpoints WHERE tenant_id = $1)
                                          + (SELECT count(*) FROM events WHERE tenant_id = $1)
                                          + (SELECT count(*) FROM api_keys WHERE tenant_id = $1)
                                          AS n""", uuid.UUID(tenant["id"]))
    assert left[0]["n"] == 0
    gone = Api(http, api_server, key, tenant["name"])
    await eventually_401(gone, "/v1/endpoints")

    empty = await new_tenant(op)
    assert (await op.delete(f"/v1/tenants/{empty['id']}")).status == 204


async def eventually_401(api: Api, path: str) -> None:
    """Another worker may remember a credential for up to the key cache's lifetime."""
    for _ in range(60):
        reply = await api.get(path)
        if reply.status == 401:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {reply.status}")


async def test_tenant_stats_count_endpoints_deliveries_and_recent_failures(
    op: Api, api_server: ApiServer
) -> None:
    tenant = await new_tenant(op)
    h = as_tenant(tenant["name"])
    paused = await endpoint_for(op, h)
    await endpoint_for(op, h, event_types=["block"])
    assert (await op.post(f"/v1/endpoints/{paused['id']}/pause", headers=h)).status == 200
    for n in range(2):  # held for the paused endpoint, not attempted
        await op.publish("transaction", {"n": n}, headers=h)
    await _sql(api_server, """INSERT INTO endpoint_failure_buckets (endpoint_id, bucket_start,
                                                                   failures)
                              VALUES ($1, date_trunc('hour', now()), 5),
                                     ($1, now() - interval '30 days', 100)""",
               uuid.UUID(paused["id"]))
    stats = await op.get(f"/v1/tenants/{tenant['name']}/stats")
    assert stats.status == 200, stats
    assert stats.body["endpoints"] == {"active": 1, "paused": 1, "disabled": 0}
    assert stats.body["deliveries"] == {"Pending": 2, "Retrying": 0, "Success": 0, "Failed": 0}
    assert stats.body["failures_in_window"] == 5
    assert stats.body["tenant_id"] == tenant["id"]


# --- batch publish for many tenants -----------------------------------------------


async def test_one_batch_publishes_for_1000_tenants_each_reaching_only_its_endpoint(
    op: Api, api: Api, api_server: ApiServer, receiver: Receiver
) -> None:
    run = uuid.uuid4().hex[:6]
    conn = await asyncpg.connect(api_server.dsn)
    try:
        rows = await conn.fetch(
            """INSERT INTO tenants (name) SELECT $1 || '-' || i FROM generate_series(0, 999) i
               RETURNING id, name""", f"bulk-{run}")
        tenants = {r["name"]: r["id"] for r in rows}
        endpoint_of = {}
        async with conn.transaction():
            for i in range(1000):
                name = f"bulk-{run}-{i}"
                endpoint_of[name], _ = await make_endpoint(conn, BOX, tenants[name],
                                                           f"{receiver.url}/{i}")
    finally:
        await conn.close()

    events = [{"type": "transaction", "data": {"i": i},
               "tenant": f"bulk-{run}-{i}" if i % 2 else str(tenants[f"bulk-{run}-{i}"])}
              for i in range(1000)]
    reply = await op.post("/v1/events/batch", {"events": events})
    assert reply.status == 202, reply
    published = reply.body["data"]
    for i, p in enumerate(published):
        assert [d["endpoint_id"] for d in p["deliveries"]] == [str(endpoint_of[f"bulk-{run}-{i}"])]

    arrived = await receiver.wait_for(1000, timeout=60)
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 1000
    for req in arrived:
        body = json.loads(req.body)
        assert req.path == f"/hook/{body['data']['i']}"
        assert body["event_id"] == published[body["data"]["i"]]["id"]

    # One transaction: one unknown tenant, or one unknown type, and nothing is stored.
    before = (await _sql(api_server, "SELECT count(*) AS n FROM events"))[0]["n"]
    bad_tenant = await op.post("/v1/events/batch",
                               {"events": [*events[:5], {**events[5], "tenant": "nobody-x"}]})
    assert bad_tenant.status == 422 and bad_tenant.error["field"] == "events[5].tenant"
    bad_type = await op.post("/v1/events/batch",
                             {"events": [*events[:5], {**events[5], "type": "no.such.type"}]})
    assert bad_type.status == 422 and bad_type.error["field"] == "events[5].type"
    assert (await _sql(api_server, "SELECT count(*) AS n FROM events"))[0]["n"] == before

    # A tenant key may name only itself.
    mine = await api.post("/v1/events/batch", {"events": [
        {"type": "transaction", "data": {}, "tenant": api.tenant}]})
    assert mine.status == 202
    forbidden(await api.post("/v1/events/batch", {"events": [
        {"type": "transaction", "data": {}, "tenant": f"bulk-{run}-1"}]}), "events[0].tenant")
    assert (await api.post("/v1/events", {"type": "transaction", "data": {},
                                         "tenant": api.tenant})).status == 422


async def test_idempotency_keys_are_per_tenant_in_a_multi_tenant_batch(op: Api) -> None:
    a, b = await new_tenant(op), await new_tenant(op)
    batch = {"events": [
        {"type": "transaction", "data": {}, "idempotency_key": "k1", "tenant": a["name"]},
        {"type": "transaction", "data": {}, "idempotency_key": "k1", "tenant": b["name"]},
        {"type": "transaction", "data": {}, "idempotency_key": "k1", "tenant": a["name"]},
    ]}
    first = (await op.post("/v1/events/batch", batch)).body["data"]
    assert first[0]["id"] != first[1]["id"]
    assert first[2]["id"] == first[0]["id"] and first[2]["duplicate"] is True
    again = (await op.post("/v1/events/batch", batch)).body["data"]
    assert [e["id"] for e in again] == [e["id"] for e in first]
    assert all(e["duplicate"] for e in again)
    seen_b = await op.get(f"/v1/events/{first[1]['id']}", headers=as_tenant(b["id"]))
    assert seen_b.status == 200
    assert (await op.get(f"/v1/events/{first[1]['id']}", headers=as_tenant(a["id"]))).status \
        == 404


# --- portal links -------------------------------------------------------------------


async def test_portal_links_grant_exactly_their_tenant_and_read_only_ones_cannot_write(
    op: Api, api: Api, other: Api, http: aiohttp.ClientSession, api_server: ApiServer
) -> None:
    mine = await api.create_endpoint(URL)
    await other.create_endpoint(URL)
    reply = await op.post(f"/v1/tenants/{api.tenant}/portal-links",
                          {"expires_in": 600, "read_only": True})
    assert reply.status == 201, reply
    link = reply.body
    assert link["url"] == f"{api_server.url}/portal/#token={link['token']}"
    assert link["read_only"] is True
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert now_ms + 590_000 < link["expires_timestamp"] <= now_ms + 601_000

    portal = Api(http, api_server, link["token"], api.tenant)
    listed = await portal.get("/v1/endpoints")
    assert listed.status == 200
    assert [e["id"] for e in listed.body["data"]] == [mine["id"]]
    assert (await portal.get(f"/v1/endpoints/{mine['id']}")).status == 200
    for method, path in (("POST", "/v1/endpoints"), ("PATCH", f"/v1/endpoints/{mine['id']}"),
                         ("DELETE", f"/v1/endpoints/{mine['id']}"),
                         ("POST", f"/v1/endpoints/{mine['id']}/pause"),
                         ("POST", "/v1/events"), ("POST", "/v1/portal-links")):
        forbidden(await portal.call(method, path, json_body={"url": URL}), "Authorization")
    assert (await api.get(f"/v1/endpoints/{mine['id']}")).body["state"] == "active"
    forbidden(await portal.get("/v1/tenants"))
    forbidden(await portal.get("/v1/endpoints", headers=as_tenant(other.tenant)))

    # A full link, made by the tenant's own key, may write, but not make links.
    made = await api.post("/v1/portal-links", {})
    assert made.status == 201 and made.body["read_only"] is False
    full = Api(http, api_server, made.body["token"], api.tenant)
    created = await full.post("/v1/endpoints", {"url": URL})
    assert created.status == 201
    assert created.body["id"] in {e["id"] for e in (await api.get("/v1/endpoints")).body["data"]}
    forbidden(await full.post("/v1/portal-links", {}))
    # An operator acting for a tenant may make one too.
    by_header = await op.post("/v1/portal-links", {}, headers=as_tenant(api.tenant))
    assert by_header.status == 201
    assert by_header.body["tenant_id"] == made.body["tenant_id"]

    for body in ({"expires_in": 59}, {"expires_in": 30 * 86400 + 1}, {"read_only": "yes"},
                 {"other": 1}):
        reply = await api.post("/v1/portal-links", body)
        assert reply.status == 422, body


async def test_tampered_expired_and_orphaned_portal_tokens_get_401(
    op: Api, api: Api, http: aiohttp.ClientSession, api_server: ApiServer
) -> None:
    token = (await api.post("/v1/portal-links", {"expires_in": 600})).body["token"]
    assert (await Api(http, api_server, token, "").get("/v1/endpoints")).status == 200
    body, mac = token.split(".")
    flipped = "A" if body[10] != "A" else "B"
    for bad in (body[:10] + flipped + body[11:] + "." + mac,  # another tenant or expiry
                body + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"),
                body, token + "x", "dpt_", "dpt_.", body + ".!!"):
        reply = await Api(http, api_server, bad, "").get("/v1/endpoints")
        assert reply.status == 401, bad
        assert reply.error["code"] == "unauthorized"

    [tenant_id] = [r["id"] for r in await _sql(api_server, "SELECT id FROM tenants WHERE name = $1",
                                                api.tenant)]
    key = BOX.derive_key(KEY_PURPOSE)
    now = datetime.now(UTC)
    expired = sign_portal_token(key, tenant_id, now - timedelta(seconds=1), False)
    assert (await Api(http, api_server, expired, "").get("/v1/endpoints")).status == 401
    valid = sign_portal_token(key, tenant_id, now + timedelta(seconds=60), False)
    assert (await Api(http, api_server, valid, "").get("/v1/endpoints")).status == 200
    other_key = sign_portal_token(SecretBox(b"x" * 32).derive_key(KEY_PURPOSE), tenant_id,
                                  now + timedelta(seconds=60), False)
    assert (await Api(http, api_server, other_key, "").get("/v1/endpoints")).status == 401

    # The tenant is deleted: its links stop working.
    tenant = await new_tenant(op)
    link = (await op.post(f"/v1/tenants/{tenant['id']}/portal-links", {})).body["token"]
    assert (await Api(http, api_server, link, "").get("/v1/endpoints")).status == 200
    assert (await op.delete(f"/v1/tenants/{tenant['id']}")).status == 204
    await eventually_401(Api(http, api_server, link, ""), "/v1/endpoints")


async def test_a_tenant_deleted_behind_a_remembered_name_is_404_not_a_server_error(
    op: Api, api_server: ApiServer
) -> None:
    """Each daemon remembers tenant names (and keys) for a moment; a tenant deleted
    meanwhile (here straight in the database, so no cache is cleared) is a 404 for
    an operator, never a 500."""
    for _ in range(3):
        tenant = await new_tenant(op)
        h = as_tenant(tenant["name"])
        for _ in range(4):  # both workers remember the name
            assert (await op.post("/v1/events", {"type": "transaction", "data": {}},
                                  headers=h)).status == 202
        await _sql(api_server, "DELETE FROM tenants WHERE id = $1", uuid.UUID(tenant["id"]))
        for _ in range(4):
            reply = await op.post("/v1/events", {"type": "transaction", "data": {}}, headers=h)
            assert reply.status == 404, reply
            assert reply.error["field"] == "Dispatcher-Tenant"


async def test_the_console_signs_in_with_a_portal_token_or_an_operator_key(
    op: Api, api: Api, other: Api, api_server: ApiServer
) -> None:
    """The console checks credentials through the API's own function: a portal
    token shows its tenant (read-only if the link is), an operator key `default`."""
    mine = await api.create_endpoint("https://mine.example.com/in")
    theirs = await other.create_endpoint("https://theirs.example.com/in")
    link = (await api.post("/v1/portal-links", {"read_only": True})).body
    user = ConsoleUser(api_server.url)
    try:
        # The link's page (a browser keeps the #token across the redirect) holds the
        # sign-in form that console.js fills from the fragment and sends.
        landing = await user.get(link["url"].removeprefix(api_server.url))
        assert landing.status == 200 and landing.url.endswith("/console/portal"), landing
        assert "data-portal" in landing.text
        assert "Content-Security-Policy" in landing.headers
        page = await user.post("/console/login", {"key": link["token"], "csrf": landing.csrf})
        assert page.status == 200 and page.url.endswith("/console/endpoints"), page
        assert mine["id"] in page.text and theirs["id"] not in page.text
        assert "read-only" in page.text and 'method="post"' not in page.text
    finally:
        await user.close()
    default_ep = await op.create_endpoint("https://default.example.com/in")
    user = ConsoleUser(api_server.url)
    try:
        page = await user.sign_in(op.key)
        assert page.status == 200, page
        assert default_ep["id"] in page.text and mine["id"] not in page.text
    finally:
        await user.close()
    tampered = ConsoleUser(api_server.url)
    try:
        end = "AA" if link["token"][-2:] != "AA" else "BB"
        page = await tampered.sign_in(link["token"][:-2] + end)
        assert page.status == 401
    finally:
        await tampered.close()


async def test_a_multi_tenant_batch_with_ordering_keys_reaches_each_tenants_endpoints(
    op: Api,
) -> None:
    a, b = await new_tenant(op), await new_tenant(op)
    ep_a = await endpoint_for(op, as_tenant(a["name"]))
    ep_b = await endpoint_for(op, as_tenant(b["name"]))
    reply = await op.post("/v1/events/batch", {"events": [
        {"type": "transaction", "data": {}, "ordering_key": "k", "tenant": a["name"]},
        {"type": "transaction", "data": {}, "ordering_key": "k", "tenant": b["id"]},
    ]})
    assert reply.status == 202, reply
    assert [[d["endpoint_id"] for d in e["deliveries"]] for e in reply.body["data"]] == [
        [ep_a["id"]], [ep_b["id"]]]


# --- a tenant deleted while a call runs ------------------------------------------------


async def _while_deleting(server: ApiServer, name: str, call: Any) -> Reply:
    """Run `call` while another connection deletes tenant `name`: the delete holds the
    tenant's row until the call's insert waits on it, then commits, so the insert meets
    a tenant that no longer exists (the race a concurrent force-delete wins)."""
    conn = await asyncpg.connect(server.dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("DELETE FROM tenants WHERE name = $1", name)
        task = asyncio.create_task(call())
        for _ in range(200):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()")
            if waiting or task.done():
                break
            await asyncio.sleep(0.02)
        await tx.commit()
        reply: Reply = await task
        return reply
    finally:
        await conn.close()


@pytest.mark.parametrize("call", ["key", "batch", "publish", "endpoint"])
async def test_a_tenant_deleted_while_a_call_runs_answers_not_found_never_500(
    op: Api, api_server: ApiServer, call: str,
) -> None:
    name = f"doomed-{call}-{uuid.uuid4().hex[:6]}"
    assert (await op.post("/v1/tenants", {"name": name})).status == 201
    event = {"type": "transaction", "data": {}}
    calls = {
        "key": lambda: op.post(f"/v1/tenants/{name}/keys", {}),
        "batch": lambda: op.post("/v1/events/batch", {"events": [{**event, "tenant": name}]}),
        "publish": lambda: op.post("/v1/events", event, headers=as_tenant(name)),
        "endpoint": lambda: op.post("/v1/endpoints", {"url": URL}, headers=as_tenant(name)),
    }
    if call in ("publish", "endpoint"):  # this process remembers the tenant
        assert (await op.get("/v1/endpoints", headers=as_tenant(name))).status == 200
    reply = await _while_deleting(api_server, name, calls[call])
    assert reply.status == 404, reply
    assert reply.error["code"] == "not_found" and "tenant" in reply.error["message"]
    assert (await _sql(api_server, "SELECT count(*) AS n FROM tenants WHERE name = $1",
                       name))[0]["n"] == 0


async def test_default_cannot_be_deleted_or_renamed_while_operators_fall_back_to_it(
    op: Api,
) -> None:
    for ref in ("default", str((await op.get("/v1/tenants/default")).body["id"])):
        refused = await op.delete(f"/v1/tenants/{ref}?force=true")
        assert refused.status == 409 and refused.error["field"] == "tenant", refused
        assert "operator keys act without Dispatcher-Tenant" in refused.error["message"]
    renamed = await op.patch("/v1/tenants/default", {"name": "not-default"})
    assert renamed.status == 409 and renamed.error["field"] == "name", renamed
    assert (await op.patch("/v1/tenants/default", {"metadata": {"a": 1}})).status == 200
    assert (await op.get("/v1/tenants/default")).body["name"] == "default"
    assert (await op.get("/v1/endpoints")).status == 200  # no Dispatcher-Tenant: default


# Every route that changes something, with a body it would accept from a full key.
WRITE_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/endpoints"): {"url": URL},
    ("PATCH", "/v1/endpoints/{endpoint_id}"): {"description": "changed"},
    ("POST", "/v1/events"): {"type": "transaction", "data": {}},
    ("POST", "/v1/events/batch"): {"events": [{"type": "transaction", "data": {}}]},
    ("POST", "/v1/event-types"): {"name": "ro.probe"},
    ("POST", "/v1/callbacks"): {"type": "withdrawal.approve", "data": {"amount": "1"}},
    ("POST", "/v1/tenants"): {"name": "ro-probe"},
    ("PATCH", "/v1/tenants/{tenant}"): {"metadata": {"changed": True}},
}


async def _snapshot(server: ApiServer) -> list[Any]:
    counts = await _sql(server, """SELECT (SELECT count(*) FROM endpoints) AS e,
        (SELECT count(*) FROM events) AS ev, (SELECT count(*) FROM deliveries) AS d,
        (SELECT count(*) FROM event_types) AS t, (SELECT count(*) FROM callbacks) AS c,
        (SELECT count(*) FROM api_keys) AS k, (SELECT count(*) FROM tenants) AS tn""")
    # What a write through the API changes (the engine keeps its own columns current).
    endpoints = await _sql(server, """SELECT id, url, description, event_types, state,
        secret_enc, previous_secret_enc, metadata::text, retry_policy FROM endpoints
        ORDER BY id""")
    tenants = await _sql(server, "SELECT * FROM tenants ORDER BY id")
    return [dict(r) for r in [*counts, *endpoints, *tenants]]


async def test_a_read_only_portal_token_is_refused_by_every_route_that_writes(
    op: Api, api: Api, http: aiohttp.ClientSession, api_server: ApiServer,
) -> None:
    """Read-only is decided by what an operation does, not by the HTTP method: every
    route of the API that is not a GET, the websocket of `listen` (a GET that creates
    an endpoint) and the secret (a GET that reveals it) answer 403, and nothing in the
    database changes."""
    from dispatcher.api.routes import API_ROUTES

    endpoint = await api.create_endpoint(URL)
    await api.create_endpoint(URL, kind="callback")
    event = await api.publish("transaction", {})
    assert (await api.post("/v1/event-types", {"name": "ro.mine"})).status == 201
    made = await api.post("/v1/callbacks", WRITE_BODIES[("POST", "/v1/callbacks")])
    assert made.status == 202, made
    assert (await api.post(f"/v1/endpoints/{endpoint['id']}/pause", {})).status == 200
    link = await op.post(f"/v1/tenants/{api.tenant}/portal-links", {"read_only": True})
    portal = Api(http, api_server, link.body["token"], api.tenant)
    params = {"endpoint_id": endpoint["id"], "event_id": event["id"], "tenant": api.tenant,
              "callback_id": made.body["id"], "name": "ro.mine", "key_id": str(uuid.uuid4())}
    before = await _snapshot(api_server)

    writes = [r for r in API_ROUTES if r.method != "GET"]
    assert len(writes) >= 20  # the route table is what is tested
    for route in writes:
        path = route.path.format(**{k: params[k] for k in params if "{" + k + "}" in route.path})
        body = WRITE_BODIES.get((route.method, route.path), {})
        reply = await portal.call(route.method, path, json_body=body)
        assert reply.status == 403, (route.method, route.path, reply)
        assert reply.error["field"] == "Authorization", (route.method, route.path)
    secret = await portal.get(f"/v1/endpoints/{endpoint['id']}/secret")
    assert secret.status == 403, secret
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with http.ws_connect(api_server.url + "/v1/listen?forward_to=http://127.0.0.1:9",
                                   headers={"Authorization": f"Bearer {portal.key}"}):
            pass
    assert refused.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # take over: also a write
        async with http.ws_connect(
                api_server.url + f"/v1/listen?endpoint_id={endpoint['id']}",
                headers={"Authorization": f"Bearer {portal.key}"}):
            pass
    assert refused.value.status == 403
    assert await _snapshot(api_server) == before
    # What it may do, it still does.
    assert (await portal.get(f"/v1/endpoints/{endpoint['id']}")).status == 200
    assert (await portal.get(f"/v1/events/{event['id']}")).status == 200
