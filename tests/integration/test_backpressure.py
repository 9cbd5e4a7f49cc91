"""Endpoint-wide backpressure against real receivers: a receiver that says "slow
down" is left alone for its Retry-After (by every process), is never paused for it,
keeps its deliveries' retry budgets, and gets its in-flight limit halved and grown
back (AIMD)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import asyncpg
import pytest

from dispatcher.clock import FakeClock, SystemClock
from dispatcher.config import Config
from dispatcher.engine.health import install
from dispatcher.metrics import CONCURRENCY_DECREASES
from dispatcher.model import DeliveryStatus
from dispatcher.secretbox import load_secret_box
from dispatcher.store.backpressure import Pressure, apply_pressure
from dispatcher.store.lookup import event_deliveries, read_gauges
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Received, Receiver, Reply

OKX_RETRIES = 7


def limited_for(seconds: float, retry_after: str | None) -> Callable[[Received, int], Reply]:
    """429 (with `retry_after`, if any) for `seconds` from the first request, then 200."""
    start: list[float] = []

    def script(req: Received, n: int) -> Reply:
        if not start:
            start.append(req.at)
        if req.at - start[0] < seconds:
            return Reply(429, headers={"Retry-After": retry_after} if retry_after else {})
        return Reply()

    return script


def assert_quiet_after_first_429(receiver: Receiver, window: float) -> int:
    """No request arrived during the Retry-After window after the first 429 (those
    already on the wire excepted: 0.2 s of grace); returns the number of 429s."""
    assert isinstance(receiver, StatusReceiver)
    replies = [(r, receiver.statuses[i]) for i, r in enumerate(receiver.requests)]
    first = min(r.at for r, status in replies if status == 429)
    during = [r for r, _ in replies if first + 0.2 < r.at < first + window - 0.05]
    assert not during, f"{len(during)} requests during the backoff"
    return sum(1 for _, status in replies if status == 429)


class StatusReceiver(Receiver):
    """Remembers the status it answered each request with."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[int, int] = {}  # by request number
        inner: list[Callable[[Received, int], Reply]] = [lambda req, n: Reply()]

        def script(req: Received, n: int) -> Reply:
            reply = inner[0](req, n)
            self.statuses[n] = reply.status
            return reply

        self._inner = inner
        self.script = script

    def answer(self, script: Callable[[Received, int], Reply]) -> None:
        self._inner[0] = script


async def _endpoint_state(pool: asyncpg.Pool, endpoint_id: UUID) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT state, failures_since_resume, effective_max_in_flight, rate_limited_until "
        "FROM endpoints WHERE id = $1", endpoint_id)
    assert row is not None
    return row


async def test_a_429_burst_slows_the_endpoint_down_instead_of_pausing_it(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    # Thresholds far below the 200 answers of the burst: a 429 must not count.
    config = make_config(health__window_threshold="5", health__total_threshold="5")
    receiver = StatusReceiver()
    await receiver.start()
    receiver.answer(limited_for(1.0, "2"))
    try:
        async with EngineHarness(db_url, config, SystemClock()) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                                 retry_policy="okx", max_in_flight=10)
            await h.publish(tenant, *[("block", {"n": i}) for i in range(200)])
            install(await h.start_worker(), config)
            await h.wait_status([DeliveryStatus.SUCCESS], 200, timeout=30)
            state = await _endpoint_state(h.pool, endpoint_id)
            retries = await h.pool.fetch("SELECT DISTINCT retries_left FROM deliveries")
            reasons = await h.pool.fetch(
                "SELECT DISTINCT failure_reason FROM attempts WHERE response_status = 429")
    finally:
        await receiver.stop()
    assert state["state"] == "active"
    assert state["failures_since_resume"] == 0
    assert [r["retries_left"] for r in retries] == [OKX_RETRIES]  # no retry spent
    assert [r["failure_reason"] for r in reasons] == ["rate_limited"]
    too_many = assert_quiet_after_first_429(receiver, 2.0)
    assert 1 <= too_many <= 2 * 10
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 200


