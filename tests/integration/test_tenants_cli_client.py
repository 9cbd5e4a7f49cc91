"""Tenants through `dispatcher.client` and `dispatcher tenants ...` with an operator
key against a real daemon, and `tenant=` / `--tenant` acting for exactly that
tenant."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from dispatcher.client import ApiError, Client, SyncClient
from dispatcher.web.keycache import AUTH_CACHE_SECONDS
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer
from tests.integration.test_cli_api import failed, ok, ok_json, run_cli
from tests.support.receiver import Receiver

api_server, http, api, op = support.api_server, support.http, support.api, support.op


@pytest.fixture
def operator_key(op: Api) -> str:
    return op.key


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_client_manages_tenants_and_acts_for_one(
    api_server: ApiServer, operator_key: str, api: Api, receiver: Receiver
) -> None:
    name, other = unique("acme"), unique("globex")
    async with Client(api_server.url, operator_key) as op:
        tenant = await op.create_tenant(name, {"plan": "pro"})
        assert (tenant.name, tenant.metadata) == (name, {"plan": "pro"})
        await op.create_tenant(other)
        assert (await op.get_tenant(tenant.id)) == tenant  # by id or by name
        assert [t.name for t in (await op.list_tenants(name_prefix=name)).data] == [name]
        key = await op.create_tenant_key(name, "billing")
        assert (key.tenant, key.tenant_id, key.name) == (name, tenant.id, "billing")

    async with Client(api_server.url, operator_key, tenant=name) as for_acme:
        ep = await for_acme.create_endpoint(receiver.url)
        await for_acme.publish("transaction", {"n": 1})
    await receiver.wait_for(1)
    async with Client(api_server.url, key.key) as own:  # the tenant's own key sees it
        assert [e.id for e in (await own.list_endpoints()).data] == [ep.id]
        with pytest.raises(ApiError) as caught:
            await own.list_tenants()  # the tenants API is for operator keys
        assert caught.value.status == 403
    async with Client(api_server.url, operator_key, tenant=other) as for_other:
        assert (await for_other.list_endpoints()).data == []
        with pytest.raises(ApiError) as caught:
            await for_other.get_endpoint(ep.id)
        assert caught.value.status == 404
    assert [e.id for e in (await api_client_endpoints(api))] == []  # nor another tenant

    def sync_part() -> None:
        with SyncClient(api_server.url, operator_key) as op:
            stats = op.tenant_stats(name)
            assert stats.tenant_id == tenant.id and stats.endpoints["active"] == 1
            renamed = op.update_tenant(other, metadata={"plan": "free"})
            assert renamed.metadata == {"plan": "free"}
            with pytest.raises(ApiError) as caught:
                op.delete_tenant(name)  # it has endpoints
            assert caught.value.status == 409
            op.delete_tenant(name, force=True)
            op.delete_tenant(other)
            with pytest.raises(ApiError) as caught:
                op.get_tenant(name)
            assert (caught.value.status, caught.value.field) == (404, "tenant")

    await asyncio.to_thread(sync_part)


async def api_client_endpoints(api: Api) -> list[Any]:
    async with Client(api.server.url, api.key) as c:
        return (await c.list_endpoints()).data


async def test_tenant_commands_and_tenant_option(
    api_server: ApiServer, operator_key: str, receiver: Receiver
) -> None:
    async def cli(*args: str, key: str = operator_key) -> Any:
        env = {"DISPATCHER_URL": api_server.url, "DISPATCHER_API_KEY": key}
        return await asyncio.to_thread(run_cli, args, env)

    name, other = unique("acme"), unique("acme")
    added = ok_json(await cli("tenants", "add", name, "--metadata", '{"plan": "pro"}',
                              "--json"))
    assert (added["name"], added["metadata"]) == (name, {"plan": "pro"})
    assert len(ok(await cli("tenants", "add", other, "--quiet")).strip()) == 36
    listed = ok_json(await cli("tenants", "list", "--prefix", name, "--json"))
    assert [t["name"] for t in listed["data"]] == [name]
    lines = ok(await cli("tenants", "list", "--prefix", name[:5])).splitlines()
    assert lines[0].split() == ["NAME", "ID", "CREATED", "(UTC)"]
    assert {name, other} <= {line.split()[0] for line in lines[1:]}

    ep = ok_json(await cli("endpoints", "add", receiver.url, "--tenant", name, "--json"))
    key = ok(await cli("tenants", "key", name, "--name", "ci", "--quiet")).strip()
    assert key.startswith("dk_")
    mine = ok_json(await cli("endpoints", "list", "--json", key=key))
    assert [e["id"] for e in mine["data"]] == [ep["id"]]  # made for that tenant
    theirs = ok_json(await cli("endpoints", "list", "--tenant", other, "--json"))
    assert theirs["data"] == []
    shown = ok_json(await cli("tenants", "show", name, "--json"))
    assert shown["id"] == added["id"] and shown["stats"]["endpoints"]["active"] == 1
    human = ok(await cli("tenants", "show", name))
    assert "metadata.plan" in human and "1 active" in human

    results = await asyncio.gather(
        cli("tenants", "add", "Not A Name"),
        cli("tenants", "add", name),  # exists
        cli("tenants", "show", unique("nobody")),
        cli("tenants", "delete", name),  # has endpoints
        cli("tenants", "list", key=key),  # a tenant key
        cli("tenants", "add", unique("x"), "--metadata", "{bad"))
    for result, status in zip(results, [2, 2, 3, 2, 4, 2], strict=True):
        failed(result, status)
    assert ok_json(await cli("tenants", "delete", name, "--force", "--json")) == {
        "tenant": name, "deleted": True}
    assert ok(await cli("tenants", "delete", other)).strip() == f"deleted {other}"
    failed(await cli("tenants", "show", name), 3)
    # Its keys went with it: at once in the worker process that deleted it, within the
    # auth cache's lifetime in another one that had just seen the key.
    deadline = time.monotonic() + AUTH_CACHE_SECONDS + 2
    while ((result := await cli("endpoints", "list", key=key)).returncode == 0
           and time.monotonic() < deadline):
        await asyncio.sleep(0.2)
    failed(result, 4)


async def test_portal_links_from_the_client_and_the_cli(
    api_server: ApiServer, operator_key: str,
) -> None:
    name = unique("portal")
    async with Client(api_server.url, operator_key) as op:
        tenant = await op.create_tenant(name)
        link = await op.create_portal_link(name, read_only=True, expires_in=600)
        assert link.tenant_id == tenant.id and link.read_only
        assert link.url == f"{api_server.url}/portal/#token={link.token}"
        assert abs(link.expires_timestamp - (time.time() + 600) * 1000) < 10_000
    async with Client(api_server.url, link.token) as portal:  # it works, read-only
        assert (await portal.list_endpoints()).data == []
        with pytest.raises(ApiError) as caught:
            await portal.create_endpoint("https://hooks.example.com/in")
        assert caught.value.status == 403

    env = {"DISPATCHER_URL": api_server.url, "DISPATCHER_API_KEY": operator_key}
    url = ok(await asyncio.to_thread(
        run_cli, ("tenants", "portal-link", name, "--quiet"), env)).strip()
    assert url.startswith(f"{api_server.url}/portal/#token=dpt_")
    shown = ok_json(await asyncio.to_thread(
        run_cli, ("tenants", "portal-link", name, "--read-only", "--ttl", "120", "--json"),
        env))
    assert shown["read_only"] is True and shown["tenant_id"] == tenant.id
    refused = await asyncio.to_thread(run_cli, ("tenants", "portal-link", name, "--ttl", "5"),
                                      env)
    assert "expires_in" in failed(refused, 2)
    missing = await asyncio.to_thread(run_cli, ("tenants", "portal-link", unique("nobody")),
                                      env)
    assert "not found" in failed(missing, 3)
