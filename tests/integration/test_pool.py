"""The connection pool: new connections come warm (the hot statements already
prepared on them) and warming writes nothing."""

from __future__ import annotations

import asyncio

import asyncpg

from dispatcher.config import Config
from dispatcher.store.deliveries import warm_claim, warm_record
from dispatcher.store.events import warm_publish
from dispatcher.store.pool import create_pool

_PREPARED = """
SELECT count(*) FILTER (WHERE statement LIKE '%INSERT INTO events%') AS publish,
       count(*) FILTER (WHERE statement LIKE '%INSERT INTO attempts%') AS record,
       count(*) FILTER (WHERE statement LIKE '%SET lease_owner = $2%') AS claim
FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared_statements%'
"""

_ROWS = "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM deliveries) " \
        "+ (SELECT count(*) FROM attempts)"


async def test_new_connections_have_the_hot_statements_prepared(
    db_url: str, config: Config
) -> None:
    warm = await create_pool(db_url, config.database,
                             warm=(warm_publish, warm_record, warm_claim))
    cold = await create_pool(db_url, config.database)
    try:
        async with warm.acquire() as conn:
            assert dict(await conn.fetchrow(_PREPARED)) == {
                "publish": 1, "record": 1, "claim": 1}
            assert await conn.fetchval(_ROWS) == 0  # warming stored nothing
            assert await conn.fetchval("SHOW lock_timeout") == "0"  # left as it was
        async with cold.acquire() as conn:
            assert dict(await conn.fetchrow(_PREPARED)) == {
                "publish": 0, "record": 0, "claim": 0}
    finally:
        await warm.close()
        await cold.close()


async def test_warming_a_connection_leaves_existing_rows_alone(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        before = await conn.fetchval(_ROWS)
        await warm_publish(conn)
        await warm_record(conn)
        await warm_claim(conn)
        assert await conn.fetchval(_ROWS) == before
    finally:
        await conn.close()


async def test_a_locked_table_does_not_hold_up_new_connections(
    db_url: str, config: Config
) -> None:
    """Warming is best effort: with `attempts` locked (a migration, say) a new
    connection skips that statement and serves at once."""
    blocker = await asyncpg.connect(db_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE attempts IN ACCESS EXCLUSIVE MODE")
            async with asyncio.timeout(5):
                pool = await create_pool(db_url, config.database,
                                         warm=(warm_publish, warm_record))
            try:
                async with pool.acquire() as conn:
                    assert dict(await conn.fetchrow(_PREPARED)) == {
                        "publish": 1, "record": 0, "claim": 0}
            finally:
                await pool.close()
    finally:
        await blocker.close()
