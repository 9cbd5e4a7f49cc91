"""Retry schedules end to end under a FakeClock: a real worker, a real receiver,
real PostgreSQL. Attempt times, statuses and retries_left are exact."""

from __future__ import annotations

from datetime import timedelta

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.model import DeliveryStatus, retries_left_shown
from tests.support.engine import EngineHarness
from tests.support.factories import delivery_row, make_endpoint, make_tenant
from tests.support.receiver import Receiver, Reply

MIN = 60.0


async def _run_schedule(
    db_url: str, config: Config, receiver: Receiver, policy: str, delays: list[float],
    recover_after: int | None = None,
) -> None:
    """Fail every attempt (or recover after `recover_after` failures) and check that
    each attempt happens exactly at the policy's time, with the right state after."""
    clock = FakeClock()
    if recover_after is None:
        receiver.reply_with(then=Reply(status=500))
    else:
        receiver.reply_with(*[Reply(status=500)] * recover_after)
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        endpoint, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                          retry_policy=policy)
        t0 = clock.now()
        (event,) = await h.publish(tenant, ("wallets.transaction.created", {"n": 1}))
        await h.start_worker()

        expected_at = t0
        failures = len(delays) + 1 if recover_after is None else recover_after
        for n in range(1, failures + 1):
            attempts = await h.wait_attempts(n)
            assert len(attempts) == n
            assert attempts[-1]["started_at"] == expected_at
            assert attempts[-1]["attempt_number"] == n
            assert attempts[-1]["response_status"] == 500
            row = await delivery_row(h.pool, endpoint, event.id)
            if n <= len(delays):
                assert row["status"] == DeliveryStatus.RETRYING
                assert row["retries_left"] == len(delays) - n
                # shown: the scheduled retry still counts (okx: 7 after the first failure)
                shown = retries_left_shown(row["status"], row["retries_left"],
                                           row["failure_reason"])
                assert shown == len(delays) - n + 1
                expected_at = expected_at + timedelta(seconds=delays[n - 1])
                assert row["next_attempt_at"] == expected_at
                # One tick short of the due time: nothing may be sent.
                h.advance(delays[n - 1] - 1)
                await receiver.wait_for(n)
                assert len(await h.wait_attempts(n)) == n
                h.advance(1)
            else:
                assert row["status"] == DeliveryStatus.FAILED
                assert row["retries_left"] == 0
                assert retries_left_shown(row["status"], row["retries_left"],
                                          row["failure_reason"]) == 0

        if recover_after is not None:
            attempts = await h.wait_attempts(recover_after + 1)
            assert attempts[-1]["response_status"] == 200
            assert attempts[-1]["started_at"] == expected_at
            row = await delivery_row(h.pool, endpoint, event.id)
            assert row["status"] == DeliveryStatus.SUCCESS
            assert row["retries_left"] == len(delays) - recover_after

        total = len(receiver.requests)
        h.advance(24 * 3600)  # nothing more, ever
        await receiver.wait_for(total)
        assert len(await h.wait_attempts(total)) == total
        assert len(receiver.requests) == total
        # The id and body never change across retries.
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
        assert len({r.body for r in receiver.requests}) == 1


async def test_okx_schedule_is_exact(db_url: str, config: Config, receiver: Receiver) -> None:
    await _run_schedule(db_url, config, receiver, "okx",
                        [1 * MIN, 5 * MIN, 10 * MIN, 30 * MIN, 60 * MIN, 120 * MIN, 240 * MIN])
    assert len(receiver.requests) == 8


async def test_exponential_3_schedule_is_exact(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    await _run_schedule(db_url, config, receiver, "exponential-3", [1 * MIN, 2 * MIN, 4 * MIN])
    assert len(receiver.requests) == 4


async def test_receiver_recovering_midway_ends_in_success(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    await _run_schedule(db_url, config, receiver, "okx",
                        [1 * MIN, 5 * MIN, 10 * MIN, 30 * MIN, 60 * MIN, 120 * MIN, 240 * MIN],
                        recover_after=3)
    assert len(receiver.requests) == 4


async def test_exponential_3_recovering_midway(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    await _run_schedule(db_url, config, receiver, "exponential-3", [1 * MIN, 2 * MIN, 4 * MIN],
                        recover_after=2)
    assert len(receiver.requests) == 3
