"""Where the database is: the configured URL, or the embedded server in the data dir."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dispatcher.config import Config
from dispatcher.store.embedded import EmbeddedPostgres


@asynccontextmanager
async def database_url(config: Config) -> AsyncIterator[str]:
    """Yield a DSN; when none is configured, run the embedded PostgreSQL meanwhile.
    Another process already running the same embedded server shares it, and it
    stops only when the last user leaves."""
    if config.database.url:
        yield config.database.url
        return
    embedded = EmbeddedPostgres(config.database.data_dir)
    dsn = await asyncio.to_thread(embedded.start)
    try:
        yield dsn
    finally:
        await asyncio.to_thread(embedded.stop)
