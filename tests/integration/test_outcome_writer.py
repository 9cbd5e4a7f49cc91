"""The outcome writer of `dispatcher serve` under database trouble: a row the
database rejects is dropped alone (the rest of its batch is written), a NUL byte in
a receiver's answer is stored, and a writer that cannot write for longer than
`delivery.writer_stall_seconds` makes /readyz answer 503 until it can again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.integration.test_api_support import Api, ApiServer, new_api
from tests.support.receiver import Receiver, Reply

REJECT_418 = """
CREATE FUNCTION reject_418() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.response_status = 418 THEN RAISE EXCEPTION 'no teapots here'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reject_418 BEFORE INSERT ON attempts FOR EACH ROW EXECUTE FUNCTION reject_418();
"""


async def probe(served: Api) -> Any:
    """/readyz over a new connection, so the kernel may pick any worker."""
    async with aiohttp.ClientSession() as http:
        return await Api(http, served.server, served.key, served.tenant).get(
            "/readyz", auth=False)


@pytest.fixture
async def served(daemon_factory: Callable[..., Any], db_url: str) -> AsyncIterator[Api]:
    daemon = await daemon_factory(DISPATCHER_DELIVERY__WRITER_STALL_SECONDS="1",
                                  DISPATCHER_SERVER__WORKERS="2")
    async with aiohttp.ClientSession() as http:
        yield await new_api(http, ApiServer(daemon.url, db_url, daemon))


async def test_a_rejected_row_is_dropped_alone(
    served: Api, receiver: Receiver, db_url: str
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(REJECT_418)
    finally:
        await conn.close()
    # The third request gets 418 (its attempt row is refused), one gets a NUL byte.
    receiver.reply_with(Reply(), Reply(body=b"a\x00b"), Reply(status=418))
    endpoint = await served.create_endpoint(receiver.url, max_in_flight=1)
    events = [await served.publish("transaction", {"n": n}) for n in range(6)]
    await receiver.wait_for(6)
    statuses: dict[str, str] = {}
    async with asyncio.timeout(10):
        while sum(s == "Success" for s in statuses.values()) < 5:
            await asyncio.sleep(0.05)
            for e in events:
                reply = await served.get(f"/v1/endpoints/{endpoint['id']}/events/{e['id']}")
                statuses[e["id"]] = reply.body["status"]
    teapot = receiver.requests[2].headers["webhook-id"]
    assert statuses[teapot] == "Pending"  # not recorded; sent again when its lease ends
    nul = receiver.requests[1].headers["webhook-id"]
    logs = (await served.get(f"/v1/endpoints/{endpoint['id']}/events/{nul}/logs")).body
    assert logs["data"][0]["response"]["body"] == "a\ufffdb"
    assert "rejected by the database" in served.server.daemon.log()
    metrics = (await served.get("/metrics", auth=False)).body
    assert "dispatcher_outcomes_dropped_total 1.0" in metrics


async def test_readyz_is_503_while_outcomes_cannot_be_written(
    served: Api, receiver: Receiver, db_url: str
) -> None:
    await served.create_endpoint(receiver.url)
    blocker = await asyncpg.connect(db_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE attempts IN ACCESS EXCLUSIVE MODE")
        await served.publish("transaction", {"n": 1})
        await receiver.wait_for(1)
        async with asyncio.timeout(10):
            while (ready := await probe(served)).status == 200:
                await asyncio.sleep(0.1)
        assert ready.status == 503
        assert "delivery outcomes unwritten: 1 waiting" in ready.body["reason"]
        # Whichever worker answers (a new connection each time), the answer is the same.
        answers = [(await probe(served)).status for _ in range(8)]
        assert answers == [503] * 8
        metrics = (await served.get("/metrics", auth=False)).body
        assert "dispatcher_outcomes_unwritten 1.0" in metrics
        await tx.rollback()
    finally:
        await blocker.close()
    async with asyncio.timeout(10):
        while (await served.get("/readyz", auth=False)).status != 200:
            await asyncio.sleep(0.1)
