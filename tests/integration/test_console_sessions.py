"""Console sessions are recorded on the server: signing out ends a session in every
worker process at once, so a cookie saved before sign-out opens nothing and changes
nothing afterwards; an operator can end every session of a key."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from yarl import URL

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
