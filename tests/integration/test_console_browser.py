"""The web console in a real headless Chromium (Playwright driving the system's
browser): sign in, create an endpoint, see a published event with its attempt,
retry it, pause/resume, reveal a secret behind its confirm, watch the sandbox
update live, make a callback endpoint and retry a Failed callback until it is
approved, and check that a hostile payload neither runs nor injects markup and
that another tenant's session sees none of it (nor the operator view, where an
operator key sees every tenant and opens one's pages). Every page is saved as a PNG under
the test's temporary directory (and copied to $DISPATCHER_CONSOLE_SCREENSHOTS when
set, which is how the README's screenshots are made)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatcher.sandbox.capture import CaptureServer
from dispatcher.store.tenants import create_operator_key
from tests.integration.test_api_support import Api, ApiServer, new_api
from tests.support.receiver import Receiver, Reply

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium)")

HOSTILE = {"note": "<script>window.__pwned = 1; alert('script')</script>",
           "img": '<img src=x onerror="window.__pwned = 2; alert(\'img\')">'}


class Shots:
    def __init__(self, where: Path) -> None:
        self.where = where
        copy_to = os.environ.get("DISPATCHER_CONSOLE_SCREENSHOTS")
        self.copy_to = Path(copy_to) if copy_to else None
        where.mkdir(parents=True, exist_ok=True)
        if self.copy_to:
            self.copy_to.mkdir(parents=True, exist_ok=True)

    async def take(self, page: Any, name: str) -> None:
        path = self.where / f"console-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        if self.copy_to:
            shutil.copy(path, self.copy_to / path.name)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def capture() -> AsyncIterator[CaptureServer]:
    server = CaptureServer()
    await server.start()
    yield server
    await server.stop()


async def _sign_in(browser: Any, base: str, key: str, shots: Shots | None = None) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    await page.goto(base + "/console/login")
    if shots:
        await shots.take(page, "login")
    await page.fill("input[name=key]", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r".*/console/endpoints$"))
    return page


async def _ask(api: Api, data: Any) -> str:
    reply = await api.post("/v1/callbacks", {"type": "withdrawal.approve", "data": data})
    assert reply.status == 202, reply
    callback_id: str = reply.body["id"]
    return callback_id


async def _decided(api: Api, callback_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await api.get(f"/v1/callbacks/{callback_id}?wait=20")).body
    assert body["status"] in ("Approved", "Denied", "Failed"), body
    return body


async def test_console_in_a_real_browser(
    daemon_factory: Any, browser: Any, db_url: str, receiver: Receiver,
    capture: CaptureServer, tmp_path: Path, make_receiver: Any,
) -> None:
    # daemon_factory first: the browser closes (its polling page too) before the
    # daemon stops, which would otherwise wait out its grace period for them.
    shots = Shots(tmp_path / "screenshots")
    receiver.reply_with(Reply(status=500, body='{"error": "database is down"}',
                              headers={"Content-Type": "application/json"}))
    daemon = await daemon_factory(DISPATCHER_CONSOLE__SANDBOX_CAPTURE_URL=capture.url)
    approver: Receiver = await make_receiver()
    base = daemon.url
    async with aiohttp.ClientSession() as http:
        server = ApiServer(base, db_url, daemon)
        me: Api = await new_api(http, server)
        them: Api = await new_api(http, server)

        page = await _sign_in(browser, base, me.key, shots)
        dialogs: list[str] = []

        async def confirm(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.on("dialog", confirm)
        csp_errors: list[str] = []
        page.on("console", lambda m: csp_errors.append(m.text)
                if "Content Security Policy" in m.text else None)

        # Create an endpoint through the form.
        await page.fill("#create-endpoint input[name=url]", receiver.url)
        await page.fill("#create-endpoint input[name=description]", "Order service")
        await page.select_option("#create-endpoint select[name=retry_policy]", "none")
        await page.click("#create-endpoint button[type=submit]")
        await page.wait_for_selector("#secret-value")
        endpoint_id = (await me.get("/v1/endpoints")).body["data"][0]["id"]
        sandbox_ep = await me.create_endpoint(capture.url + "/orders",
                                              description="sandbox receiver")

        # Publish through the API; the first attempt fails.
        ev = await me.publish("wallets.transaction.created", HOSTILE)
        await me.wait_for_status(endpoint_id, ev["id"], "Failed")
        await me.wait_for_status(sandbox_ep["id"], ev["id"], "Success")

        await page.goto(base + "/console/events")
        row = page.locator("#events tbody tr", has_text=ev["id"])
        await row.wait_for()
        assert "Failed" in await row.inner_text() and "Success" in await row.inner_text()
        await shots.take(page, "events")

        await row.locator("a").click()
        await page.wait_for_url(re.compile(rf".*/console/events/{ev['id']}$"))
        payload = await page.inner_text("#payload")
        assert "<script>window.__pwned" in payload and '<img src=x onerror=' in payload
        assert "Attempt 1" in await page.inner_text("main")
        assert "database is down" in await page.inner_text("main")
        await shots.take(page, "event")

        # Retry from the page; the receiver now answers 200.
        await page.click("form.retry button")
        await page.wait_for_url(re.compile(r".*\?done=retried$"))
        await me.wait_for_status(endpoint_id, ev["id"], "Success")
        await page.reload()
        assert "Attempt 2" in await page.inner_text("main")

        # Pause and resume; reveal the secret behind its confirm.
        await page.goto(base + f"/console/endpoints/{endpoint_id}")
        await page.click("#pause")
        await page.wait_for_selector("#state:has-text('paused')")
        assert (await me.get(f"/v1/endpoints/{endpoint_id}")).body["state"] == "paused"
        await page.click("#resume")
        await page.wait_for_selector("#state:has-text('active')")
        secret = (await me.get(f"/v1/endpoints/{endpoint_id}/secret")).body["secret"]
        assert secret not in await page.content()
        await page.click("#reveal")
        await page.wait_for_selector("#secret-value")
        assert await page.inner_text("#secret-value") == secret
        assert dialogs == ["Show the signing secret on screen?"]
        await page.goto(base + f"/console/endpoints/{endpoint_id}")
        await shots.take(page, "endpoint")

        # The sandbox: send a sample, then watch a new capture arrive without reloading.
        await page.goto(base + "/console/sandbox")
        await page.select_option("#send-sample select[name=endpoint_id]", sandbox_ep["id"])
        await page.select_option("#send-sample select[name=type]",
                                 "wallets.transaction.succeeded")
        await page.click("#send-sample button")
        await page.wait_for_selector("text=Sent a sample wallets.transaction.succeeded")
        before = await page.locator("#captures details.capture").count()
        assert before == 2
        await me.publish("wallets.transaction.updated", {"live": True})
        # Polled from here: the page's CSP rightly refuses Playwright's eval-based waits.
        for _ in range(150):
            if await page.locator("#captures details.capture").count() == 3:
                break
            await asyncio.sleep(0.1)
        assert await page.locator("#captures details.capture").count() == 3
        assert await page.locator("#captures >> text=signature valid").count() == 3
        await shots.take(page, "sandbox")

        # A callback endpoint made through the form; callbacks asked through the API.
        await page.goto(base + "/console/endpoints")
        await page.fill("#create-endpoint input[name=url]", approver.url)
        await page.fill("#create-endpoint input[name=description]", "Withdrawal approvals")
        await page.select_option("#create-endpoint select[name=kind]", "callback")
        await page.select_option("#create-endpoint select[name=retry_policy]", "none")
        await page.click("#create-endpoint button[type=submit]")
        await page.wait_for_selector("#kind:has-text('callback')")
        approver.reply_with(Reply(500, '{"error": "approval service restarting"}',
                                  headers={"Content-Type": "application/json"}),
                            Reply(200, "ok"), Reply(200, "deny"), then=Reply(200, "maybe"))
        first = await _ask(me, HOSTILE)
        assert (await _decided(me, first))["status"] == "Failed"
        await page.goto(base + "/console/callbacks")
        await page.locator("#callbacks tbody tr", has_text=first).locator("a").click()
        await page.wait_for_url(re.compile(rf".*/console/callbacks/{first}$"))
        assert "<script>window.__pwned" in await page.inner_text("#payload")
        assert "approval service restarting" in await page.inner_text("main")
        await page.click("#retry")
        await page.wait_for_url(re.compile(r".*\?done=retried$"))
        assert (await _decided(me, first))["decision"] == "ok"
        await page.goto(base + f"/console/callbacks/{first}")
        assert (await page.inner_text("#decision")).startswith("ok at ")
        assert "Attempt 2" in await page.inner_text("main")
        assert await page.locator("#retry").count() == 0
        await shots.take(page, "callback")
        # Two more, answered by what they ask: their requests may arrive in either order.
        approver.script = lambda req, n: Reply(200, "deny" if b'"12.00"' in req.body
                                               else "maybe")
        denied, unsure = await _ask(me, {"amount": "12.00"}), await _ask(me, {"amount": "3"})
        assert (await _decided(me, denied))["decision"] == "deny"
        assert (await _decided(me, unsure))["failure_reason"] == "no_decision"
        await page.goto(base + "/console/callbacks")
        statuses = await page.locator("#callbacks tbody tr .status").all_inner_texts()
        assert statuses == ["Failed", "Denied", "Approved"]
        await shots.take(page, "callbacks")
        await page.goto(base + "/console/endpoints")
        await shots.take(page, "endpoints")

        # Nothing of the hostile payload ran or became markup, on any page visited.
        assert await page.evaluate("window.__pwned") is None
        for path in (f"/console/events/{ev['id']}", "/console/events",
                     f"/console/callbacks/{first}", "/console/callbacks"):
            await page.goto(base + path)
            assert await page.evaluate("window.__pwned") is None
            assert await page.locator("img[src=x]").count() == 0
            assert await page.locator("main script").count() == 0
        assert dialogs == ["Show the signing secret on screen?"]
        assert csp_errors == []

        # Another tenant's session sees none of it.
        theirs = await _sign_in(browser, base, them.key)
        assert receiver.url not in await theirs.content()
        assert endpoint_id not in await theirs.content()
        await theirs.goto(base + "/console/events")
        assert ev["id"] not in await theirs.content()
        response = await theirs.goto(base + f"/console/events/{ev['id']}")
        assert response is not None and response.status == 404
        assert "window.__pwned" not in await theirs.content()
        await theirs.goto(base + "/console/callbacks")
        assert first not in await theirs.content()
        response = await theirs.goto(base + f"/console/callbacks/{first}")
        assert response is not None and response.status == 404
        await theirs.goto(base + "/console/sandbox")
        assert await theirs.locator("#captures details.capture").count() == 0
        assert await theirs.locator("a[href='/console/tenants']").count() == 0
        response = await theirs.goto(base + "/console/tenants")
        assert response is not None and response.status == 403

        # The operator view: every tenant with its statistics, and into one's pages.
        conn = await asyncpg.connect(db_url)
        try:
            operator_key = await create_operator_key(conn, "browser")
        finally:
            await conn.close()
        operator = await _sign_in(browser, base, operator_key)
        await operator.click("a[href='/console/tenants']")
        row = operator.locator("#tenants tbody tr", has_text=me.tenant)
        await row.wait_for()
        assert "Success" in await row.inner_text()
        assert (await operator.inner_text("#queue-depth")).split()[0].isdigit()
        await shots.take(operator, "tenants")
        await row.locator("button").click()
        await operator.wait_for_url(re.compile(r".*/console/endpoints$"))
        assert f"acting for {me.tenant}" in await operator.inner_text("header")
        assert endpoint_id in await operator.content()
