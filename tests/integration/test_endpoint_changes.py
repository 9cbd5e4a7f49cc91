"""Endpoint changes while deliveries are in flight, against `dispatcher serve`: a
delete or pause never blocks outcome recording (for any tenant), no request starts
to the endpoint after the API answers (from any daemon), an automatic pause stops
the queued backlog, and a retry is acknowledged only for an attempt it schedules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, start_server
from tests.support.daemon import DaemonProcess
from tests.support.pg import TestPostgres
from tests.support.receiver import Receiver, Reply

SLOW = 1.5  # seconds each slow reply takes: requests stay on the wire that long
IN_FLIGHT = 5
BACKLOG = 50

http, api, other = support.http, support.api, support.other


@pytest.fixture(scope="module")
def api_server(pg: TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    # Automatic pauses at 20 failures in the window, so the backlog test is short.
    yield from start_server(pg, tmp_path_factory.mktemp("changes"),
                            DISPATCHER_HEALTH__WINDOW_THRESHOLD="20")


@pytest.fixture
async def slow(make_receiver: Any) -> Receiver:
    r: Receiver = await make_receiver()
    r.reply_with(then=Reply(delay=SLOW))
    return r


async def backlog(api: Api, receiver: Receiver, **fields: Any) -> str:
    """An endpoint with IN_FLIGHT slots and BACKLOG events for it; returns its id
    once the first requests are on the wire."""
    endpoint = await api.create_endpoint(receiver.url, max_in_flight=IN_FLIGHT, **fields)
    reply = await api.post("/v1/events/batch", {"events": [
        {"type": "transaction", "data": {"n": n}} for n in range(BACKLOG)]})
    assert reply.status == 202, reply
    await receiver.wait_for(1)
    endpoint_id: str = endpoint["id"]
    return endpoint_id


async def started_after(receiver: Receiver, answered_at: float, settle: float) -> int:
    """Requests that arrived after the API answered, waiting out `settle` seconds
    (longer than a slow reply, so freed slots would have been reused)."""
    await asyncio.sleep(settle)
    return sum(1 for r in receiver.requests if r.at > answered_at)


async def count(dsn: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval(sql, *args)
        return n
    finally:
        await conn.close()


async def test_delete_mid_delivery_keeps_every_tenants_outcomes_flowing(
    api: Api, other: Api, slow: Receiver, make_receiver: Any, api_server: ApiServer
) -> None:
    endpoint_id = await backlog(api, slow)
    reply = await api.delete(f"/v1/endpoints/{endpoint_id}")
    answered_at = time.monotonic()
    assert reply.status == 204, reply
    on_the_wire = len(slow.requests)
    assert on_the_wire <= IN_FLIGHT

    # Another tenant's event is recorded promptly, while the deleted endpoint's
    # requests are still finishing and after they finished.
    fast: Receiver = await make_receiver()
    theirs = await other.create_endpoint(fast.url)
    for _ in range(2):
        event = await other.publish("transaction", {"x": 1})
        await other.wait_for_status(theirs["id"], event["id"], "Success", timeout=1.0)
        await asyncio.sleep(SLOW)

    assert await started_after(slow, answered_at, 0.2) == 0
    assert await count(api_server.dsn, "SELECT count(*) FROM deliveries WHERE endpoint_id = $1",
                       endpoint_id) == 0
    log = api_server.daemon.log()
    assert "engine.write_failed" not in log and "attempts_delivery_id_fkey" not in log


async def test_pause_with_a_backlog_starts_no_request_after_the_answer(
    api: Api, slow: Receiver, api_server: ApiServer
) -> None:
    endpoint_id = await backlog(api, slow)
    reply = await api.post(f"/v1/endpoints/{endpoint_id}/pause")
    answered_at = time.monotonic()
    assert reply.status == 200, reply

    assert await started_after(slow, answered_at, SLOW + 0.5) == 0
    sent = len(slow.requests)
    assert sent <= IN_FLIGHT
    # Everything not sent is held, the in-flight ones recorded as attempts.
    held = await count(api_server.dsn, "SELECT count(*) FROM deliveries WHERE endpoint_id = $1 "
                       "AND held_since IS NOT NULL AND status < 2", endpoint_id)
    assert held == BACKLOG - sent
    assert await count(api_server.dsn, "SELECT count(*) FROM attempts WHERE endpoint_id = $1",
                       endpoint_id) == sent

    # Resume re-delivers each held event once.
    reply = await api.post(f"/v1/endpoints/{endpoint_id}/resume")
    assert reply.status == 200, reply
    slow.reply_with()
    await slow.wait_for(BACKLOG, timeout=30)
    ids = [r.headers["webhook-id"] for r in slow.requests]
    assert len(set(ids)) == BACKLOG


async def test_an_automatic_pause_stops_the_queued_backlog(
    api: Api, make_receiver: Any, api_server: ApiServer
) -> None:
    failing: Receiver = await make_receiver()
    failing.reply_with(then=Reply(status=500, delay=0.05))
    endpoint_id = await backlog(api, failing)
    async with asyncio.timeout(15):
        while (await api.get(f"/v1/endpoints/{endpoint_id}")).body["state"] != "paused":
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    # 20 failures cross the threshold; at most the requests then on the wire follow.
    attempts = await count(api_server.dsn,
                           "SELECT count(*) FROM attempts WHERE endpoint_id = $1", endpoint_id)
    assert 20 <= attempts <= 20 + 2 * IN_FLIGHT
    assert len(failing.requests) == attempts
    held = await count(api_server.dsn, "SELECT count(*) FROM deliveries WHERE endpoint_id = $1 "
                       "AND held_since IS NOT NULL AND status < 2", endpoint_id)
    assert held == BACKLOG


@pytest.fixture
async def second_daemon(api_server: ApiServer) -> AsyncIterator[DaemonProcess]:
    """Another daemon on the same database and secret key file."""
    env = dict(api_server.daemon.env)
    d = DaemonProcess(env, Path(api_server.daemon.log_path).with_name("second.log"))
    await d.start()
    yield d
    await d.stop()


async def test_pause_reaches_every_daemon_on_the_database(
    api: Api, slow: Receiver, second_daemon: DaemonProcess, api_server: ApiServer
) -> None:
    endpoint = await api.create_endpoint(slow.url, max_in_flight=IN_FLIGHT)
    # Publish through the second daemon; both engines claim from the one queue.
    through_second = Api(api.http, ApiServer(second_daemon.url, api_server.dsn, second_daemon),
                         api.key, api.tenant)
    reply = await through_second.post("/v1/events/batch", {"events": [
        {"type": "transaction", "data": {"n": n}} for n in range(BACKLOG)]})
    assert reply.status == 202, reply
    await slow.wait_for(IN_FLIGHT)
    reply = await api.post(f"/v1/endpoints/{endpoint['id']}/pause")
    answered_at = time.monotonic()
    assert reply.status == 200, reply
    assert await started_after(slow, answered_at, SLOW + 0.5) == 0
    # Each daemon may have had up to max_in_flight requests on the wire.
    assert len(slow.requests) <= 2 * IN_FLIGHT


async def failed_delivery(api: Api, receiver: Receiver) -> tuple[str, str]:
    receiver.reply_with(then=Reply(status=500))
    endpoint = await api.create_endpoint(receiver.url, retry_policy="none")
    event = await api.publish("transaction", {"x": 1})
    await api.wait_for_status(endpoint["id"], event["id"], "Failed")
    return endpoint["id"], event["id"]


async def attempts_settled(api: Api, endpoint_id: str, event_id: str) -> int:
    """The delivery's attempt count once nothing is scheduled any more."""
    path = f"/v1/endpoints/{endpoint_id}/events/{event_id}"
    async with asyncio.timeout(10):
        while True:
            body = (await api.get(path)).body
            if body["status"] == "Failed":
                logs = (await api.get(path + "/logs?limit=100")).body["data"]
                return len(logs)
            await asyncio.sleep(0.05)


