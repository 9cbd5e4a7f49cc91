"""Console sessions are recorded on the server: signing out ends a session in every
worker process at once, so a cookie saved before sign-out opens nothing and changes
nothing afterwards; an operator can end every session of a key."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from yarl import URL

from dispatcher.store.console_sessions import SESSION_LOOKUP, session_is_open
from dispatcher.store.tenants import find_api_key, revoke_api_key
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, new_api
from tests.support.console import ConsoleUser

# The shared fixtures: a daemon for this module, a fresh tenant per test.
api_server, http, api, op = support.api_server, support.http, support.api, support.op


@pytest.fixture
async def user(api_server: ApiServer) -> Any:
    u = ConsoleUser(api_server.url)
    yield u
    await u.close()


def replay(user: ConsoleUser, cookie: str) -> None:
    """Put a saved session cookie back into the user's jar."""
    user.http.cookie_jar.clear()
    user.http.cookie_jar.update_cookies({"dispatcher_console": cookie},
                                        URL(user.base + "/console/"))


async def test_a_cookie_saved_before_sign_out_opens_and_changes_nothing(
    user: ConsoleUser, api: Api
) -> None:
    ep = await api.create_endpoint("http://127.0.0.1:9/in")
    path = f"/console/endpoints/{ep['id']}"
    assert (await user.sign_in(api.key)).status == 200
    page = await user.get(path)
    assert page.status == 200
    csrf, cookie = page.csrf, user.session_cookie()
    assert cookie

    assert (await user.get("/console/logout")).url.endswith("/console/login")
    replay(user, cookie)
    page = await user.get("/console/endpoints", follow=False)
    assert page.status == 302
    assert page.headers["Location"].startswith("/console/login?next=/console/endpoints")

    replay(user, cookie)
    page = await user.post(path + "/pause", {"csrf": csrf}, follow=False)
    assert page.status == 302 and page.headers["Location"].startswith("/console/login")
    assert (await api.get(f"/v1/endpoints/{ep['id']}")).body["state"] == "active"


async def test_sign_out_ends_the_session_in_every_worker(
    daemon_factory: Any, db_url: str
) -> None:
    daemon = await daemon_factory(DISPATCHER_SERVER__WORKERS="2")
    async with aiohttp.ClientSession() as http_session:
        me = await new_api(http_session, ApiServer(daemon.url, db_url, daemon))
    user = ConsoleUser(daemon.url)
    try:
        await user.sign_in(me.key)
        cookie = user.session_cookie()
        assert cookie
        await user.get("/console/logout")
        # New connections land on either worker: none may accept the session.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         cookies={"dispatcher_console": cookie}) as fresh:
            for _ in range(20):
                async with fresh.get(daemon.url + "/console/endpoints",
                                     allow_redirects=False) as resp:
                    assert resp.status == 302
    finally:
        await user.close()


async def test_signing_out_of_a_portal_session_ends_it(user: ConsoleUser, api: Api,
                                                       op: Api) -> None:
    link = await op.post(f"/v1/tenants/{api.tenant}/portal-links", {})
    assert link.status == 201, link
    assert (await user.sign_in(link.body["token"])).status == 200
    cookie = user.session_cookie()
    assert cookie
    await user.get("/console/logout")
    replay(user, cookie)
    assert (await user.get("/console/endpoints", follow=False)).status == 302


# --- Ending every session of a key ---------------------------------------------------


async def key_id(server: ApiServer, key: str) -> str:
    conn = await asyncpg.connect(server.dsn)
    try:
        return str((await find_api_key(conn, key)).id)
    finally:
        await conn.close()


async def signed_in_user(server: ApiServer, key: str) -> ConsoleUser:
    u = ConsoleUser(server.url)
    assert (await u.sign_in(key)).status == 200
    return u


async def opens(u: ConsoleUser) -> bool:
    page = await u.get("/console/endpoints", follow=False)
    assert page.status in (200, 302), page
    return page.status == 200


async def test_ending_a_keys_sessions_signs_out_each_of_them_and_no_other(
    api_server: ApiServer, api: Api, op: Api, http: aiohttp.ClientSession
) -> None:
    other = await new_api(http, api_server)
    users = [await signed_in_user(api_server, k) for k in (api.key, api.key, other.key)]
    try:
        ended = await op.post(f"/v1/keys/{await key_id(api_server, api.key)}/sessions/end")
        assert ended.status == 200, ended
        assert ended.body == {"key_id": await key_id(api_server, api.key), "ended": 2}
        assert [await opens(u) for u in users] == [False, False, True]
        assert (await api.get("/v1/endpoints")).status == 200  # the key keeps working
        fresh = await signed_in_user(api_server, api.key)  # and signs in anew
        users.append(fresh)
        assert await opens(fresh)
        again = await op.post(f"/v1/keys/{await key_id(api_server, other.key)}/sessions/end")
        assert again.body["ended"] == 1
        assert [await opens(u) for u in users] == [False, False, False, True]
    finally:
        for u in users:
            await u.close()


@pytest.mark.parametrize(("path_id", "status", "code"), [
    ("not-a-uuid", 404, "not_found"),
    ("6f1c2b7e-0000-4000-8000-000000000000", 404, "not_found"),  # no such key
    ("own", 403, "forbidden"),  # a tenant key may not end sessions, even its own
])
async def test_ending_sessions_refuses_bad_input_and_changes_nothing(
    api_server: ApiServer, api: Api, op: Api, path_id: str, status: int, code: str
) -> None:
    u = await signed_in_user(api_server, api.key)
    try:
        caller = api if path_id == "own" else op
        target = await key_id(api_server, api.key) if path_id == "own" else path_id
        reply = await caller.post(f"/v1/keys/{target}/sessions/end")
        assert reply.status == status, reply
        assert reply.error["code"] == code
        assert reply.error["field"] == ("Authorization" if status == 403 else "key_id")
        assert reply.error["message"]
        assert await opens(u)
    finally:
        await u.close()


async def test_revoking_a_key_ends_its_sessions_at_once(
    user: ConsoleUser, api: Api, api_server: ApiServer
) -> None:
    """Without waiting for the key cache: the session's row was ended with the key."""
    assert (await user.sign_in(api.key)).status == 200
    assert await opens(user)
    conn = await asyncpg.connect(api_server.dsn)
    try:
        await revoke_api_key(conn, api.key)
    finally:
        await conn.close()
    assert not await opens(user)


async def test_the_per_request_session_check_is_one_primary_key_lookup(db_url: str) -> None:
    """Every signed-in console request runs it: it must stay one index probe however
    many sessions are kept."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """INSERT INTO console_sessions (created_at, expires_at, ended_at)
               SELECT now(), now() + interval '12 hours',
                      CASE WHEN n % 2 = 0 THEN now() END
               FROM generate_series(1, 20000) n""")
        await conn.execute("ANALYZE console_sessions")
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + SESSION_LOOKUP, uuid.uuid4(), datetime.now(UTC))
        node = json.loads(plan)[0]["Plan"]
        assert node["Node Type"] in ("Index Scan", "Index Only Scan"), node
        assert node["Index Name"] == "console_sessions_pkey", node
        some = await conn.fetchval("SELECT id FROM console_sessions WHERE ended_at IS NULL "
                                   "LIMIT 1")
        assert await session_is_open(conn, some, datetime.now(UTC))
        assert not await session_is_open(conn, uuid.uuid4(), datetime.now(UTC))
    finally:
        await conn.close()
