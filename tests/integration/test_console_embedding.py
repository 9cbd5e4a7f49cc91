"""`[console] frame_ancestors`: by default nothing may frame the console (CSP
frame-ancestors 'none', X-Frame-Options DENY, SameSite=Strict cookies); with origins
configured those origins may (and only they), and the cookies are SameSite=None;
Secure so the signed-in portal works inside the provider's page. A value that could
smuggle CSP is refused at start-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from dispatcher.errors import ConfigError

DASHBOARD = "https://dashboard.example.com"


async def _login_page(url: str) -> tuple[dict[str, str], list[str]]:
    async with aiohttp.ClientSession() as http, http.get(url + "/console/login") as resp:
        assert resp.status == 200
        return dict(resp.headers), resp.headers.getall("Set-Cookie", [])


async def test_only_the_configured_origins_may_frame_the_console(
    daemon_factory: Callable[..., Any]
) -> None:
    default = await daemon_factory()
    headers, cookies = await _login_page(default.url)
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert cookies and all("SameSite=Strict" in c for c in cookies)

    embedded = await daemon_factory(
        DISPATCHER_CONSOLE__FRAME_ANCESTORS=f'["{DASHBOARD}", "https://admin.example.com:8443"]')
    headers, cookies = await _login_page(embedded.url)
    csp = headers["Content-Security-Policy"]
    assert f"frame-ancestors {DASHBOARD} https://admin.example.com:8443;" in csp
    assert "script-src 'self'" in csp  # the rest of the policy is unchanged
    assert "X-Frame-Options" not in headers
    assert cookies and all("SameSite=None" in c and "Secure" in c for c in cookies)


@pytest.mark.parametrize("origin", ["https://x.example.com; script-src *", "dashboard.example.com",
                                    "https://x.example.com/path", "'self'"])
def test_an_origin_that_is_not_one_is_refused(make_config: Callable[..., Any],
                                              origin: str) -> None:
    with pytest.raises(ConfigError, match="frame_ancestors"):
        make_config(console__frame_ancestors=f'["{origin}"]' if '"' not in origin else "[]")
