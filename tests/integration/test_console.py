"""The web console without a browser, against a real daemon: sign-in and sessions,
every page's status and content, escaping of hostile data, CSRF refusal of every
state-changing form, tenant isolation, read-only scopes, and the sandbox page."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.console.access import RESOLVER, Scope, resolve_api_key
from dispatcher.daemon import create_front_ends
from dispatcher.sandbox.capture import CaptureServer
from dispatcher.store.callbacks import expire_overdue
from dispatcher.store.pool import create_pool
from dispatcher.store.tenants import create_api_key, revoke_api_key
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, new_api
from tests.support.console import ConsoleUser
from tests.support.receiver import Receiver, Reply

# The shared fixtures: a daemon for this module, a fresh tenant per test.
api_server, http, api, other = support.api_server, support.http, support.api, support.other

HOSTILE = {"note": "<script>alert('x')</script>", "img": '<img src=x onerror="alert(1)">'}
HOSTILE_REPLY = '<script>alert("reply")</script>'


@pytest.fixture
async def user(api_server: ApiServer) -> AsyncIterator[ConsoleUser]:
    u = ConsoleUser(api_server.url)
    yield u
    await u.close()


@pytest.fixture
async def signed_in(user: ConsoleUser, api: Api) -> ConsoleUser:
    page = await user.sign_in(api.key)
    assert page.status == 200 and page.url.endswith("/console/endpoints"), page
    return user


async def _wait_attempts(api: Api, endpoint_id: str, event_id: str, n: int) -> None:
    for _ in range(200):
        reply = await api.get(f"/v1/endpoints/{endpoint_id}/events/{event_id}")
        if reply.body["attempts"] >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} attempts")


# --- Sign-in and sessions ----------------------------------------------------------------


async def test_pages_redirect_to_sign_in_without_a_session(user: ConsoleUser) -> None:
    for path in ("/console/endpoints", "/console/events", "/console/sandbox",
                 "/console/callbacks", f"/console/callbacks/{uuid.uuid4()}",
                 f"/console/events/{uuid.uuid4()}", f"/console/endpoints/{uuid.uuid4()}"):
        page = await user.get(path, follow=False)
        assert page.status == 302, path
        assert page.headers["Location"].startswith("/console/login?next=/console/"), page.headers


async def test_sign_in_sets_a_strict_http_only_cookie_without_the_key(
    user: ConsoleUser, api: Api
) -> None:
    form = await user.get("/console/login")
    assert form.status == 200 and 'name="key"' in form.text
    async with user.http.post(user.base + "/console/login",
                              data={"key": api.key, "csrf": form.csrf},
                              allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/console/endpoints"
        cookies = [v for k, v in resp.headers.items() if k.lower() == "set-cookie"
                   and v.startswith("dispatcher_console=")]
    assert len(cookies) == 1
    cookie = cookies[0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert "Secure" not in cookie  # plain http here; https sets it
    assert api.key not in cookie and api.key[3:20] not in cookie
    page = await user.get("/console/endpoints")
    assert page.status == 200 and "Sign out" in page.text


async def test_sign_in_returns_to_the_page_asked_for_and_only_within_the_console(
    user: ConsoleUser, api: Api
) -> None:
    page = await user.get("/console/events?type=a.b", follow=True)
    assert "/console/login?next=/console/events" in page.url
    page = await user.post("/console/login", {"key": api.key, "csrf": page.csrf,
                                              "next": "/console/events?type=a.b"})
    assert page.url.endswith("/console/events?type=a.b")
    await user.get("/console/logout")
    for target in ("//evil.example/x", "https://evil.example/", "/console/..//evil.example",
                   "/v1/endpoints"):
        form = await user.get("/console/login")
        page = await user.post("/console/login", {"key": api.key, "csrf": form.csrf,
                                                  "next": target}, follow=False)
        assert page.headers["Location"] == "/console/endpoints", target
        await user.get("/console/logout")


async def test_a_wrong_key_is_refused(user: ConsoleUser) -> None:
    page = await user.sign_in("dk_not-a-real-key")
    assert page.status == 401 and "not valid" in page.text
    assert user.session_cookie() is None


async def test_sign_in_without_its_csrf_token_is_refused(user: ConsoleUser, api: Api) -> None:
    await user.get("/console/login")
    page = await user.post("/console/login", {"key": api.key, "csrf": "forged"})
    assert page.status == 403
    assert user.session_cookie() is None


async def test_failed_sign_ins_count_towards_the_failed_authentication_limit(
    daemon_factory: Any, db_url: str
) -> None:
    daemon = await daemon_factory(DISPATCHER_SERVER__AUTH_FAILURE_LIMIT="3",
                                  DISPATCHER_SERVER__WORKERS="1")
    async with aiohttp.ClientSession() as http_session:
        me = await new_api(http_session, ApiServer(daemon.url, db_url, daemon))
    user = ConsoleUser(daemon.url)
    try:
        for _ in range(3):
            assert (await user.sign_in("dk_guess")).status == 401
        page = await user.sign_in(me.key)  # even the right key, from this address
        assert page.status == 429 and "too many failed authentications" in page.text
        assert int(page.headers["Retry-After"]) > 0
        assert 'name="key"' in page.text and user.session_cookie() is None
    finally:
        await user.close()


async def test_sessions_work_on_every_worker_and_are_secure_behind_an_https_proxy(
    daemon_factory: Any, db_url: str
) -> None:
    """(Also the branding from `[console]`, to start one daemon less.)"""
    daemon = await daemon_factory(DISPATCHER_SERVER__WORKERS="2",
                                  DISPATCHER_SERVER__TRUSTED_PROXIES='["127.0.0.1/32"]',
                                  DISPATCHER_CONSOLE__TITLE="Acme Webhooks",
                                  DISPATCHER_CONSOLE__ACCENT_COLOR="#ff6600",
                                  DISPATCHER_CONSOLE__LOGO_URL="https://example.com/logo.png")
    async with aiohttp.ClientSession() as http_session:
        me = await new_api(http_session, ApiServer(daemon.url, db_url, daemon))
    user = ConsoleUser(daemon.url)
    try:
        page = await user.get("/console/login")
        assert "Acme Webhooks" in page.text and 'src="https://example.com/logo.png"' in page.text
        assert "--accent: #ff6600" in (await user.get("/console/theme.css")).text
        await user.sign_in(me.key)
        cookie = user.session_cookie()
        assert cookie
        # New connections land on either worker: each must accept the session.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         cookies={"dispatcher_console": cookie}) as fresh:
            for _ in range(20):
                async with fresh.get(daemon.url + "/console/endpoints",
                                     allow_redirects=False) as resp:
                    assert resp.status == 200
        form = await user.get("/console/login?next=/console/events")  # signed in: redirected
        assert form.url.endswith("/console/events")
        await user.get("/console/logout")
        for proto, secure in (("https", True), ("http", False)):
            form = await user.get("/console/login")
            async with user.http.post(user.base + "/console/login",
                                      data={"key": me.key, "csrf": form.csrf},
                                      headers={"X-Forwarded-Proto": proto},
                                      allow_redirects=False) as resp:
                assert resp.status == 302
                assert ("; Secure" in resp.headers["Set-Cookie"]) is secure, proto
    finally:
        await user.close()


async def test_sign_out_ends_the_session(signed_in: ConsoleUser) -> None:
    page = await signed_in.get("/console/logout")
    assert page.url.endswith("/console/login")
    page = await signed_in.get("/console/endpoints", follow=False)
    assert page.status == 302


async def test_a_tampered_cookie_is_no_session(signed_in: ConsoleUser) -> None:
    value = signed_in.session_cookie()
    assert value
    flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    signed_in.http.cookie_jar.clear()
    signed_in.http.cookie_jar.update_cookies({"dispatcher_console": flipped},
                                             URL(signed_in.base + "/console/"))
    assert signed_in.session_cookie() == flipped
    page = await signed_in.get("/console/endpoints", follow=False)
    assert page.status == 302


async def test_a_revoked_key_ends_its_sessions(
    signed_in: ConsoleUser, api: Api, api_server: ApiServer
) -> None:
    pool = await create_pool(api_server.dsn, Config().database)
    try:
        async with pool.acquire() as conn:
            await revoke_api_key(conn, api.key)
    finally:
        await pool.close()
    for _ in range(100):  # the API's key cache keeps a good key for 2 s
        page = await signed_in.get("/console/endpoints", follow=False)
        if page.status == 302:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the session outlived its revoked key")


async def test_console_answers_carry_a_csp_without_inline_scripts(
    signed_in: ConsoleUser,
) -> None:
    for path in ("/console/login", "/console/endpoints", "/console/events",
                 "/console/callbacks"):
        page = await signed_in.get(path)
        csp = page.headers["Content-Security-Policy"]
        script_src = re.search(r"script-src ([^;]*)", csp)
        assert script_src and script_src.group(1).strip() == "'self'", csp
        assert "unsafe-inline" not in csp
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script>" not in page.text  # only <script src=...>
        assert "style=" not in page.text and " on" + "click" not in page.text


# --- Endpoints ---------------------------------------------------------------------------


async def test_create_an_endpoint_shows_its_secret_once(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    page = await signed_in.submit("/console/endpoints", "/console/endpoints",
                                  {"url": receiver.url, "description": "orders",
                                   "event_types": "", "signing_scheme": "standard-v1",
                                   "retry_policy": "standard", "timeout_seconds": "",
                                   "max_in_flight": "5"})
    assert page.status == 200, page.text
    listed = (await api.get("/v1/endpoints")).body["data"]
    assert len(listed) == 1 and listed[0]["max_in_flight"] == 5
    assert listed[0]["event_types"] == ["*"]
    secret = (await api.get(f"/v1/endpoints/{listed[0]['id']}/secret")).body["secret"]
    assert secret in page.text
    again = await signed_in.get(f"/console/endpoints/{listed[0]['id']}")
    assert again.status == 200 and receiver.url in again.text and "orders" in again.text
    assert secret not in again.text  # only on an explicit reveal
    index = await signed_in.get("/console/endpoints")
    assert receiver.url in index.text and secret not in index.text


async def test_create_with_invalid_input_shows_the_api_error_and_creates_nothing(
    signed_in: ConsoleUser, api: Api
) -> None:
    page = await signed_in.submit("/console/endpoints", "/console/endpoints",
                                  {"url": "ftp://example.com/x", "max_in_flight": "many"})
    assert page.status == 422
    assert "url" in page.text and 'value="ftp://example.com/x"' in page.text
    page = await signed_in.submit("/console/endpoints", "/console/endpoints",
                                  {"url": "http://127.0.0.1:9/x", "max_in_flight": "many"})
    assert page.status == 422 and "max_in_flight must be an integer" in page.text
    assert (await api.get("/v1/endpoints")).body["data"] == []


async def test_pause_resume_rotate_reveal_edit_and_delete(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    ep = await api.create_endpoint(receiver.url)
    path = f"/console/endpoints/{ep['id']}"
    page = await signed_in.submit(path, path + "/pause")
    assert page.status == 200 and "Endpoint paused" in page.text
    assert (await api.get(f"/v1/endpoints/{ep['id']}")).body["state"] == "paused"
    page = await signed_in.submit(path, path + "/resume")
    assert "Endpoint resumed" in page.text
    assert (await api.get(f"/v1/endpoints/{ep['id']}")).body["state"] == "active"

    page = await signed_in.submit(path, path + "/reveal-secret")
    assert page.status == 200 and ep["secret"] in page.text
    page = await signed_in.submit(path, path + "/rotate-secret")
    new_secret = (await api.get(f"/v1/endpoints/{ep['id']}/secret")).body["secret"]
    assert new_secret != ep["secret"] and new_secret in page.text

    page = await signed_in.submit(path, path, {"description": "edited <b>", "url": receiver.url,
                                               "event_types": "*", "timeout_seconds": "7",
                                               "max_in_flight": "3",
                                               "pause_window_threshold": "12",
                                               "pause_total_threshold": ""})
    assert page.status == 200 and "Endpoint updated" in page.text
    assert "edited &lt;b&gt;" in page.text
    shown = (await api.get(f"/v1/endpoints/{ep['id']}")).body
    assert (shown["description"], shown["timeout_seconds"], shown["max_in_flight"],
            shown["pause_window_threshold"]) == ("edited <b>", 7, 3, 12)

    page = await signed_in.submit(path, path + "/delete")
    assert page.url.endswith("/console/endpoints")
    assert (await api.get(f"/v1/endpoints/{ep['id']}")).status == 404


async def test_endpoint_page_shows_health_against_thresholds(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(status=500))
    ep = await api.create_endpoint(receiver.url, retry_policy="none",
                                   pause_window_threshold=10)
    ev = await api.publish("wallets.transaction.created", {"n": 1})
    await api.wait_for_status(ep["id"], ev["id"], "Failed")
    page = await signed_in.get(f"/console/endpoints/{ep['id']}")
    assert '<meter min="0" max="10"' in page.text and "1/10" in page.text
    assert ev["id"] in page.text  # recent events


# --- Events ------------------------------------------------------------------------------


async def test_events_page_lists_newest_first_with_statuses_and_pages(
    signed_in: ConsoleUser, api: Api, receiver: Receiver, make_receiver: Any
) -> None:
    failing: Receiver = await make_receiver()
    failing.reply_with(then=Reply(status=500))
    ok = await api.create_endpoint(receiver.url)
    bad = await api.create_endpoint(failing.url, retry_policy="none",
                                    event_types=["wallets.transaction.created"])
    ids = [(await api.publish("wallets.transaction.created", {"n": i}))["id"]
           for i in range(3)]
    for event_id in ids:
        await api.wait_for_status(ok["id"], event_id, "Success")
        await api.wait_for_status(bad["id"], event_id, "Failed")
    other_type = (await api.publish("wallets.transaction.updated", {"n": 9}))["id"]
    await api.wait_for_status(ok["id"], other_type, "Success")

    page = await signed_in.get("/console/events?limit=2")
    assert page.status == 200
    assert page.text.index(other_type) < page.text.index(ids[2])
    assert ids[0] not in page.text
    assert "Success" in page.text and "Failed" in page.text
    older = re.search(r'id="older" href="([^"]+)"', page.text)
    assert older
    page2 = await signed_in.get(older.group(1).replace("&amp;", "&"))
    assert ids[1] in page2.text and ids[0] in page2.text and other_type not in page2.text

    page = await signed_in.get("/console/events?type=wallets.transaction.updated")
    assert other_type in page.text and ids[0] not in page.text
    page = await signed_in.get(f"/console/events?endpoint={bad['id']}&status=Failed")
    assert all(i in page.text for i in ids) and other_type not in page.text
    page = await signed_in.get("/console/events?status=Failed")  # at any endpoint
    assert all(i in page.text for i in ids) and other_type not in page.text
    page = await signed_in.get("/console/events?status=Pending")
    assert not any(i in page.text for i in [*ids, other_type])
    page = await signed_in.get(f"/console/events?endpoint={ok['id']}&status=Failed")
    assert not any(i in page.text for i in ids)
    page = await signed_in.get("/console/events?since=2999-01-01T00:00")
    assert not any(i in page.text for i in ids)
    page = await signed_in.get("/console/events?status=Bogus")
    assert page.status == 422 and "status must be one of" in page.text
    # Search pressed with the form's default fields: every field blank means any.
    page = await signed_in.get("/console/events?type=&endpoint=&status=&since=&until=")
    assert page.status == 200 and all(i in page.text for i in [*ids, other_type])
    assert "must not be empty" not in page.text
    page = await signed_in.get(
        "/console/events?type=wallets.transaction.updated&endpoint=&status=&since=&until=")
    assert page.status == 200 and other_type in page.text and ids[0] not in page.text


async def test_event_page_shows_every_attempt_and_retries(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(Reply(status=503, body="try later", headers={"X-Why": "busy"}))
    ep = await api.create_endpoint(receiver.url, retry_policy="none")
    ev = await api.publish("wallets.transaction.created", {"amount": "1.5"})
    await api.wait_for_status(ep["id"], ev["id"], "Failed")
    path = f"/console/events/{ev['id']}"
    page = await signed_in.get(path)
    assert page.status == 200
    assert "&#34;amount&#34;: &#34;1.5&#34;" in page.text  # pretty-printed payload, escaped
    assert "503" in page.text and "try later" in page.text and "busy" in page.text
    assert "webhook-signature" in page.text  # request headers as sent
    page = await signed_in.submit(path, path + "/retry", {"endpoint_id": ep["id"]})
    assert page.status == 200 and "Retry queued" in page.text
    await _wait_attempts(api, ep["id"], ev["id"], 2)
    assert (await api.wait_for_status(ep["id"], ev["id"], "Success"))["attempts"] == 2
    page = await signed_in.get(path)
    assert "Attempt 2" in page.text


async def test_bulk_replay_of_failed_events(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(Reply(status=500), Reply(status=500))
    ep = await api.create_endpoint(receiver.url, retry_policy="none")
    ids = [(await api.publish("wallets.transaction.created", {"n": i}))["id"] for i in range(2)]
    for event_id in ids:
        await api.wait_for_status(ep["id"], event_id, "Failed")
    path = f"/console/endpoints/{ep['id']}"
    page = await signed_in.submit(path, path + "/replay", {"status": "Failed", "since": "",
                                                           "until": ""})
    assert page.status == 200 and "2 event(s) queued" in page.text
    for event_id in ids:
        await api.wait_for_status(ep["id"], event_id, "Success")


async def test_hostile_event_data_and_responses_are_shown_as_text(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(status=500, body=HOSTILE_REPLY,
                                   headers={"X-Evil": "<img src=x onerror=alert(2)>"}))
    ep = await api.create_endpoint(receiver.url, retry_policy="none",
                                   description="<script>alert('desc')</script>")
    ev = await api.publish("wallets.transaction.created", HOSTILE)
    await api.wait_for_status(ep["id"], ev["id"], "Failed")
    pages = [await signed_in.get(p) for p in (
        f"/console/events/{ev['id']}", "/console/events", "/console/endpoints",
        f"/console/endpoints/{ep['id']}")]
    for page in pages:
        assert page.status == 200
        lowered = page.text.lower()
        assert "<script>alert" not in lowered and "<img src=x" not in lowered
    event_page = pages[0].text
    assert "&lt;script&gt;alert(" in event_page  # the payload, as text
    assert "&lt;img src=x onerror=" in event_page  # the response header, as text
    assert "&lt;script&gt;alert(&#34;reply&#34;)" in event_page  # the response body
    assert "&lt;script&gt;alert(&#39;desc&#39;)" in pages[2].text


async def test_bidi_controls_are_shown_as_visible_text_and_kept_in_forms(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    """U+202E would show "moc.lapyap" as "paypal.com": every page shows such controls
    as visible text; the edit form keeps the exact value, so saving changes nothing."""
    spoof = "pay to \u202emoc.lapyap\u202c and \u2066x\u2069"
    ep = await api.create_endpoint(receiver.url, description=spoof)
    ev = await api.publish("wallets.transaction.created", {"memo": spoof})
    for path in (f"/console/endpoints/{ep['id']}", "/console/endpoints",
                 f"/console/events/{ev['id']}"):
        page = await signed_in.get(path)
        assert page.status == 200
        assert "&lt;U+202E&gt;moc.lapyap&lt;U+202C&gt;" in page.text, path
        assert "&lt;U+2066&gt;x&lt;U+2069&gt;" in page.text, path
        shown = page.text.replace(f'value="{spoof}"', "")  # the form's own input
        assert not any(c in shown for c in "\u202e\u202c\u2066\u2069"), path
    edit = await signed_in.get(f"/console/endpoints/{ep['id']}")
    assert f'name="description" value="{spoof}"' in edit.text


# --- Callbacks ---------------------------------------------------------------------------


async def _ask(api: Api, data: Any = None, type_: str = "withdrawal.approve") -> str:
    reply = await api.post("/v1/callbacks", {"type": type_, "data": data or {"amount": "10"}})
    assert reply.status == 202, reply
    callback_id: str = reply.body["id"]
    return callback_id


async def _decided(api: Api, callback_id: str) -> dict[str, Any]:
    reply = await api.get(f"/v1/callbacks/{callback_id}?wait=20")
    assert reply.body["status"] in ("Approved", "Denied", "Failed"), reply
    body: dict[str, Any] = reply.body
    return body


async def test_create_a_callback_endpoint_and_see_its_kind(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    page = await signed_in.submit("/console/endpoints", "/console/endpoints",
                                  {"url": receiver.url, "kind": "callback", "event_types": "",
                                   "signing_scheme": "standard-v1", "retry_policy": ""})
    assert page.status == 200, page.text
    listed = (await api.get("/v1/endpoints")).body["data"]
    assert [(e["kind"], e["event_types"], e["retry_policy"]) for e in listed] == [
        ("callback", [], "callback")]
    assert 'id="kind">callback<' in page.text
    assert 'name="event_types"' not in page.text and 'id="replay"' not in page.text
    path = f"/console/endpoints/{listed[0]['id']}"
    page = await signed_in.submit(path, path, {"description": "approvals", "url": receiver.url,
                                               "timeout_seconds": "3"})
    assert page.status == 200 and "Endpoint updated" in page.text, page.text
    assert (await api.get(path.replace("/console", "/v1"))).body["description"] == "approvals"
    hook = await api.create_endpoint(receiver.url + "/events")
    index = await signed_in.get("/console/endpoints")
    assert '<td class="kind">callback</td>' in index.text
    assert '<td class="kind">webhook</td>' in index.text
    assert 'id="kind">webhook<' in (await signed_in.get(f"/console/endpoints/{hook['id']}")).text
    page = await signed_in.submit("/console/endpoints", "/console/endpoints",
                                  {"url": receiver.url + "/2", "kind": "callback",
                                   "event_types": "wallets.transaction.created"})
    assert page.status == 422 and "not accepted for a callback endpoint" in page.text
    page = await signed_in.submit("/console/endpoints", "/console/endpoints",
                                  {"url": receiver.url + "/3", "kind": "approver"})
    assert page.status == 422 and "kind must be one of" in page.text
    assert len((await api.get("/v1/endpoints")).body["data"]) == 2


async def test_callbacks_page_lists_newest_first_with_decisions_filters_and_pages(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(Reply(200, "ok"), Reply(200, "deny"), then=Reply(500, "down"))
    await api.create_endpoint(receiver.url, kind="callback", retry_policy="none")
    approved = await _ask(api)
    assert (await _decided(api, approved))["decision"] == "ok"
    denied = await _ask(api)
    assert (await _decided(api, denied))["decision"] == "deny"
    failed = await _ask(api, type_="contract.call")
    assert (await _decided(api, failed))["status"] == "Failed"

    page = await signed_in.get("/console/callbacks")
    assert page.status == 200
    assert page.text.index(failed) < page.text.index(denied) < page.text.index(approved)
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r'<a href="/console/callbacks/([0-9a-f-]+)">.*?</td>\s*<td>.*?</td>\s*<td>.*?</td>'
        r'\s*<td>(.*?)</tr>', page.text, re.S)}
    assert "Approved" in rows[approved] and '<code class="decision">ok</code>' in rows[approved]
    assert "Denied" in rows[denied] and '<code class="decision">deny</code>' in rows[denied]
    assert "Failed" in rows[failed] and "http_status" in rows[failed]
    assert receiver.url in page.text  # the endpoint

    page = await signed_in.get("/console/callbacks?limit=2")
    assert failed in page.text and denied in page.text and approved not in page.text
    older = re.search(r'id="older" href="([^"]+)"', page.text)
    assert older
    page2 = await signed_in.get(older.group(1).replace("&amp;", "&"))
    assert approved in page2.text and denied not in page2.text and 'id="older"' not in page2.text

    page = await signed_in.get("/console/callbacks?status=Denied")
    assert denied in page.text and approved not in page.text and failed not in page.text
    page = await signed_in.get("/console/callbacks?type=&status=&since=&until=")
    assert page.status == 200 and all(c in page.text for c in (approved, denied, failed))
    page = await signed_in.get("/console/callbacks?type=contract.call")
    assert failed in page.text and approved not in page.text and denied not in page.text
    page = await signed_in.get("/console/callbacks?since=2999-01-01T00:00")
    assert not any(i in page.text for i in (approved, denied, failed))
    page = await signed_in.get("/console/callbacks?until=2000-01-01T00:00")
    assert not any(i in page.text for i in (approved, denied, failed))
    page = await signed_in.get("/console/callbacks?since=2000-01-01T00:00&status=Approved")
    assert approved in page.text and denied not in page.text
    page = await signed_in.get("/console/callbacks?status=Bogus")
    assert page.status == 422 and "status must be one of" in page.text
    page = await signed_in.get("/console/callbacks?since=2030-01-01T00:00&until=2020-01-01T00:00")
    assert page.status == 422 and "since must not be after until" in page.text


async def test_callback_page_shows_data_attempts_and_retries_a_failed_one(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(Reply(503, "try later", headers={"X-Why": "busy"}),
                        then=Reply(200, "ok"))
    ep = await api.create_endpoint(receiver.url, kind="callback", retry_policy="none")
    callback_id = await _ask(api, {"amount": "250.00", "to": "0xab12"})
    shown = await _decided(api, callback_id)
    assert shown["status"] == "Failed"
    path = f"/console/callbacks/{callback_id}"
    page = await signed_in.get(path)
    assert page.status == 200
    assert "&#34;amount&#34;: &#34;250.00&#34;" in page.text  # pretty-printed data, escaped
    assert 'id="status">Failed<' in page.text and "failed closed (http_status)" in page.text
    assert "503" in page.text and "try later" in page.text and "busy" in page.text
    assert "webhook-signature" in page.text  # request headers as sent
    assert "Attempt 1" in page.text and "http_status" in page.text and " ms" in page.text
    assert re.search(f"request-body\">[^<]*&#34;event_id&#34;: ?&#34;{callback_id}", page.text)
    assert receiver.url in page.text and f"/console/endpoints/{ep['id']}" in page.text
    endpoint_page = await signed_in.get(f"/console/endpoints/{ep['id']}")
    assert "Recent callbacks" in endpoint_page.text
    assert f'href="/console/callbacks/{callback_id}"' in endpoint_page.text
    assert f'action="{path}/retry"' in page.text

    page = await signed_in.submit(path, path + "/retry")
    assert page.status == 200 and "Retry queued" in page.text, page.text
    done = await _decided(api, callback_id)
    assert done["status"] == "Approved" and done["attempts"] == 2
    page = await signed_in.get(path)
    assert "Attempt 2" in page.text and '<code class="decision">ok</code>' in page.text
    assert f'action="{path}/retry"' not in page.text  # a decision is final
    # A retry posted anyway (e.g. from a page left open) is the API's 409, as a page.
    page = await signed_in.post(path + "/retry", {"csrf": await _session_csrf(signed_in)})
    assert page.status == 409 and "a decision is final" in page.text
    assert (await _decided(api, callback_id))["attempts"] == 2


async def test_hostile_callback_data_and_answers_are_shown_as_text(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(500, HOSTILE_REPLY,
                                   headers={"X-Evil": "<img src=x onerror=alert(2)>"}))
    await api.create_endpoint(receiver.url, kind="callback", retry_policy="none")
    callback_id = await _ask(api, HOSTILE, type_="<script>alert('type')</script>")
    await _decided(api, callback_id)
    pages = [await signed_in.get(p) for p in ("/console/callbacks",
                                               f"/console/callbacks/{callback_id}")]
    for page in pages:
        assert page.status == 200
        lowered = page.text.lower()
        assert "<script>alert" not in lowered and "<img src=x" not in lowered
        assert "&lt;script&gt;alert(&#39;type&#39;)" in page.text
    detail = pages[1].text
    assert "&lt;script&gt;alert(" in detail and "&lt;img src=x onerror=" in detail
    assert "&lt;script&gt;alert(&#34;reply&#34;)" in detail


async def test_callback_retry_refuses_a_missing_or_wrong_csrf_token(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(Reply(500, "down"), then=Reply(200, "ok"))
    await api.create_endpoint(receiver.url, kind="callback", retry_policy="none")
    callback_id = await _ask(api)
    assert (await _decided(api, callback_id))["status"] == "Failed"
    for token in (None, "", "forged-token"):
        sent = {} if token is None else {"csrf": token}
        page = await signed_in.post(f"/console/callbacks/{callback_id}/retry", sent)
        assert page.status == 403 and "CSRF" in page.text, token
    await asyncio.sleep(0.3)
    shown = (await api.get(f"/v1/callbacks/{callback_id}")).body
    assert shown["status"] == "Failed" and shown["attempts"] == 1
    assert len(receiver.requests) == 1


async def test_a_session_sees_only_its_tenants_callbacks(
    signed_in: ConsoleUser, api: Api, other: Api, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(500, "down"))
    await other.create_endpoint(receiver.url + "/theirs", kind="callback", retry_policy="none")
    theirs = await _ask(other, {"secret": "their-data"})
    assert (await _decided(other, theirs))["status"] == "Failed"
    await api.create_endpoint(receiver.url + "/mine", kind="callback", retry_policy="none")
    mine = await _ask(api)
    page = await signed_in.get("/console/callbacks")
    assert mine in page.text and theirs not in page.text and "/theirs" not in page.text
    page = await signed_in.get(f"/console/callbacks/{theirs}")
    assert page.status == 404 and "their-" not in page.text
    page = await signed_in.post(f"/console/callbacks/{theirs}/retry",
                                {"csrf": await _session_csrf(signed_in)})
    assert page.status == 404
    await asyncio.sleep(0.3)
    assert (await other.get(f"/v1/callbacks/{theirs}")).body["attempts"] == 1


# --- CSRF --------------------------------------------------------------------------------


async def test_every_state_changing_form_refuses_a_missing_or_wrong_csrf_token(
    signed_in: ConsoleUser, api: Api, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(status=500))
    ep = await api.create_endpoint(receiver.url, retry_policy="none")
    ev = await api.publish("wallets.transaction.created", {"n": 1})
    await api.wait_for_status(ep["id"], ev["id"], "Failed")
    e = f"/console/endpoints/{ep['id']}"
    forms = [
        ("/console/endpoints", {"url": receiver.url + "2"}),
        (e, {"description": "changed"}),
        (e + "/pause", {}), (e + "/resume", {}), (e + "/rotate-secret", {}),
        (e + "/reveal-secret", {}), (e + "/delete", {}), (e + "/replay", {}),
        (f"/console/events/{ev['id']}/retry", {"endpoint_id": ep["id"]}),
        ("/console/sandbox/send", {"endpoint_id": ep["id"],
                                   "type": "wallets.transaction.created"}),
    ]
    before = len(receiver.requests)
    for action, data in forms:
        for token in (None, "", "forged-token"):
            sent = dict(data) if token is None else {**data, "csrf": token}
            page = await signed_in.post(action, sent)
            assert page.status == 403, (action, token, page.status)
            assert "CSRF" in page.text
    shown = (await api.get(f"/v1/endpoints/{ep['id']}")).body
    assert shown["state"] == "active" and shown["description"] == ""
    assert (await api.get(f"/v1/endpoints/{ep['id']}/secret")).body["secret"] == ep["secret"]
    assert len((await api.get("/v1/endpoints")).body["data"]) == 1
    assert (await api.get(f"/v1/endpoints/{ep['id']}/events/{ev['id']}")).body["attempts"] == 1
    assert len(receiver.requests) == before


# --- Isolation ---------------------------------------------------------------------------


async def test_a_session_sees_only_its_tenant(
    signed_in: ConsoleUser, api: Api, other: Api, receiver: Receiver
) -> None:
    theirs = await other.create_endpoint(receiver.url + "/theirs", description="their-endpoint")
    their_event = await other.publish("wallets.transaction.created", {"secret": "their-data"})
    mine = await api.create_endpoint(receiver.url + "/mine")
    index = await signed_in.get("/console/endpoints")
    assert mine["id"] in index.text and theirs["id"] not in index.text
    events = await signed_in.get("/console/events")
    assert their_event["id"] not in events.text
    for path in (f"/console/endpoints/{theirs['id']}", f"/console/events/{their_event['id']}"):
        page = await signed_in.get(path)
        assert page.status == 404 and "their-" not in page.text
    page = await signed_in.get(f"/console/events?endpoint={theirs['id']}")
    assert page.status == 404
    e = f"/console/endpoints/{theirs['id']}"
    csrf = (await signed_in.get("/console/endpoints")).csrf
    for action in (e + "/pause", e + "/delete", e + "/reveal-secret", e + "/rotate-secret"):
        page = await signed_in.post(action, {"csrf": csrf})
        assert page.status == 404 and theirs["secret"] not in page.text
    page = await signed_in.post(f"/console/events/{their_event['id']}/retry",
                                {"csrf": csrf, "endpoint_id": theirs["id"]})
    assert page.status == 404
    assert (await other.get(f"/v1/endpoints/{theirs['id']}")).body["state"] == "active"


# --- Branding, sandbox and read-only scopes (their own daemons or apps) ------------------


async def test_sandbox_page_shows_captures_with_signature_verdicts_and_sends_samples(
    daemon_factory: Any, db_url: str
) -> None:
    capture = CaptureServer()
    await capture.start()
    user: ConsoleUser | None = None
    try:
        daemon = await daemon_factory(DISPATCHER_CONSOLE__SANDBOX_CAPTURE_URL=capture.url)
        async with aiohttp.ClientSession() as http_session:
            server = ApiServer(daemon.url, db_url, daemon)
            me, them = await new_api(http_session, server), await new_api(http_session, server)
            mine = await me.create_endpoint(capture.url + "/mine")
            await them.create_endpoint(capture.url + "/theirs")
            user = ConsoleUser(daemon.url)
            await user.sign_in(me.key)
            page = await user.submit("/console/sandbox", "/console/sandbox/send",
                                     {"endpoint_id": mine["id"],
                                      "type": "wallets.transaction.created"})
            assert page.status == 200 and "Sent a sample wallets.transaction.created" in page.text
            assert "200" in page.text
            await capture.wait_for(1)
            await them.publish("wallets.transaction.created", {"theirs": True})
            await capture.wait_for(2)
            # A forged request at my endpoint: the verdict says so.
            await http_session.post(capture.url + "/mine", data=b'{"forged": true}',
                                    headers={"webhook-id": "msg_x", "webhook-timestamp": "1",
                                             "webhook-signature": "v1,AAAA"})
            await capture.wait_for(3)
            fragment = await user.get("/console/sandbox/requests")
            assert fragment.status == 200
            assert fragment.text.count("signature valid") == 1
            assert fragment.text.count("signature invalid") == 1
            assert "wallets.transaction.created" in fragment.text
            assert "theirs" not in fragment.text  # another tenant's endpoint
            assert fragment.text.index("forged") < fragment.text.index("signature valid")
            page = await user.get("/console/sandbox")
            assert 'data-refresh="/console/sandbox/requests"' in page.text
    finally:
        if user is not None:
            await user.close()
        await capture.stop()


@asynccontextmanager
async def in_process_console(app: web.Application, db_url: str, config: Config,
                             tenant: str) -> AsyncIterator[tuple[ConsoleUser, Api]]:
    """Serve `app` on a free port; yields a console user and an API client with a new
    key of `tenant`."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pool = await create_pool(db_url, config.database)
    async with pool.acquire() as conn:
        key = await create_api_key(conn, tenant)
    await pool.close()
    async with aiohttp.ClientSession() as http_session:
        api_client = Api(http_session, ApiServer(f"http://127.0.0.1:{port}", db_url,
                                                 None),  # type: ignore[arg-type]
                         key, tenant)
        user = ConsoleUser(f"http://127.0.0.1:{port}")
        try:
            yield user, api_client
        finally:
            await user.close()
            await runner.cleanup()


