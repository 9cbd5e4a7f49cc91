"""Callbacks in the engine with a fake clock: the deadline checked when an outcome is
recorded and by the expiry job, and a decision written once when writers race."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.engine.callbacks import CallbackRecorder
from dispatcher.model import DeliveryStatus
from dispatcher.store import callbacks as store
from dispatcher.store.callbacks import Answer
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Receiver, Reply

POLICY = '{kind = "fixed", delays = [30.0, 40.0, 40.0]}'


async def callback_endpoint(h: EngineHarness, url: str, policy: str = "slow") -> tuple[UUID, UUID]:
    async with h.pool.acquire() as conn:
        tenant = await make_tenant(conn)
        endpoint_id, _ = await make_endpoint(conn, h.box, tenant, url, retry_policy=policy)
        await conn.execute("UPDATE endpoints SET kind = 'callback', event_types = '{}' "
                           "WHERE id = $1", endpoint_id)
    return tenant, endpoint_id


async def new_callback(h: EngineHarness, tenant: UUID, endpoint_id: UUID,
                       deadline_seconds: float, retries: int = 3) -> UUID:
    now = h.clock.now()
    cid = uuid.uuid4()
    data = {"amount": "1"}
    async with h.pool.acquire() as conn, conn.transaction():
        assert await store.create_callback(conn, store.NewCallback(
            cid, tenant, endpoint_id, "withdrawal.approve", data,
            store.callback_body(cid, "withdrawal.approve", now, data, "standard-v1"),
            now + timedelta(seconds=deadline_seconds), None, retries), now)
    return cid


async def view(h: EngineHarness, tenant: UUID, cid: UUID) -> store.CallbackView:
    async with h.pool.acquire() as conn:
        found = await store.get_callback(conn, tenant, cid)
    assert found is not None
    return found


async def wait_for(h: EngineHarness, tenant: UUID, cid: UUID,
                   done: Callable[[store.CallbackView], bool]) -> store.CallbackView:
    async with asyncio.timeout(10):
        while not done(found := await view(h, tenant, cid)):
            await asyncio.sleep(0.02)
    return found


async def test_the_next_attempt_after_the_deadline_fails_it_with_deadline_expired(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    receiver.reply_with(then=Reply(503, "busy"))
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        cid = await new_callback(h, tenant, endpoint_id, deadline_seconds=60)
        worker = await h.start_worker()
        worker.outcome_hooks.append(CallbackRecorder(config).record)
        first = await wait_for(h, tenant, cid, lambda c: c.attempts == 1)
        assert str(first.status) == "Retrying" and first.failure_reason == "http_status"
        h.advance(30)  # second attempt at +30 s; the next would be at +70 s > +60 s
        failed = await wait_for(h, tenant, cid, lambda c: c.decided)
    assert str(failed.status) == "Failed" and failed.failure_reason == "deadline_expired"
    assert failed.attempts == 2 and failed.delivery_status == DeliveryStatus.FAILED
    assert len(receiver.requests) == 2


async def test_an_answer_recorded_after_the_deadline_does_not_count(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        cid = await new_callback(h, tenant, endpoint_id, deadline_seconds=10)
        clock = h.clock
        assert isinstance(clock, FakeClock)

        def late_ok(_req: Any, _n: int) -> Reply:
            clock.advance(11)  # the answer comes back after the deadline
            return Reply(200, "ok")

        receiver.script = late_ok
        worker = await h.start_worker()
        worker.outcome_hooks.append(CallbackRecorder(config).record)
        failed = await wait_for(h, tenant, cid, lambda c: c.decided)
    assert str(failed.status) == "Failed" and failed.decision is None
    assert failed.failure_reason == "deadline_expired"


async def test_the_expiry_job_fails_held_callbacks_at_their_deadline(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        await h.pool.execute("UPDATE endpoints SET state = 'paused' WHERE id = $1", endpoint_id)
        cid = await new_callback(h, tenant, endpoint_id, deadline_seconds=60)
        recorder = CallbackRecorder(config)
        async with h.pool.acquire() as conn:
            h.advance(59)
            assert await recorder.expire(conn, h.clock.now()) == 0
            assert not (await view(h, tenant, cid)).decided
            h.advance(2)
            assert await recorder.expire(conn, h.clock.now()) == 1
            assert await recorder.expire(conn, h.clock.now()) == 0
        failed = await view(h, tenant, cid)
    assert str(failed.status) == "Failed" and failed.failure_reason == "deadline_expired"
    assert failed.delivery_status == DeliveryStatus.FAILED and failed.held_since is None
    assert receiver.requests == []


async def test_racing_writers_record_one_decision(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        cid = await new_callback(h, tenant, endpoint_id, deadline_seconds=60)
        delivery_id = (await view(h, tenant, cid)).delivery_id
        now = h.clock.now()

        def answer(decision: str) -> Answer:
            return Answer(delivery_id, decision, DeliveryStatus.SUCCESS, now, None)

        first: asyncpg.Connection = await asyncpg.connect(db_url)
        second: asyncpg.Connection = await asyncpg.connect(db_url)
        try:
            tx = first.transaction()
            await tx.start()
            won = await store.record_answers(first, [answer("ok")], now)
            # The second writer waits on the row until the first commits, then finds
            # the callback decided and changes nothing.
            racing = asyncio.create_task(_in_transaction(second, answer("deny"), now))
            await asyncio.sleep(0.2)
            assert not racing.done()
            await tx.commit()
            lost = await racing
        finally:
            await first.close()
            await second.close()
        final = await view(h, tenant, cid)
    assert [d.outcome for d in won] == ["ok"] and lost == []
    assert final.decision == "ok" and final.delivery_status == DeliveryStatus.SUCCESS


async def _in_transaction(conn: asyncpg.Connection, answer: Answer,
                          now: Any) -> list[store.Decided]:
    async with conn.transaction():
        return await store.record_answers(conn, [answer], now)