async def test_503_with_retry_after_backs_off_the_endpoint_and_503_without_does_not(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    config = make_config()
    receiver = StatusReceiver()
    await receiver.start()
    receiver.answer(lambda req, n: Reply(503, headers={"Retry-After": "30"}) if n == 0
                    else Reply(503) if n == 1 else Reply())
    clock = FakeClock()
    try:
        async with EngineHarness(db_url, config, clock) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                                 max_in_flight=1)
            await h.publish(tenant, ("block", {"n": 0}))
            await h.start_worker()
            await h.wait_attempts(1)
            until = None
            async with asyncio.timeout(5):
                while until is None:
                    until = (await _endpoint_state(h.pool, endpoint_id))["rate_limited_until"]
                    await asyncio.sleep(0.02)
            assert until == clock.now() + timedelta(seconds=30)
            async with h.pool.acquire() as conn:
                gauges = await read_gauges(conn, clock.now())
            assert gauges.endpoints_throttled["rate_limited"] == 1
            retries_after_first = await h.pool.fetchval("SELECT retries_left FROM deliveries")
            await h.publish(tenant, ("block", {"n": 1}))
            h.advance(10)  # inside the backoff: nothing goes out
            await asyncio.sleep(0.5)
            assert len(receiver.requests) == 1
            h.advance(25)  # past it: both due (a plain 503 then spends a retry)
            await h.wait_attempts(3)
            await h.wait_status([DeliveryStatus.SUCCESS], 1)
            spent = await h.pool.fetch(
                "SELECT a.failure_reason, d.retries_left FROM attempts a "
                "JOIN deliveries d ON d.id = a.delivery_id WHERE a.response_status = 503 "
                "ORDER BY a.id")
    finally:
        await receiver.stop()
    assert retries_after_first == 7  # the standard policy's, untouched
    assert [r["failure_reason"] for r in spent] == ["rate_limited", "http_status"]


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_retry_after_zero_or_in_the_past_backs_off_like_a_429_without_one(
    db_url: str, make_config: Callable[..., Config], retry_after: str
) -> None:
    """The doubling default is the floor: 1 s, then 2 s while the 429s repeat. Without
    it one delivery was sent again as fast as the claim loop turned."""
    config = make_config()
    receiver = StatusReceiver()
    await receiver.start()
    receiver.answer(lambda req, n: Reply(429, headers={"Retry-After": retry_after}))
    clock = FakeClock()
    try:
        async with EngineHarness(db_url, config, clock) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url)
            await h.publish(tenant, ("block", {}))
            await h.start_worker()
            await h.wait_attempts(1)
            await asyncio.sleep(0.5)  # the fake clock stands still: nothing is due
            assert len(receiver.requests) == 1
            until = (await _endpoint_state(h.pool, endpoint_id))["rate_limited_until"]
            assert until == clock.now() + timedelta(seconds=1)
            h.advance(1)
            await h.wait_attempts(2)
            h.advance(1)  # the backoff doubled to 2 s: still inside it
            await asyncio.sleep(0.5)
            assert len(receiver.requests) == 2
            h.advance(1)
            await h.wait_attempts(3)
    finally:
        await receiver.stop()


@pytest.mark.parametrize(("policy", "retries"), [("exponential-3", 3), ("standard", 7)])
async def test_retries_left_after_a_rate_limited_attempt_is_the_policys_own(
    db_url: str, make_config: Callable[..., Config], policy: str, retries: int
) -> None:
    """The re-send after a 429 spends no retry, so a reader is not told of one more."""
    config = make_config()
    receiver = StatusReceiver()
    await receiver.start()
    receiver.answer(lambda req, n: Reply(429) if n == 0 else Reply(500))
    clock = FakeClock()
    try:
        async with EngineHarness(db_url, config, clock) as h:
            tenant = await make_tenant(h.pool)
            await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                retry_policy=policy)
            published = await h.publish(tenant, ("block", {}))
            await h.start_worker()
            await h.wait_attempts(1)
            async with h.pool.acquire() as conn:
                shown = await event_deliveries(conn, tenant, published[0].id)
            assert [(d.status, d.retries_left) for d in shown] == [
                (DeliveryStatus.RETRYING, retries)]
            h.advance(1)  # the backoff ends; a 500 then spends one, which is scheduled
            await h.wait_attempts(2)
            await h.wait_status([DeliveryStatus.RETRYING], 1)
            async with h.pool.acquire() as conn:
                shown = await event_deliveries(conn, tenant, published[0].id)
            assert [d.retries_left for d in shown] == [retries]
    finally:
        await receiver.stop()


