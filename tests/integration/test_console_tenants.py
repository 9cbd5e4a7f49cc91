"""The console's operator view, against a real daemon: tenants with their
statistics, acting for a tenant, the `/metrics` summary; refused to tenant and
portal sessions, and to a form without its CSRF token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.daemon import create_front_ends
from dispatcher.store.tenants import (
    DEFAULT_TENANT,
    create_api_key,
    create_operator_key,
    ensure_tenant,
)
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer
from tests.support.console import ConsoleUser
from tests.support.receiver import Receiver, Reply

api_server, http, api, other, op = (support.api_server, support.http, support.api,
                                     support.other, support.op)


@pytest.fixture
async def user(api_server: ApiServer) -> AsyncIterator[ConsoleUser]:
    u = ConsoleUser(api_server.url)
    yield u
    await u.close()


async def _csrf(user: ConsoleUser) -> str:
    page = await user.get("/console/endpoints")
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', page.text)
    assert found
    return found.group(1)


def _row(page_text: str, name: str) -> str:
    found = re.search(rf'<tr>\s*<td><strong class="tenant-name">{re.escape(name)}</strong>'
                      r'(.*?)</tr>', page_text, re.S)
    assert found, name
    return found.group(1)


async def test_operator_sees_every_tenant_with_its_stats_and_the_metrics_summary(
    user: ConsoleUser, op: Api, api: Api, other: Api, receiver: Receiver,
    make_receiver: Any,
) -> None:
    failing: Receiver = await make_receiver()
    failing.reply_with(then=Reply(status=500))
    ok = await api.create_endpoint(receiver.url)
    bad = await api.create_endpoint(failing.url, retry_policy="none")
    ev = await api.publish("wallets.transaction.created", {"n": 1})
    await api.wait_for_status(ok["id"], ev["id"], "Success")
    await api.wait_for_status(bad["id"], ev["id"], "Failed")
    paused = await other.create_endpoint(receiver.url + "/other")
    assert (await other.post(f"/v1/endpoints/{paused['id']}/pause")).status == 200

    page = await user.sign_in(op.key)
    assert page.status == 200 and 'href="/console/tenants"' in page.text
    assert "operator, acting for default" in page.text
    page = await user.get(f"/console/tenants?name_prefix={api.tenant}")
    assert page.status == 200, page.text
    row = _row(page.text, api.tenant)
    stats = (await op.get(f"/v1/tenants/{api.tenant}/stats")).body
    assert stats["deliveries"]["Success"] == 1 and stats["deliveries"]["Failed"] == 1
    assert re.search(r'status-success">Success</span> 1<', row)
    assert re.search(r'status-failed">Failed</span> 1<', row)
    assert re.search(r'state-active">active</span> 2<', row)
    assert f"<td>{stats['failures_in_window']}</td>" in row and stats["failures_in_window"] == 1
    assert other.tenant not in page.text  # the prefix filter
    page = await user.get(f"/console/tenants?name_prefix={other.tenant}")
    assert re.search(r'state-paused">paused</span> 1<', _row(page.text, other.tenant))
    for figure in ("queue-depth", "oldest-due", "attempt-rate"):
        assert f'id="{figure}"' in page.text
    rate = re.search(r'id="attempt-rate">([0-9.]+) ', page.text)
    assert rate and float(rate.group(1)) > 0  # this test's attempts, seconds ago
    hostile = '"><script>alert(1)</script>'
    page = await user.get("/console/tenants?name_prefix=" + quote(hostile))
    assert page.status == 200 and "<script>alert" not in page.text
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page.text
    page = await user.get("/console/tenants?name_prefix=" + "x" * 101)
    assert page.status == 422 and "name_prefix must be at most 100 characters" in page.text


async def test_acting_for_a_tenant_shows_its_pages_and_only_its(
    user: ConsoleUser, op: Api, api: Api, other: Api, receiver: Receiver,
) -> None:
    mine = await api.create_endpoint(receiver.url + "/mine", description="mine")
    theirs = await other.create_endpoint(receiver.url + "/theirs", description="theirs")
    await user.sign_in(op.key)
    page = await user.get("/console/endpoints")
    assert mine["id"] not in page.text and theirs["id"] not in page.text  # acting for default
    tenant_id = (await op.get(f"/v1/tenants/{api.tenant}")).body["id"]
    page = await user.post(f"/console/tenants/{tenant_id}/act", {"csrf": await _csrf(user)})
    assert page.status == 200 and page.url.endswith("/console/endpoints")
    assert mine["id"] in page.text and theirs["id"] not in page.text
    assert f"operator, acting for {api.tenant}" in page.text
    page = await user.get(f"/console/endpoints/{theirs['id']}")
    assert page.status == 404
    page = await user.get(f"/console/endpoints/{mine['id']}")
    assert page.status == 200
    # Acting by name works too, and writes land in the tenant acted for.
    page = await user.post(f"/console/tenants/{other.tenant}/act", {"csrf": await _csrf(user)})
    assert theirs["id"] in page.text and mine["id"] not in page.text
    page = await user.submit(f"/console/endpoints/{theirs['id']}",
                             f"/console/endpoints/{theirs['id']}/pause")
    assert (await other.get(f"/v1/endpoints/{theirs['id']}")).body["state"] == "paused"
    page = await user.get("/console/tenants")
    assert re.search(r'<span class="badge">acting</span>', _row(page.text, other.tenant))
    # An unknown tenant: 404, and the session keeps acting for the one it had.
    page = await user.post("/console/tenants/no-such-tenant/act", {"csrf": await _csrf(user)})
    assert page.status == 404
    assert f"operator, acting for {other.tenant}" in (await user.get("/console/events")).text


async def test_tenant_and_portal_sessions_get_no_operator_view(
    user: ConsoleUser, op: Api, api: Api, other: Api, receiver: Receiver,
) -> None:
    theirs = await other.create_endpoint(receiver.url + "/theirs")
    link = (await op.post(f"/v1/tenants/{api.tenant}/portal-links", {})).body
    other_id = (await op.get(f"/v1/tenants/{other.tenant}")).body["id"]
    for credential in (api.key, link["token"]):
        page = await user.sign_in(credential)
        assert page.status == 200, page.text
        assert 'href="/console/tenants"' not in page.text and "acting for" not in page.text
        page = await user.get("/console/tenants")
        assert page.status == 403 and other.tenant not in page.text
        for target in (other_id, other.tenant):
            page = await user.post(f"/console/tenants/{target}/act",
                                   {"csrf": await _csrf(user)})
            assert page.status == 403
        page = await user.get("/console/endpoints")
        assert theirs["id"] not in page.text
        await user.get("/console/logout")


async def test_acting_refuses_a_missing_or_wrong_csrf_token(
    user: ConsoleUser, op: Api, api: Api, receiver: Receiver,
) -> None:
    mine = await api.create_endpoint(receiver.url + "/mine")
    await user.sign_in(op.key)
    for token in (None, "", "forged-token"):
        sent = {} if token is None else {"csrf": token}
        page = await user.post(f"/console/tenants/{api.tenant}/act", sent)
        assert page.status == 403 and "CSRF" in page.text, token
    page = await user.get("/console/endpoints")
    assert mine["id"] not in page.text and "acting for default" in page.text


async def test_metrics_summary_reads_the_queue_on_the_clock(db_url: str, config: Config) -> None:
    """In-process on a fake clock, without an engine: what is published stays due."""
    clock = FakeClock(datetime.now(UTC))
    runner = web.AppRunner(create_front_ends(config, db_url, clock))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    conn = await asyncpg.connect(db_url)
    try:
        op_key = await create_operator_key(conn, "clocked")
        await ensure_tenant(conn, DEFAULT_TENANT)  # an operator's console starts there
        tenant_key = await create_api_key(conn, "clocked-tenant")
    finally:
        await conn.close()
    user = ConsoleUser(base)
    try:
        async with aiohttp.ClientSession() as http_session:
            tenant = Api(http_session, ApiServer(base, db_url, None),  # type: ignore[arg-type]
                         tenant_key, "clocked-tenant")
            await tenant.create_endpoint("http://127.0.0.1:9/hook")
            for i in range(3):
                await tenant.publish("wallets.transaction.created", {"n": i})
        clock.advance(42)
        await user.sign_in(op_key)
        page = await user.get("/console/tenants")
        assert page.status == 200, page.text
        assert 'id="queue-depth">3 due deliveries<' in page.text
        assert 'id="oldest-due">42.0 s waiting<' in page.text
        assert 'id="attempt-rate">0.0 ' in page.text
        assert re.search(r'status-pending">Pending</span> 3<', _row(page.text, "clocked-tenant"))
    finally:
        await user.close()
        await runner.cleanup()


async def test_a_deleted_tenant_stops_its_operator_session_instead_of_acting_for_default(
    user: ConsoleUser, op: Api, receiver: Receiver,
) -> None:
    made = await op.post("/v1/tenants", {"name": "gone-soon"})
    assert made.status == 201, made
    await user.sign_in(op.key)
    page = await user.post("/console/tenants/gone-soon/act", {"csrf": await _csrf(user)})
    assert "operator, acting for gone-soon" in page.text
    form = await user.get("/console/endpoints")  # a form opened while the tenant existed
    assert (await op.delete("/v1/tenants/gone-soon?force=true")).status == 204
    page = await user.get("/console/endpoints")
    assert page.status == 404 and "acted for no longer exists" in page.text
    assert "acting for a deleted tenant" in page.text
    posted = await user.post("/console/endpoints", {
        "csrf": form.csrf, "url": receiver.url, "description": "", "event_types": "",
        "signing_scheme": "standard-v1", "retry_policy": "standard", "timeout_seconds": "",
        "max_in_flight": "5"})
    assert posted.status == 404, posted
    assert (await op.get("/v1/endpoints")).body["data"] == []  # nothing landed in default
    tenants = await user.get("/console/tenants")
    assert tenants.status == 200  # the operator can choose another tenant
    page = await user.post("/console/tenants/default/act", {"csrf": tenants.csrf})
    assert page.status == 200 and "operator, acting for default" in page.text


async def test_a_portal_says_whose_it_is_and_has_no_sandbox(
    user: ConsoleUser, op: Api, api: Api,
) -> None:
    link = await op.post(f"/v1/tenants/{api.tenant}/portal-links", {})
    assert link.status == 201, link
    assert (await user.sign_in(link.body["token"])).status == 200
    for path in ("/console/endpoints", "/console/events", "/console/callbacks"):
        page = await user.get(path)
        assert page.status == 200, path
        assert f'<span class="badge" id="tenant">{api.tenant} · portal</span>' in page.text
        assert 'href="/console/sandbox"' not in page.text
        assert 'href="/console/tenants"' not in page.text
    for path in ("/console/sandbox", "/console/sandbox/requests"):
        refused = await user.get(path)
        assert refused.status == 403 and "not part of a tenant&#39;s portal" in refused.text
    # A tenant's own key still has the sandbox, and sees its name too.
    own = ConsoleUser(api.server.url)
    try:
        await own.sign_in(api.key)
        page = await own.get("/console/endpoints")
        assert f'<span class="badge" id="tenant">{api.tenant}</span>' in page.text
        assert 'href="/console/sandbox"' in page.text
    finally:
        await own.close()
