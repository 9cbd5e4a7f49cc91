"""One embedded PostgreSQL per test session; a migrated template database cloned
per test so tests are isolated and start in milliseconds."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from dispatcher.store.embedded import EmbeddedPostgres
from dispatcher.store.migrate import migrate_dsn

TEMPLATE = "dispatcher_template"


class TestPostgres:
    def __init__(self, root: Path) -> None:
        self.server = EmbeddedPostgres(root)
        self.server.start()

    def uri(self, database: str | None = None) -> str:
        return self.server.uri(database)

    def build_template(self) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(self.uri())
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
                await conn.execute(f"CREATE DATABASE {TEMPLATE}")
            finally:
                await conn.close()
            await migrate_dsn(self.uri(TEMPLATE))

        asyncio.run(go())

    async def clone(self) -> str:
        """A fresh migrated database; returns its DSN."""
        name = "t_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(self.uri())
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        finally:
            await conn.close()
        return self.uri(name)

    async def drop(self, dsn: str) -> None:
        name = dsn.rsplit("/", 1)[1].split("?")[0]
        conn = await asyncpg.connect(self.uri())
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    def stop(self) -> None:
        self.server.stop()