async def test_past_max_rate_limited_attempts_a_429_counts_as_a_failure(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    """Two rate-limited attempts are free; the third 429 spends a retry and counts
    toward the endpoint's pause thresholds, like any failed status."""
    config = make_config(delivery__max_rate_limited_attempts="2")
    receiver = StatusReceiver()
    await receiver.start()
    receiver.answer(lambda req, n: Reply(429))
    clock = FakeClock()
    try:
        async with EngineHarness(db_url, config, clock) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url)
            await h.publish(tenant, ("block", {}))
            install(await h.start_worker(), config)
            await h.wait_attempts(1)
            h.advance(1)
            await h.wait_attempts(2)
            h.advance(2)  # the doubled backoff
            attempts = await h.wait_attempts(3)
            row = await h.pool.fetchrow("SELECT * FROM deliveries")
            state = await _endpoint_state(h.pool, endpoint_id)
    finally:
        await receiver.stop()
    assert [a["failure_reason"] for a in attempts] == ["rate_limited", "rate_limited",
                                                       "http_status"]
    assert "delivery.max_rate_limited_attempts" in attempts[2]["error_detail"]
    assert row["rate_limited_attempts"] == 2
    assert row["retries_left"] == OKX_RETRIES - 1  # the standard policy's 7, one spent
    assert state["failures_since_resume"] == 1


async def test_rate_limited_past_the_hold_limit_fails_with_reason_rate_limited(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    config = make_config(health__hold_limit_seconds="600")
    receiver = StatusReceiver()
    await receiver.start()
    receiver.answer(lambda req, n: Reply(429))  # no Retry-After: the default backoff
    clock = FakeClock()
    try:
        async with EngineHarness(db_url, config, clock) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url)
            await h.publish(tenant, ("block", {}))
            install(await h.start_worker(), config)
            await h.wait_attempts(1)
            for expected in (2, 3):  # retried each time its backoff ends
                h.advance(300)
                await h.wait_attempts(expected)
            await h.wait_status([DeliveryStatus.FAILED], 1)
            row = await h.pool.fetchrow("SELECT * FROM deliveries")
            state = await _endpoint_state(h.pool, endpoint_id)
    finally:
        await receiver.stop()
    assert row["failure_reason"] == "rate_limited"
    assert row["retries_left"] == 7
    assert row["attempts"] == 3  # at 0, 300 and 600 s: the third is past the limit
    assert state["state"] == "active" and state["failures_since_resume"] == 0


async def test_backoff_without_retry_after_doubles_while_it_repeats(
    pool: asyncpg.Pool, config: Config
) -> None:
    clock = FakeClock()
    tenant = await make_tenant(pool)
    endpoint_id, _ = await make_endpoint(pool, load_secret_box(config), tenant,
                                         "https://example.com/hook")
    t0 = clock.now()

    async def limited(at: float) -> float:
        when = t0 + timedelta(seconds=at)
        await apply_pressure(pool, {endpoint_id: Pressure(limited_at=when)}, when, 1.0, 5.0)
        until = (await _endpoint_state(pool, endpoint_id))["rate_limited_until"]
        return (until - t0).total_seconds()  # type: ignore[no-any-return]

    assert await limited(0) == 1  # the default
    assert await limited(0.5) == 1.5  # during it: the same length, from the answer
    assert await limited(2) == 4  # again right after it ended: doubled
    assert await limited(4.5) == 8.5  # and again
    assert await limited(9) == 14  # capped at 5 s
    assert await limited(100) == 101  # quiet for long: the default again


async def test_congestion_halves_the_in_flight_limit_and_successes_grow_it_back(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    config = make_config()
    receiver = Receiver()
    await receiver.start()
    in_flight = [0]
    seen: list[int] = []  # requests in flight at each arrival

    async def script(req: Received, n: int) -> Reply:
        in_flight[0] += 1
        seen.append(in_flight[0])
        try:
            await asyncio.sleep(0.05)
        finally:
            in_flight[0] -= 1
        return Reply(503) if n == 0 else Reply()

    receiver.script = script  # type: ignore[assignment]
    limits: list[int | None] = []
    decreases = CONCURRENCY_DECREASES._value.get()
    try:
        async with EngineHarness(db_url, config, SystemClock()) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                                 max_in_flight=8)
            await h.publish(tenant, *[("block", {"n": i}) for i in range(150)])
            await h.start_worker()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                limits.append((await _endpoint_state(h.pool, endpoint_id))
                              ["effective_max_in_flight"])
                done = await h.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 2")
                if done == 150:
                    break
                await asyncio.sleep(0.01)
            final = (await _endpoint_state(h.pool, endpoint_id))["effective_max_in_flight"]
    finally:
        await receiver.stop()
    assert 4 in limits  # halved once for the whole burst in flight, not to 1
    assert min(v for v in limits if v is not None) == 4
    assert final is None  # grown back to max_in_flight
    assert CONCURRENCY_DECREASES._value.get() == decreases + 1
    # Right after the 503 came back (the first 8 were already on the wire), at most
    # the halved limit (and the first increments) were in flight.
    assert max(seen[8:20]) <= 6, seen[:30]
