"""A console user without a browser: an aiohttp client with its own cookie jar that
signs in through the login form and posts forms with the page's CSRF token."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import aiohttp

CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]
    url: str

    @property
    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, "no CSRF field on the page"
        return html.unescape(found.group(1))


class ConsoleUser:
    def __init__(self, base_url: str) -> None:
        self.base = base_url
        # unsafe: cookies for an IP-address host (127.0.0.1)
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, *, follow: bool = True) -> Page:
        async with self.http.get(self.base + path, allow_redirects=follow) as resp:
            return Page(resp.status, await resp.text(), dict(resp.headers), str(resp.url))

    async def post(self, path: str, data: dict[str, str], *, follow: bool = True) -> Page:
        async with self.http.post(self.base + path, data=data, allow_redirects=follow) as resp:
            return Page(resp.status, await resp.text(), dict(resp.headers), str(resp.url))

    async def sign_in(self, key: str) -> Page:
        form = await self.get("/console/login")
        return await self.post("/console/login", {"key": key, "csrf": form.csrf})

    async def submit(self, page_path: str, action: str, data: dict[str, str] | None = None,
                     *, follow: bool = True) -> Page:
        """Post a form of `page_path` to `action` with the CSRF token shown there."""
        page = await self.get(page_path)
        return await self.post(action, {"csrf": page.csrf, **(data or {})}, follow=follow)

    def session_cookie(self) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == "dispatcher_console":
                return cookie.value
        return None