async def test_concurrent_retries_are_acknowledged_once_per_attempt(
    api: Api, receiver: Receiver
) -> None:
    endpoint_id, event_id = await failed_delivery(api, receiver)
    path = f"/v1/endpoints/{endpoint_id}/events/{event_id}/retry"
    replies = await asyncio.gather(*(api.post(path) for _ in range(20)))
    acknowledged = [r for r in replies if r.status == 201]
    refused = [r for r in replies if r.status != 201]
    assert acknowledged
    assert all(r.status == 409 for r in refused), refused
    assert {r.error["code"] for r in refused} <= {"retry_already_scheduled",
                                                   "delivery_in_progress"}
    await asyncio.sleep(0.3)
    assert await attempts_settled(api, endpoint_id, event_id) == 1 + len(acknowledged)
    assert len(receiver.requests) == 1 + len(acknowledged)


async def test_sequential_retries_each_make_the_attempt_they_acknowledge(
    api: Api, receiver: Receiver
) -> None:
    endpoint_id, event_id = await failed_delivery(api, receiver)
    path = f"/v1/endpoints/{endpoint_id}/events/{event_id}/retry"
    acknowledged = 0
    deadline = asyncio.get_running_loop().time() + 20  # a busy machine is slow, not wrong
    while acknowledged < 3 and asyncio.get_running_loop().time() < deadline:
        reply = await api.post(path)
        if reply.status == 201:
            acknowledged += 1
        else:
            assert reply.status == 409, reply
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert acknowledged == 3
    assert await attempts_settled(api, endpoint_id, event_id) == 1 + acknowledged


async def test_a_held_retry_is_acknowledged_once_and_made_on_resume(
    api: Api, receiver: Receiver
) -> None:
    """On a paused endpoint a retry waits for the resume: repeating it (one event or
    a bulk replay) acknowledges nothing more until that attempt is made."""
    endpoint_id, event_id = await failed_delivery(api, receiver)
    retry_one = f"/v1/endpoints/{endpoint_id}/events/{event_id}/retry"
    replay = f"/v1/endpoints/{endpoint_id}/retry"
    assert (await api.post(f"/v1/endpoints/{endpoint_id}/pause")).status == 200

    first = await api.post(replay, {"status": ["Retrying", "Failed"]})
    assert first.status == 202 and first.body["queued"] == 1, first
    again = await api.post(replay, {"status": ["Retrying", "Failed"]})
    assert again.status == 202 and again.body["queued"] == 0, again
    reply = await api.post(retry_one)
    assert reply.status == 409 and reply.error["code"] == "retry_already_scheduled", reply

    assert (await api.post(f"/v1/endpoints/{endpoint_id}/resume")).status == 200
    await receiver.wait_for(2)
    await asyncio.sleep(0.3)
    assert await attempts_settled(api, endpoint_id, event_id) == 2
    assert len(receiver.requests) == 2
    # Attempted: the next retry is acknowledged again.
    assert (await api.post(retry_one)).status == 201
