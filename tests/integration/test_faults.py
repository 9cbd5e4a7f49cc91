"""Faults under a real daemon: its PostgreSQL is not up yet at start, goes away for
5 s in the middle of a publishing burst, and the daemon is killed while its outcome
write is stuck. Nothing accepted is lost; the daemon recovers without a restart."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from dispatcher.store.embedded import EmbeddedPostgres
from tests.conftest import TEST_ENV
from tests.integration.test_daemon import admin_key, get, kill_leftover_postgres, pg_home
from tests.support.daemon import DaemonProcess
from tests.support.receiver import Receiver, Reply

__all__ = ["pg_home"]  # the fixture, imported for these tests


async def _create_endpoint(http: aiohttp.ClientSession, url: str, key: str, target: str) -> str:
    async with http.post(url + "/v1/endpoints", json={"url": target, "max_in_flight": 50},
                         headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 201, await resp.text()
        endpoint_id: str = (await resp.json())["id"]
        return endpoint_id


async def test_a_daemon_started_before_its_database_waits_then_serves(
    pg_home: Path, tmp_path: Path
) -> None:
    server = EmbeddedPostgres(pg_home / "own")
    dsn = await asyncio.to_thread(server.start)
    await asyncio.to_thread(server.stop)
    daemon = DaemonProcess({**TEST_ENV, "DISPATCHER_DATABASE_URL": dsn,
                            "DISPATCHER_DATA_DIR": str(tmp_path / "data")},
                           tmp_path / "daemon.log")
    try:
        daemon.spawn()
        async with asyncio.timeout(20):
            while True:
                try:
                    if (await get(daemon.url + "/healthz"))[0] == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        status, body = await get(daemon.url + "/readyz")
        assert status == 503 and body["reason"].startswith("database: waiting")
        async with aiohttp.ClientSession() as http, http.post(
                daemon.url + "/v1/events", json={"type": "transaction", "data": {}}) as resp:
            assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"]["code"] == "database_unavailable"
        await asyncio.sleep(2)  # still waiting, retrying with backoff, not exiting
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.log().count('"database.waiting"') >= 2

        assert await asyncio.to_thread(server.start) == dsn
        await daemon.wait_ready(30)
        key = admin_key(daemon)
        assert key is not None
        async with aiohttp.ClientSession() as http, http.post(
                daemon.url + "/v1/events", json={"type": "transaction", "data": {}},
                headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 202
        assert await daemon.stop() == 0
    finally:
        await daemon.stop(signal.SIGKILL)
        await asyncio.to_thread(server.stop)
        kill_leftover_postgres(server.pgdata)


async def test_the_database_gone_for_5_s_mid_burst_loses_nothing(
    pg_home: Path, tmp_path: Path, receiver: Receiver
) -> None:
    server = EmbeddedPostgres(pg_home / "own")
    dsn = await asyncio.to_thread(server.start)
    daemon = DaemonProcess({**TEST_ENV, "DISPATCHER_DATABASE_URL": dsn,
                            "DISPATCHER_DATA_DIR": str(tmp_path / "data")},
                           tmp_path / "daemon.log")
    try:
        await daemon.start()
        key = admin_key(daemon)
        assert key is not None
        accepted: dict[str, str] = {}  # Idempotency-Key -> event id
        refused = Counter[int]()
        restarted_at: list[float] = []

        async with aiohttp.ClientSession() as http:
            await _create_endpoint(http, daemon.url, key, receiver.url)

            async def publish(n: int) -> None:
                # A publisher that retries 503s and dropped connections with its key.
                while True:
                    try:
                        async with http.post(
                                daemon.url + "/v1/events",
                                json={"type": "transaction", "data": {"n": n}},
                                headers={"Authorization": f"Bearer {key}",
                                         "Idempotency-Key": f"k{n}"}) as resp:
                            if resp.status == 202:
                                accepted[f"k{n}"] = (await resp.json())["id"]
                                return
                            assert resp.status == 503, await resp.text()
                            assert (await resp.json())["error"]["code"] == "database_unavailable"
                            refused[resp.status] += 1
                    except aiohttp.ClientError:
                        refused[0] += 1
                    await asyncio.sleep(0.2)

            async def burst() -> None:
                for n in range(300):
                    asyncio.get_running_loop().create_task(publish(n))
                    await asyncio.sleep(0.03)  # ~9 s of publishing

            async def outage() -> None:
                await asyncio.sleep(2)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(5)
                assert await asyncio.to_thread(server.start) == dsn
                restarted_at.append(time.monotonic())

            await asyncio.gather(burst(), outage())
            async with asyncio.timeout(60):
                while len(accepted) < 300:
                    await asyncio.sleep(0.1)
            await receiver.wait_for(300, timeout=60)

        assert refused[503] > 0, "the outage should have been seen by publishers"
        ids = Counter(r.headers["webhook-id"] for r in receiver.requests)
        assert set(ids) == set(accepted.values())  # nothing accepted is lost
        after = [r.at for r in receiver.requests if r.at > restarted_at[0]]
        assert after and after[0] - restarted_at[0] < 5  # delivery resumed, no restart
        conn = await asyncpg.connect(dsn)
        try:  # one event per Idempotency-Key, however often it was retried
            assert await conn.fetchval("SELECT count(*) FROM events") == 300
        finally:
            await conn.close()
        assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        await daemon.stop()
        await asyncio.to_thread(server.stop)
        kill_leftover_postgres(server.pgdata)


async def test_kill_9_while_the_outcome_write_is_stuck_loses_nothing(
    db_url: str, receiver: Receiver, daemon_factory: Callable[..., Any]
) -> None:
    env = {"DISPATCHER_SERVER__WORKERS": "1", "DISPATCHER_DELIVERY__LEASE_SECONDS": "5"}
    daemon: DaemonProcess = await daemon_factory(**env)
    key = admin_key(daemon)
    assert key is not None
    receiver.reply_with(then=Reply(200))
    lock = await asyncpg.connect(db_url)
    try:
        async with aiohttp.ClientSession() as http:
            await _create_endpoint(http, daemon.url, key, receiver.url)
            # Attempts cannot be written while this transaction holds the table.
            tx = lock.transaction()
            await tx.start()
            await lock.execute("LOCK TABLE attempts IN EXCLUSIVE MODE")
            async with http.post(daemon.url + "/v1/events/batch",
                                 json={"events": [{"type": "transaction", "data": {"n": n}}
                                                  for n in range(50)]},
                                 headers={"Authorization": f"Bearer {key}"}) as resp:
                assert resp.status == 202
            await receiver.wait_for(50, timeout=20)  # sent; the outcomes wait on the lock
            await asyncio.sleep(0.3)
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(daemon.proc.wait)
            await tx.rollback()
        unwritten = await lock.fetchval("SELECT count(*) FROM deliveries WHERE status < 2")
        assert unwritten == 50  # the kill landed before any outcome was written

        await daemon_factory(**env)
        async with asyncio.timeout(30):
            while await lock.fetchval("SELECT count(*) FROM deliveries WHERE status = 2") < 50:
                await asyncio.sleep(0.1)
        ids = Counter(r.headers["webhook-id"] for r in receiver.requests)
        assert len(ids) == 50 and max(ids.values()) == 2  # sent again: at least once
        # Each delivery's attempt log agrees with its row: no attempt lost or doubled.
        bad = await lock.fetchval(
            """SELECT count(*) FROM deliveries d
               WHERE d.attempts <> (SELECT count(*) FROM attempts a WHERE a.delivery_id = d.id)""")
        assert bad == 0
    finally:
        await lock.close()
