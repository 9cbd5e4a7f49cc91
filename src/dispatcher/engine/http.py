"""The process's one outgoing HTTP client: bounded connections, no cookies, and
(unless private networks are allowed) a resolver that refuses internal addresses."""

from __future__ import annotations

import aiohttp

from dispatcher import __version__
from dispatcher.config import Config
from dispatcher.engine.fair import total_slots
from dispatcher.engine.guard import GuardedResolver, guarded_socket_factory

USER_AGENT = f"dispatcher/{__version__}"
# Sent on every request: who we are, and that responses must not be compressed (we
# keep the raw bytes, capped). Set as session headers rather than skip_auto_headers,
# which makes aiohttp copy the request's headers on every request.
SESSION_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}


def create_client_session(config: Config) -> aiohttp.ClientSession:
    guarded = not config.urls.allow_private_networks
    connector = aiohttp.TCPConnector(
        # Room for every request slot, the other tenants' reserve included.
        limit=total_slots(config.delivery.max_concurrency),
        limit_per_host=0,
        ttl_dns_cache=60,
        enable_cleanup_closed=True,
        # The SSRF guard: refuse blocked addresses from DNS and at connect time.
        resolver=GuardedResolver() if guarded else None,
        socket_factory=guarded_socket_factory if guarded else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers=SESSION_HEADERS,
        auto_decompress=False,
    )