@pytest.fixture
async def read_only_console(
    db_url: str, config: Config
) -> AsyncIterator[tuple[ConsoleUser, Api]]:
    """The console in-process with a resolver that makes every scope read-only: how a
    read-only portal token resolves."""

    async def read_only(request: web.Request, credential: str) -> Scope:
        scope = await resolve_api_key(request, credential)
        return Scope("portal", scope.tenant_id, read_only=True)

    app = create_front_ends(config, db_url)
    app[RESOLVER] = read_only
    async with in_process_console(app, db_url, config, "reader") as served:
        yield served


async def test_a_read_only_session_hides_and_refuses_every_write(
    read_only_console: tuple[ConsoleUser, Api]
) -> None:
    user, api_client = read_only_console
    ep = await api_client.create_endpoint("http://127.0.0.1:9/hook")
    ev = await api_client.publish("wallets.transaction.created", {"n": 1})
    await api_client.create_endpoint("http://127.0.0.1:9/approve", kind="callback")
    cb = (await api_client.post("/v1/callbacks", {"type": "withdrawal.approve",
                                                  "data": {"n": 1}})).body["id"]
    await user.sign_in(api_client.key)
    e = f"/console/endpoints/{ep['id']}"
    pages = {p: await user.get(p) for p in ("/console/endpoints", e, "/console/events",
                                            f"/console/events/{ev['id']}",
                                            "/console/callbacks", f"/console/callbacks/{cb}")}
    assert (await user.get("/console/sandbox")).status == 403  # not part of a portal
    for path, page in pages.items():
        assert page.status == 200, path
        assert "read-only" in page.text
        assert 'method="post"' not in page.text, path
    csrf = re.search(r'name="csrf" value="([^"]*)"', (await user.get("/console/login")).text)
    assert csrf is None  # signed in: the login page redirects to the console
    forms = ["/console/endpoints", e, e + "/pause", e + "/resume", e + "/rotate-secret",
             e + "/reveal-secret", e + "/delete", e + "/replay",
             f"/console/events/{ev['id']}/retry", "/console/sandbox/send",
             f"/console/callbacks/{cb}/retry"]
    session_csrf = await _session_csrf(user)
    for action in forms:
        page = await user.post(action, {"csrf": session_csrf, "url": "http://127.0.0.1:9/x",
                                        "endpoint_id": ep["id"]})
        assert page.status == 403 and "read-only" in page.text, action
        assert ep["secret"] not in page.text
    shown = (await api_client.get(f"/v1/endpoints/{ep['id']}")).body
    assert shown["state"] == "active"
    assert len((await api_client.get("/v1/endpoints")).body["data"]) == 2
    assert (await api_client.get(f"/v1/callbacks/{cb}")).body["status"] == "Pending"


