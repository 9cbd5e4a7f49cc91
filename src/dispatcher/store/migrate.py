"""Schema migrations: `migrations/NNNN_name.sql`, applied in order, each in its own
transaction, under an advisory lock so that daemons starting together do not race.
Applied files are recorded with a checksum; an edited applied file stops start-up."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from dispatcher.errors import MigrationError
from dispatcher.store.pool import Conn

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same in every dispatcher process.
MIGRATION_LOCK_KEY = 0x6469737061746368  # "dispatch"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """Inside the wheel they sit in the package; in a source checkout at the top."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    files = sorted(p for p in directory.glob("*.sql"))
    found: list[Migration] = []
    for path in files:
        if not _NAME.match(path.name):
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(path.name, path.read_text()))
    numbers = [m.name[:4] for m in found]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"two migration files share a number in {directory}")
    return found


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def _applied(conn: Conn) -> dict[str, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT name, checksum FROM schema_migrations")
    return {r["name"]: r["checksum"] for r in rows}


def _check_drift(applied: dict[str, str], migrations: list[Migration]) -> None:
    for m in migrations:
        if m.name in applied and applied[m.name] != m.checksum:
            raise MigrationError(
                f"migration {m.name} was edited after it was applied "
                f"(recorded checksum {applied[m.name][:12]}, file {m.checksum[:12]}); "
                "restore the file and add a new migration instead"
            )


async def pending_migrations(
    conn: Conn, migrations: list[Migration] | None = None
) -> list[Migration]:
    """What is not applied yet; raises MigrationError on drift."""
    migrations = load_migrations() if migrations is None else migrations
    applied = await _applied(conn)
    _check_drift(applied, migrations)
    return [m for m in migrations if m.name not in applied]


async def migrate(conn: Conn, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every pending migration; returns the names applied."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        done: list[str] = []
        for m in await pending_migrations(conn, migrations):
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                    m.name, m.checksum,
                )
            log.info("migration.applied", name=m.name)
            done.append(m.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def migrate_dsn(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
