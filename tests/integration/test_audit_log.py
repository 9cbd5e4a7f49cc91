"""The audit log through real HTTP against the daemon, the console and the CLI: every
audited change writes exactly one entry naming its actor and address, in the
change's transaction (a refused change writes none); tenants see only their own
entries; no secret reaches an entry; the table refuses changes; `dispatcher audit
verify` names the first entry that was tampered with."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer
from tests.support.console import ConsoleUser
from tests.support.receiver import Receiver, Reply

api_server, http, api, other, op = (support.api_server, support.http, support.api,
                                    support.other, support.op)

URL = "https://hooks.example.com/in"


async def key_id(server: ApiServer, key: str) -> str:
    conn = await asyncpg.connect(server.dsn)
    try:
        found = await conn.fetchval("SELECT id::text FROM api_keys WHERE prefix = $1", key[:11])
    finally:
        await conn.close()
    assert found
    return str(found)


async def entries(api: Api, **params: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in {"limit": "100", **params}.items())
    reply = await api.get(f"/v1/audit-log?{query}")
    assert reply.status == 200, reply
    data: list[dict[str, Any]] = reply.body["data"]
    return data


async def rows_text(server: ApiServer) -> str:
    conn = await asyncpg.connect(server.dsn)
    try:
        rows = await conn.fetch("SELECT * FROM audit_log")
    finally:
        await conn.close()
    return json.dumps([dict(r) for r in rows], default=str)


async def test_each_endpoint_change_is_one_entry_with_its_actor_and_old_and_new_values(
    api: Api, api_server: ApiServer
) -> None:
    me = await key_id(api_server, api.key)
    ep = await api.create_endpoint(URL, description="orders")
    path = f"/v1/endpoints/{ep['id']}"
    assert (await api.patch(path, {"description": "payments", "max_in_flight": 3})).status == 200
    assert (await api.post(f"{path}/rotate-secret")).status == 200
    assert (await api.get(f"{path}/secret")).status == 200
    assert (await api.post(f"{path}/pause")).status == 200
    assert (await api.post(f"{path}/pause")).status == 200  # already paused: no change
    assert (await api.post(f"{path}/resume")).status == 200
    assert (await api.post(f"{path}/retry", {})).status in (200, 202)
    assert (await api.delete(path)).status == 204

    found = await entries(api)
    assert [e["action"] for e in reversed(found)] == [
        "endpoint.create", "endpoint.update", "endpoint.secret_rotate",
        "endpoint.secret_reveal", "endpoint.pause", "endpoint.resume", "endpoint.replay",
        "endpoint.delete"]
    for e in found:
        assert e["actor"] == {"type": "tenant_key", "id": me, "via": "api", "key_id": me,
                              "session_id": None, "address": "127.0.0.1"}
        assert e["target"] == {"type": "endpoint", "id": ep["id"]}
    by_action = {e["action"]: e["changes"] for e in found}
    assert by_action["endpoint.update"] == {
        "description": {"old": "orders", "new": "payments"},
        "max_in_flight": {"old": 10, "new": 3}}
    assert by_action["endpoint.create"]["url"] == {"new": URL}
    assert by_action["endpoint.create"]["secret"] == "created"
    assert by_action["endpoint.secret_rotate"]["secret"] == "rotated"
    assert by_action["endpoint.secret_reveal"] == {"secret": "revealed"}
    assert by_action["endpoint.pause"]["state"] == {"old": "active", "new": "paused"}
    assert by_action["endpoint.delete"]["url"] == {"old": URL}
    seqs = [e["seq"] for e in found]
    assert seqs == sorted(seqs, reverse=True)


async def test_a_refused_change_writes_no_entry(api: Api) -> None:
    ep = await api.create_endpoint(URL)
    before = await entries(api)
    bad = await api.patch(f"/v1/endpoints/{ep['id']}", {"max_in_flight": 0})
    assert bad.status == 422
    unknown = await api.post("/v1/event-types", {"name": "x.y", "sample": 1e400})
    assert unknown.status in (400, 422)
    missing = await api.post("/v1/endpoints/00000000-0000-0000-0000-000000000000/pause")
    assert missing.status == 404
    assert await entries(api) == before


async def test_a_tenant_sees_only_its_own_entries(api: Api, other: Api, op: Api) -> None:
    mine = await api.create_endpoint(URL)
    await other.create_endpoint(URL)
    assert (await api.post("/v1/event-types", {"name": "audit.check"})).status == 201
    seen = await entries(api)
    assert {e["tenant_id"] for e in seen} == {seen[0]["tenant_id"]}
    assert {e["target"]["id"] for e in seen} == {mine["id"], "audit.check"}
    theirs = await entries(other, tenant=api.tenant)  # the filter cannot widen a tenant key
    assert all(e["target"]["id"] != mine["id"] for e in theirs)
    # An operator sees both, and narrows to one tenant by name.
    by_op = await entries(op, tenant=api.tenant)
    assert {e["target"]["id"] for e in by_op} == {mine["id"], "audit.check"}


async def test_no_secret_reaches_the_audit_log(api: Api, op: Api, api_server: ApiServer
                                               ) -> None:
    ep = await api.create_endpoint(
        URL, headers={"X-Receiver-Key": "hdr-value-3f9a"},
        auth={"type": "basic", "username": "hooks", "password": "pw-value-71c2"})
    rotated = (await api.post(f"/v1/endpoints/{ep['id']}/rotate-secret")).body
    revealed = (await api.get(f"/v1/endpoints/{ep['id']}/secret")).body
    await api.patch(f"/v1/endpoints/{ep['id']}", {
        "auth": {"type": "bearer", "token": "tok-value-a81e"},
        "headers": {"X-Receiver-Key": "hdr-value-new-55d0"}})
    link = (await api.post("/v1/portal-links", {})).body
    made = (await op.post(f"/v1/tenants/{api.tenant}/keys", {"name": "ci"})).body
    text = await rows_text(api_server)
    for secret in (ep["secret"], rotated["secret"], revealed["secret"], "hdr-value-3f9a",
                   "pw-value-71c2", "tok-value-a81e", "hdr-value-new-55d0", link["token"],
                   made["key"], api.key, op.key):
        assert secret not in text
    update = next(e for e in await entries(api, action="endpoint.update"))
    assert update["changes"]["auth"] == {"old": "basic", "new": "bearer"}
    assert update["changes"]["headers"] == {"old": ["X-Receiver-Key"],
                                            "new": ["X-Receiver-Key"]}


async def test_operator_changes_are_audited_and_outlive_a_deleted_tenant(op: Api) -> None:
    name = f"audit-{os.urandom(4).hex()}"
    created = await op.post("/v1/tenants", {"name": name})
    assert created.status == 201
    tenant_id = created.body["id"]
    assert (await op.patch(f"/v1/tenants/{name}", {"metadata": {"plan": "pro"}})).status == 200
    assert (await op.post(f"/v1/tenants/{name}/keys", {"name": "ci"})).status == 201
    assert (await op.post(f"/v1/tenants/{name}/portal-links", {})).status == 201
    assert (await op.delete(f"/v1/tenants/{name}")).status == 204
    found = await entries(op, tenant=tenant_id)  # by id: the tenant is gone
    assert [e["action"] for e in reversed(found)] == [
        "tenant.create", "tenant.update", "key.create", "portal_link.create", "tenant.delete"]
    assert found[-1]["changes"]["name"] == {"new": name}
    assert found[-2]["changes"]["metadata"] == {"old": {}, "new": {"plan": "pro"}}
    assert all(e["actor"]["type"] == "operator_key" for e in found)
    only_keys = await entries(op, tenant=tenant_id, action="key.")
    assert [e["action"] for e in only_keys] == ["key.create"]


async def test_bad_filters_are_refused_with_the_field(op: Api) -> None:
    for query, field in (("since=x", "since"), ("cursor=nope", "cursor"),
                         ("limit=0", "limit"), ("tenant=no-such-tenant", "tenant"),
                         ("since=2000&until=1000", "since"),
                         ("action=" + "a" * 201, "action")):
        reply = await op.get(f"/v1/audit-log?{query}")
        assert reply.status in (404, 422), (query, reply)
        assert reply.error["field"] == field, query


async def test_cursor_pages_walk_every_entry_once(api: Api) -> None:
    for i in range(5):
        await api.post("/v1/event-types", {"name": f"page.t{i}"})
    seen: list[int] = []
    cursor = ""
    while True:
        reply = await api.get(f"/v1/audit-log?limit=2{cursor}")
        seen += [e["seq"] for e in reply.body["data"]]
        if not reply.body["next_cursor"]:
            break
        cursor = f"&cursor={reply.body['next_cursor']}"
    assert len(seen) == 5 and len(set(seen)) == 5


async def test_a_410_disable_is_an_entry_of_the_system(
    api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(410))
    ep = await api.create_endpoint(receiver.url)
    await api.publish("payment.order.updated", {"n": 1})
    for _ in range(200):
        found = await entries(api, action="endpoint.disable")
        if found:
            break
        await asyncio.sleep(0.05)
    assert found, "no endpoint.disable entry"
    assert found[0]["actor"] == {"type": "system", "id": "system:engine", "via": "engine",
                                 "key_id": None, "session_id": None, "address": None}
    assert found[0]["target"]["id"] == ep["id"]
    assert "410" in found[0]["changes"]["state_reason"]["new"]


# --- the console --------------------------------------------------------------------


@pytest.fixture
async def user(api_server: ApiServer) -> AsyncIterator[ConsoleUser]:
    u = ConsoleUser(api_server.url)
    yield u
    await u.close()


async def test_console_changes_name_the_session_and_the_page_lists_them(
    user: ConsoleUser, api: Api, api_server: ApiServer
) -> None:
    assert (await user.sign_in(api.key)).status == 200
    page = await user.submit("/console/endpoints", "/console/endpoints", {
        "url": URL, "description": "from the console", "event_types": "",
        "signing_scheme": "standard-v1", "retry_policy": "standard", "timeout_seconds": "",
        "max_in_flight": "5"})
    assert page.status == 200, page.text
    found = await entries(api)
    assert [e["action"] for e in reversed(found)] == ["session.start", "endpoint.create"]
    start, create = found[1], found[0]
    assert create["actor"]["via"] == "console"
    assert create["actor"]["session_id"] == start["target"]["id"]
    assert create["actor"]["id"] == await key_id(api_server, api.key)
    assert create["actor"]["address"] == "127.0.0.1"
    listing = await user.get("/console/audit")
    assert listing.status == 200
    assert "endpoint.create" in listing.text and "session.start" in listing.text
    filtered = await user.get("/console/audit?action=session.")
    assert "endpoint.create" not in filtered.text and "session.start" in filtered.text
    await user.get("/console/logout")
    assert (await entries(api))[0]["action"] == "session.end"


# --- the CLI and the hash chain ------------------------------------------------------


def run_cli(dsn: str, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    full.update({"DISPATCHER_DATABASE_URL": dsn, "DISPATCHER_DATA_DIR": str(tmp / "data"),
                 "DISPATCHER_LOG__LEVEL": "warning", **env})
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=full,
                          capture_output=True, text=True, timeout=60)


async def cli(dsn: str, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, dsn, tmp, *args, **env)


async def test_cli_changes_are_local_entries_and_audit_list_reads_them(
    api_server: ApiServer, api: Api, tmp_path: Path
) -> None:
    made = await cli(api_server.dsn, tmp_path, "keys", "create", "--tenant", api.tenant,
                     "--name", "from-cli")
    assert made.returncode == 0, made.stderr
    found = await entries(api, action="key.create")
    assert found[0]["actor"]["type"] == "local"
    assert found[0]["actor"]["id"].startswith("cli:")
    assert found[0]["actor"]["via"] == "cli"
    listed = await cli(api_server.dsn, tmp_path, "audit", "list", "--action", "key.",
                       "--json", DISPATCHER_URL=api_server.url,
                       DISPATCHER_API_KEY=api.key)
    assert listed.returncode == 0, listed.stderr
    assert [e["action"] for e in json.loads(listed.stdout)["data"]] == ["key.create"]
    bad = await cli(api_server.dsn, tmp_path, "audit", "list", "--since", "x",
                    DISPATCHER_URL=api_server.url, DISPATCHER_API_KEY=api.key)
    assert bad.returncode != 0 and "--since" in bad.stderr


async def test_the_table_is_append_only(api: Api, api_server: ApiServer) -> None:
    await api.create_endpoint(URL)
    conn = await asyncpg.connect(api_server.dsn)
    try:
        for sql in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log",
                    "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def tamper_db(pg: Any) -> AsyncIterator[str]:
    """A database of its own: tampering must not break the module daemon's chain."""
    dsn = await pg.clone()
    yield dsn
    await pg.drop(dsn)