async def _session_csrf(user: ConsoleUser) -> str:
    """The session's CSRF token (every signed-in page carries it in a meta tag), so
    that a refusal can only be for the scope."""
    page = await user.get("/console/events")
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', page.text)
    assert found
    return found.group(1)


@pytest.fixture
async def console_on_a_fake_clock(
    db_url: str, config: Config
) -> AsyncIterator[tuple[ConsoleUser, Api, FakeClock]]:
    """The console in-process on a fake clock (no engine: callbacks stay Pending
    until the test decides them with the store's own functions)."""
    clock = FakeClock(datetime.now(UTC))
    app = create_front_ends(config, db_url, clock)
    async with in_process_console(app, db_url, config, "clocked") as (user, api_client):
        yield user, api_client, clock


async def test_retry_is_offered_only_when_the_api_would_take_it(
    console_on_a_fake_clock: tuple[ConsoleUser, Api, FakeClock], db_url: str, config: Config
) -> None:
    user, api_client, clock = console_on_a_fake_clock
    await api_client.create_endpoint("http://127.0.0.1:9/approve", kind="callback")
    reply = await api_client.post("/v1/callbacks", {"type": "withdrawal.approve", "data": {},
                                                    "deadline_seconds": 60})
    callback_id = reply.body["id"]
    await user.sign_in(api_client.key)
    path = f"/console/callbacks/{callback_id}"
    page = await user.get(path)
    assert page.status == 200 and 'id="status">Pending<' in page.text
    assert f'action="{path}/retry"' not in page.text
    page = await user.post(path + "/retry", {"csrf": await _session_csrf(user)})
    assert page.status == 409 and "only Failed callbacks can be retried" in page.text

    clock.advance(61)
    pool = await create_pool(db_url, config.database)
    try:
        async with pool.acquire() as conn, conn.transaction():
            assert [d.id for d in await expire_overdue(conn, clock.now())] == [
                uuid.UUID(callback_id)]
    finally:
        await pool.close()
    page = await user.get(path)
    assert 'id="status">Failed<' in page.text and "(deadline_expired)" in page.text
    assert f'action="{path}/retry"' not in page.text
    page = await user.post(path + "/retry", {"csrf": await _session_csrf(user)})
    assert page.status == 409 and "deadline has passed" in page.text
    assert (await api_client.get(f"/v1/callbacks/{callback_id}")).body["status"] == "Failed"
