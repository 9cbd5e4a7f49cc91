"""The asyncpg pool: JSON codecs registered once per connection."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from dispatcher.config import DatabaseConfig

# What store functions take: a plain connection or one acquired from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy


log = structlog.get_logger(__name__)

# Runs a hot statement once on a new connection (see create_pool).
Warmer = Callable[[asyncpg.Connection], Awaitable[None]]
WARM_LOCK_TIMEOUT_MS = 100


async def _init_connection(conn: asyncpg.Connection, warm: Sequence[Warmer] = ()) -> None:
    # jsonb columns come back as Python objects and go in as them.
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, encoder=_dumps, decoder=json.loads, schema="pg_catalog"
        )
    if not warm:
        return
    # Best effort: with a table locked (a migration, an operator's LOCK) that statement
    # is prepared on first use instead; the connection must not wait for the lock
    # before serving requests that need none.
    await conn.execute(f"SET lock_timeout = '{WARM_LOCK_TIMEOUT_MS}ms'")
    for warmer in warm:
        try:
            await warmer(conn)
        except asyncpg.LockNotAvailableError:
            log.info("pool.warm_skipped", warmer=getattr(warmer, "__name__", str(warmer)))
    await conn.execute("RESET lock_timeout")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def create_pool(
    dsn: str, cfg: DatabaseConfig, server_settings: dict[str, str] | None = None,
    warm: Sequence[Warmer] = (),
) -> asyncpg.Pool:
    """`warm`: statements each new connection runs once before it is handed out. A
    connection's first run of a statement pays for parsing, planning and the server
    backend's first look at the tables (a few ms for the publish statement); a daemon
    that had not paid that at start answered its first requests slowly, which made
    them overlap and open more cold connections (p99 at 200 publishes/s: 8 ms cold,
    4 ms warm)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=cfg.pool_min_size,
        max_size=cfg.pool_max_size,
        init=partial(_init_connection, warm=warm),
        command_timeout=60,
        server_settings=server_settings,
    )
    assert pool is not None
    return pool


# Everything a database call may raise.
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
             asyncpg.exceptions._base.InternalClientError)

# The subset that says the database is unreachable, restarting or overloaded, not
# that a statement or its data is wrong: the same work may succeed later as it is.
# InternalClientError: a connection that broke mid-statement can fail again when the
# pool resets it on release ("cannot switch to state 15"); seen with the server stopped.
DB_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError,
                  asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError,
                  asyncpg.InsufficientResourcesError, asyncpg.TransactionRollbackError,
                  asyncpg.exceptions._base.InternalClientError)
