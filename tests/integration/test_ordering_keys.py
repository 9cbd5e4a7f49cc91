"""Ordering keys against real receivers: per key and endpoint, one delivery at a
time in publish order; a retrying head holds back only its own key; a Failed head
releases it; the status lookup says who blocks whom."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from dispatcher.clock import FakeClock, SystemClock
from dispatcher.config import Config
from dispatcher.model import DeliveryStatus
from dispatcher.store import deliveries, lookup
from dispatcher.store.events import NewEvent
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant
from tests.support.receiver import Received, Receiver, Reply

KEYS = "ABCD"
PER_KEY = 10
# Short retries for the heads that fail once; the third waits long (key D's head).
FAST = '{ kind = "fixed", delays = [0.2, 0.2, 600.0] }'


class KeyedReceiver(Receiver):
    """Answers after a short delay; records, per key, what arrived and whether two
    requests of one key were ever on the wire at once."""

    def __init__(self, fail: Callable[[dict[str, Any], int], bool]) -> None:
        super().__init__()
        self.fail = fail
        self.arrivals: dict[str | None, list[int]] = defaultdict(list)
        self.successes: dict[str | None, list[int]] = defaultdict(list)
        self.busy: dict[str | None, int] = defaultdict(int)
        self.overlaps: list[tuple[str | None, int]] = []
        self.tries: dict[int, int] = defaultdict(int)
        self.script = self._answer  # type: ignore[assignment]

    async def _answer(self, req: Received, n: int) -> Reply:
        data = json.loads(req.body)["data"]
        key, seq = data.get("key"), data["seq"]
        self.arrivals[key].append(seq)
        if key is not None:
            self.busy[key] += 1
            if self.busy[key] > 1:
                self.overlaps.append((key, seq))
        try:
            await asyncio.sleep(0.01)
        finally:
            if key is not None:
                self.busy[key] -= 1
        self.tries[seq] += 1
        if self.fail(data, self.tries[seq]):
            return Reply(500)
        self.successes[key].append(seq)
        return Reply()


def interleaved() -> list[NewEvent]:
    """4 keys x 10 events, round robin, and 10 unkeyed ones between them."""
    events = []
    for i in range(PER_KEY):
        for k in KEYS:
            events.append(NewEvent("block", {"key": k, "seq": i * 10 + KEYS.index(k),
                                             "i": i}, ordering_key=k))
        events.append(NewEvent("block", {"key": None, "seq": 1000 + i, "i": i}))
    return events


def heads_fail_once(data: dict[str, Any], tries: int) -> bool:
    if data["key"] == "D":
        return True  # every attempt of D fails
    # Some heads fail once: A's 1st and 4th, B's 6th, C's last.
    return tries == 1 and (data["key"], data["i"]) in {("A", 0), ("A", 3), ("B", 5), ("C", 9)}


def key_order(seqs: list[int], key: str) -> list[int]:
    return [s for s in seqs if s % 10 == KEYS.index(key)]


async def test_each_key_goes_out_in_order_one_at_a_time_and_a_stuck_key_holds_only_itself(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    config = make_config(retry_policies__fast=FAST)
    receiver = KeyedReceiver(heads_fail_once)
    await receiver.start()
    try:
        async with EngineHarness(db_url, config, SystemClock()) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                                 retry_policy="fast", max_in_flight=10)
            published = await h.publish(tenant, *interleaved())
            await h.start_worker()
            async with asyncio.timeout(30):
                while not (all(len(receiver.successes[k]) == PER_KEY for k in "ABC")
                           and len(receiver.successes[None]) == PER_KEY
                           and receiver.tries[3] >= 3):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything D let through would arrive now
            async with h.pool.acquire() as conn:
                second_d = await lookup.endpoint_event(conn, tenant, endpoint_id,
                                                       published[5 + 3].id)
                head_d = await lookup.endpoint_event(conn, tenant, endpoint_id,
                                                     published[3].id)
                unkeyed = await lookup.endpoint_event(conn, tenant, endpoint_id,
                                                      published[4].id)
    finally:
        await receiver.stop()
    assert receiver.overlaps == []  # never two of one key on the wire at once
    for key in "ABC":
        expected = [i * 10 + KEYS.index(key) for i in range(PER_KEY)]
        # Arrivals in publish order; a head failing once is tried again before its
        # successor's first arrival.
        arrivals = receiver.arrivals[key]
        assert [s for j, s in enumerate(arrivals) if s not in arrivals[:j]] == expected
        assert receiver.successes[key] == expected
    # D: only its head was ever tried, while the others (and unkeyed) all went out.
    assert set(receiver.arrivals["D"]) == {3}
    assert sorted(receiver.successes[None]) == [1000 + i for i in range(PER_KEY)]
    assert second_d is not None and head_d is not None and unkeyed is not None
    assert second_d.ordering_key == "D" and second_d.blocked_by == published[3].id
    assert second_d.status == DeliveryStatus.PENDING and second_d.next_retry_at is None
    assert head_d.blocked_by is None and head_d.status == DeliveryStatus.RETRYING
    assert unkeyed.ordering_key is None and unkeyed.blocked_by is None


async def test_a_failed_head_releases_its_key(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    config = make_config()
    receiver = KeyedReceiver(lambda data, tries: data["i"] == 0)
    await receiver.start()
    try:
        async with EngineHarness(db_url, config, FakeClock()) as h:
            tenant = await make_tenant(h.pool)
            await make_endpoint(h.pool, h.box, tenant, receiver.url, retry_policy="none")
            await h.publish(tenant, *[NewEvent("block", {"key": "K", "seq": i, "i": i},
                                               ordering_key="K") for i in range(3)])
            await h.start_worker()
            await h.wait_status([DeliveryStatus.SUCCESS], 2)
            statuses = [r["status"] for r in await h.pool.fetch(
                "SELECT status FROM deliveries ORDER BY id")]
    finally:
        await receiver.stop()
    assert statuses == [DeliveryStatus.FAILED, DeliveryStatus.SUCCESS, DeliveryStatus.SUCCESS]
    assert receiver.arrivals["K"] == [0, 1, 2]


async def test_a_keyed_event_published_while_its_predecessor_finishes_is_never_stranded(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    """Publish and promotion race on the key lock: 200 one-event publishes of one key
    while the worker delivers them; every one arrives, in order."""
    config = make_config()
    receiver = KeyedReceiver(lambda data, tries: False)
    await receiver.start()
    try:
        async with EngineHarness(db_url, config, SystemClock()) as h:
            tenant = await make_tenant(h.pool)
            await make_endpoint(h.pool, h.box, tenant, receiver.url)
            await h.start_worker()
            for i in range(200):
                await h.publish(tenant, NewEvent("block", {"key": "K", "seq": i, "i": i},
                                                 ordering_key="K"))
            await h.wait_status([DeliveryStatus.SUCCESS], 200, timeout=30)
    finally:
        await receiver.stop()
    assert receiver.successes["K"] == list(range(200))
    assert receiver.overlaps == []


async def test_the_sweep_promotes_a_key_whose_head_finished_elsewhere(
    db_url: str, make_config: Callable[..., Config]
) -> None:
    config = make_config()
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        await make_endpoint(h.pool, h.box, tenant, "http://127.0.0.1:9/hook")
        await h.publish(tenant, *[NewEvent("block", {}, ordering_key="K") for _ in range(3)])
        # The head fails outside the delivery path (as the hold limit does).
        await h.pool.execute("UPDATE deliveries SET status = 3 WHERE id = "
                             "(SELECT min(id) FROM deliveries)")
        async with h.pool.acquire() as conn:
            assert await deliveries.promote_orphaned_heads(conn, clock.now()) == 1
            assert await deliveries.promote_orphaned_heads(conn, clock.now()) == 0
        rows = await h.pool.fetch(
            "SELECT key_waiting, next_attempt_at = $1 AS due FROM deliveries ORDER BY id",
            clock.now())
    assert [(r["key_waiting"], r["due"]) for r in rows] == [
        (False, True), (False, True), (True, False)]  # the Failed head, the new one, waiting


async def test_two_daemons_keep_each_key_serial_and_honour_one_backoff(
    db_url: str, config: Config, daemon_factory: Callable[..., Any]
) -> None:
    """Two `dispatcher serve` daemons (each with its worker processes) on one
    database: the receiver answers its first request 429 with Retry-After: 2, which
    only one worker process sees. Nobody (in any process) sends during the backoff,
    no key ever has two requests on the wire, each key arrives in order, and the
    endpoint stays active."""
    first: list[float] = []

    def fail(data: dict[str, Any], tries: int) -> bool:
        return False

    receiver = KeyedReceiver(fail)
    keyed_answer = receiver.script
    statuses: list[tuple[float, int]] = []

    async def script(req: Received, n: int) -> Reply:
        if not first:
            first.append(req.at)
        if n == 0:
            statuses.append((req.at, 429))
            return Reply(429, headers={"Retry-After": "2"})
        statuses.append((req.at, 200))
        reply = keyed_answer(req, n)
        assert not isinstance(reply, Reply)
        return await reply

    receiver.script = script  # type: ignore[assignment]
    await receiver.start()
    try:
        async with EngineHarness(db_url, config, SystemClock()) as h:
            tenant = await make_tenant(h.pool)
            endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                                 retry_policy="okx", max_in_flight=5)
            env = {"DISPATCHER_DELIVERY__CLAIM_BATCH_SIZE": "20"}
            await daemon_factory(**env)
            await daemon_factory(**env)
            events = interleaved()
            await h.publish(tenant, *events)
            await h.wait_status([DeliveryStatus.SUCCESS], len(events), timeout=60)
            state = await h.pool.fetchval("SELECT state FROM endpoints WHERE id = $1",
                                          endpoint_id)
    finally:
        await receiver.stop()
    assert state == "active"
    assert receiver.overlaps == []
    for key in KEYS:
        assert receiver.successes[key] == [i * 10 + KEYS.index(key) for i in range(PER_KEY)]
    start = first[0]
    during = [at for at, _ in statuses if start + 0.2 < at < start + 1.95]
    assert not during, f"{len(during)} requests during the backoff"
    assert sum(1 for _, s in statuses if s == 429) == 1