async def test_verify_names_the_first_tampered_entry(tamper_db: str, tmp_path: Path) -> None:
    for i in range(4):
        made = await cli(tamper_db, tmp_path, "keys", "create", "--tenant", f"chain-{i}")
        assert made.returncode == 0, made.stderr
    ok = await cli(tamper_db, tmp_path, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "8 entries verified" in ok.stdout  # each: tenant.create and key.create

    conn = await asyncpg.connect(tamper_db)
    try:
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
        await conn.execute(
            """UPDATE audit_log SET changes = '{"name":{"new":"forged"}}' WHERE seq = 5""")
        broken = await cli(tamper_db, tmp_path, "audit", "verify", "--json")
        assert broken.returncode == 1
        verdict = json.loads(broken.stdout)
        assert verdict["ok"] is False and verdict["broken_seq"] == 5
        assert "changed" in verdict["reason"]
        # A row removed from the middle is named too.
        await conn.execute("DELETE FROM audit_log WHERE seq >= 5 AND seq <= 6")
        gap = json.loads((await cli(tamper_db, tmp_path, "audit", "verify", "--json")).stdout)
        assert gap["broken_seq"] == 7 and "missing" in gap["reason"]
        # So is the oldest entry removed without a retention anchor.
        await conn.execute("DELETE FROM audit_log WHERE seq >= 5")
        await conn.execute("DELETE FROM audit_log WHERE seq = 1")
        start = json.loads((await cli(tamper_db, tmp_path, "audit", "verify", "--json")).stdout)
        assert start["ok"] is False and start["broken_seq"] == 2
    finally:
        await conn.close()
    human = await cli(tamper_db, tmp_path, "audit", "verify")
    assert human.returncode == 1 and "broken at seq 2" in human.stderr
