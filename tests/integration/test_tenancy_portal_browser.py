"""A portal link opened in a real headless Chromium signs the customer in to its
tenant, and the token leaves the address bar."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from tests.integration import test_api_support as support
from tests.integration.test_api_support import ApiServer, new_api
from tests.integration.test_console_browser import browser, pytestmark  # noqa: F401

api_server = support.api_server


async def test_a_portal_link_signs_in_to_its_tenant_in_a_browser(
    api_server: ApiServer, browser: Any,  # noqa: F811
) -> None:
    async with aiohttp.ClientSession() as http:
        mine, theirs = await new_api(http, api_server), await new_api(http, api_server)
        ep = await mine.create_endpoint("https://mine.example.com/in")
        other = await theirs.create_endpoint("https://theirs.example.com/in")
        link = (await mine.post("/v1/portal-links", {"read_only": True})).body
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(link["url"])
        await page.wait_for_url(re.compile(r".*/console/endpoints$"))
        text = await page.content()
        assert ep["id"] in text and other["id"] not in text
        assert "read-only" in text
        assert link["token"] not in page.url
    finally:
        await context.close()
