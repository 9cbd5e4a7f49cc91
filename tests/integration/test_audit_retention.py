"""Audit retention under a fake clock: entries older than health.retention_days (or
a longer audit.retention_days) go, the newest always stays, the chain still
verifies from the retention's anchor, and an entry removed beside retention is
named by verification."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.errors import ConfigError
from dispatcher.maintenance import Maintenance
from dispatcher.store import audit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACTOR = audit.Actor("local", "cli:test", "cli")


async def add(pool: asyncpg.Pool, at: datetime, n: int = 1) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await audit.append(conn, at, ACTOR, [
            audit.Change("tenant.create", "tenant", str(uuid4()), None, {"i": i})
            for i in range(n)])


async def test_retention_keeps_the_chain_verifiable(
    pool: asyncpg.Pool, make_config: Callable[..., Config]
) -> None:
    config = make_config(health__retention_days="30")
    await add(pool, T0, 3)  # old
    await add(pool, T0 + timedelta(days=40), 2)  # recent
    clock = FakeClock(T0 + timedelta(days=45))
    result = await Maintenance(pool, config, clock).retention()
    assert result is not None and result.audit_entries == 3
    async with pool.acquire() as conn:
        seqs = [r["seq"] for r in await conn.fetch("SELECT seq FROM audit_log ORDER BY seq")]
        verdict = await audit.verify_chain(conn)
        anchor = await conn.fetchval(
            "SELECT changes::text FROM audit_log WHERE action = 'audit.retention'")
    assert seqs == [4, 5, 6]  # the two recent ones and the retention's own entry
    assert verdict.ok, verdict
    assert verdict.first_seq == 4 and verdict.checked == 3
    assert '"deleted_through_seq":3' in anchor

    # Deleting the oldest remaining entry outside retention is named.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL dispatcher.audit_retention = 'on'")
        await conn.execute("DELETE FROM audit_log WHERE seq = 4")
    async with pool.acquire() as conn:
        broken = await audit.verify_chain(conn)
    assert not broken.ok and broken.broken_seq == 5


async def test_the_newest_entry_is_never_deleted(
    pool: asyncpg.Pool, make_config: Callable[..., Config]
) -> None:
    await add(pool, T0, 1)
    clock = FakeClock(T0 + timedelta(days=400))
    result = await Maintenance(pool, make_config(), clock).retention()
    assert result is not None and result.audit_entries == 0
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_a_longer_audit_retention_keeps_entries_longer(
    pool: asyncpg.Pool, make_config: Callable[..., Config]
) -> None:
    config = make_config(health__retention_days="30", audit__retention_days="365")
    await add(pool, T0, 2)
    await add(pool, T0 + timedelta(days=100), 1)
    result = await Maintenance(pool, config, FakeClock(T0 + timedelta(days=120))).retention()
    assert result is not None and result.audit_entries == 0
    result = await Maintenance(pool, config, FakeClock(T0 + timedelta(days=380))).retention()
    assert result is not None and result.audit_entries == 2


def test_audit_retention_shorter_than_the_deliveries_is_refused(
    make_config: Callable[..., Config]
) -> None:
    with pytest.raises(ConfigError, match=r"audit\.retention_days"):
        make_config(health__retention_days="30", audit__retention_days="7")


async def test_concurrent_changes_make_one_gapless_chain(pool: asyncpg.Pool) -> None:
    import asyncio

    await asyncio.gather(*(add(pool, T0 + timedelta(seconds=i), 2) for i in range(20)))
    async with pool.acquire() as conn:
        verdict = await audit.verify_chain(conn)
    assert verdict.ok and verdict.checked == 40 and verdict.last_seq == 40
