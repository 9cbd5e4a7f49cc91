"""Callbacks in the engine with a fake clock: the deadline checked when an outcome is
recorded, when a delivery is about to be sent and by the expiry job, and a decision
written once when writers race."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.engine.callbacks import CallbackRecorder, install
from dispatcher.model import DeliveryStatus
from dispatcher.store import callbacks as store
from dispatcher.store.callbacks import Answer
from dispatcher.store.health import pause_endpoint, resume_endpoint
from dispatcher.store.holds import redrive_chunk
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
        install(await h.start_worker(), config)
        first = await wait_for(h, tenant, cid, lambda c: c.attempts == 1)
        assert str(first.status) == "Retrying" and first.failure_reason == "http_status"
        h.advance(30)  # second attempt at +30 s; the next would be at +70 s > +60 s
        failed = await wait_for(h, tenant, cid, lambda c: c.decided)
    assert str(failed.status) == "Failed" and failed.failure_reason == "deadline_expired"
    assert failed.attempts == 2 and failed.delivery_status == DeliveryStatus.FAILED
    assert len(receiver.requests) == 2


async def test_a_retry_that_would_come_at_the_deadline_is_not_scheduled(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    receiver.reply_with(then=Reply(503, "busy"))
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        cid = await new_callback(h, tenant, endpoint_id, deadline_seconds=30)
        install(await h.start_worker(), config)
        # The retry would be at +30 s, the deadline itself: it could never be sent.
        failed = await wait_for(h, tenant, cid, lambda c: c.attempts == 1)
    assert str(failed.status) == "Failed" and failed.failure_reason == "deadline_expired"
    assert failed.next_retry_at is None and len(receiver.requests) == 1


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
        install(await h.start_worker(), config)
        failed = await wait_for(h, tenant, cid, lambda c: c.decided)
    assert str(failed.status) == "Failed" and failed.decision is None
    assert failed.failure_reason == "deadline_expired"


async def decided_events(h: EngineHarness) -> list[dict[str, Any]]:
    """The `data` of every `callback.decided` event published."""
    rows = await h.pool.fetch("SELECT body FROM events WHERE type = 'callback.decided'")
    return [json.loads(r["body"])["data"] for r in rows]


async def attempt_count(h: EngineHarness, cid: UUID) -> int:
    count: int = await h.pool.fetchval(
        "SELECT count(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE d.event_id = $1", cid)
    return count


async def assert_failed_unsent(h: EngineHarness, tenant: UUID, cid: UUID,
                               attempts: int) -> None:
    """Failed with deadline_expired as the expiry job would have it: the delivery
    finished and free, no attempt logged beyond those made, the tenant told."""
    failed = await wait_for(h, tenant, cid, lambda c: c.decided)
    assert str(failed.status) == "Failed" and failed.failure_reason == "deadline_expired"
    assert failed.delivery_status == DeliveryStatus.FAILED
    assert not failed.leased and failed.held_since is None and failed.next_retry_at is None
    assert failed.attempts == attempts and await attempt_count(h, cid) == attempts
    [event] = await decided_events(h)
    assert (event["id"], event["status"], event["failure_reason"]) == (
        str(cid), "Failed", "deadline_expired")


async def test_a_retry_claimed_after_the_deadline_is_never_sent(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    receiver.reply_with(then=Reply(503, "busy"))
    waiter = await asyncpg.connect(db_url)
    woken: asyncio.Queue[str] = asyncio.Queue()
    await waiter.add_listener(store.NOTIFY_CHANNEL, lambda *args: woken.put_nowait(args[3]))
    try:
        async with EngineHarness(db_url, config, FakeClock()) as h:
            tenant, endpoint_id = await callback_endpoint(h, receiver.url)
            cid = await new_callback(h, tenant, endpoint_id, deadline_seconds=40)
            install(await h.start_worker(), config)
            first = await wait_for(h, tenant, cid, lambda c: c.attempts == 1)
            # The retry is due at +30 s, before the deadline; the worker only gets to
            # it at +45 s, after the deadline.
            assert str(first.status) == "Retrying" and first.next_retry_at is not None
            h.advance(45)
            await assert_failed_unsent(h, tenant, cid, attempts=1)
            assert await asyncio.wait_for(woken.get(), 5) == str(cid)  # ?wait wakes
    finally:
        await waiter.close()
    assert len(receiver.requests) == 1


async def test_a_held_callback_resumed_after_its_deadline_is_not_sent(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        async with h.pool.acquire() as conn:
            await pause_endpoint(conn, endpoint_id, "manual", h.clock.now())
        cid = await new_callback(h, tenant, endpoint_id, deadline_seconds=60)
        install(await h.start_worker(), config)
        h.advance(61)
        # Resumed and re-driven before the expiry job ran.
        async with h.pool.acquire() as conn:
            await resume_endpoint(conn, endpoint_id, h.clock.now())
            assert await redrive_chunk(conn, endpoint_id, h.clock.now(), 10, 1, 30) == 1
        await assert_failed_unsent(h, tenant, cid, attempts=0)
    assert receiver.requests == []


async def test_a_callback_waiting_for_a_slot_past_its_deadline_is_not_sent(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        await h.pool.execute("UPDATE endpoints SET max_in_flight = 1 WHERE id = $1", endpoint_id)
        first, second = [await new_callback(h, tenant, endpoint_id, deadline_seconds=10)
                         for _ in range(2)]
        clock = h.clock
        assert isinstance(clock, FakeClock)

        def slow_ok(_req: Any, _n: int) -> Reply:
            clock.advance(11)  # both deadlines pass while one request is in flight
            return Reply(200, "ok")

        receiver.script = slow_ok
        install(await h.start_worker(), config)
        # Both are claimed together; one is sent (its answer comes too late), the
        # other waits for the endpoint's only slot and finds its deadline passed.
        decided = [await wait_for(h, tenant, cid, lambda c: c.decided)
                   for cid in (first, second)]
    assert [(str(c.status), c.failure_reason) for c in decided] == [
        ("Failed", "deadline_expired")] * 2
    assert len(receiver.requests) == 1
    assert sorted(c.attempts for c in decided) == [0, 1]


async def test_a_callback_claimed_past_its_deadline_does_not_wait_for_a_slot(
    db_url: str, make_config: Callable[..., Any], receiver: Receiver
) -> None:
    config: Config = make_config(retry_policies__slow=POLICY)
    answer = asyncio.Event()

    async def held_ok(_req: Any, _n: int) -> Reply:
        await answer.wait()
        return Reply(200, "ok")

    receiver.script = held_ok
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant, endpoint_id = await callback_endpoint(h, receiver.url)
        await h.pool.execute("UPDATE endpoints SET max_in_flight = 1, timeout_seconds = 10 "
                             "WHERE id = $1", endpoint_id)
        in_flight = await new_callback(h, tenant, endpoint_id, deadline_seconds=100)
        install(await h.start_worker(), config)
        await receiver.wait_for(1)  # holds the endpoint's only slot
        late = await new_callback(h, tenant, endpoint_id, deadline_seconds=10)
        h.advance(20)
        try:
            await assert_failed_unsent(h, tenant, late, attempts=0)
            still = await view(h, tenant, in_flight)
            assert still.leased and still.attempts == 0  # failed without waiting for it
        finally:
            answer.set()
        approved = await wait_for(h, tenant, in_flight, lambda c: c.decided)
    assert approved.decision == "ok" and len(receiver.requests) == 1


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
