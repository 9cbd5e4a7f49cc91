"""Each failure reason comes from a real receiver behaving badly, and each outcome
is written with the attempt and the new delivery state together."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from dispatcher.clock import FakeClock
from dispatcher.config import Config
from dispatcher.model import DeliveryStatus
from tests.support.engine import EngineHarness
from tests.support.factories import delivery_row, make_endpoint, make_tenant
from tests.support.receiver import Receiver, Reply


async def _one_attempt(
    db_url: str, config: Config, url: str, **endpoint: object
) -> tuple[dict[str, object], dict[str, object]]:
    """Publish one event to `url`, let one attempt happen; (attempt, delivery) rows."""
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant = await make_tenant(h.pool)
        endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, url, **endpoint)  # type: ignore[arg-type]
        (event,) = await h.publish(tenant, ("transaction", {"x": 1}))
        await h.start_worker()
        (attempt,) = await h.wait_attempts(1, timeout=15)
        await h.stop_worker()
        return dict(attempt), await delivery_row(h.pool, endpoint_id, event.id)


async def test_success_is_recorded(db_url: str, config: Config, receiver: Receiver) -> None:
    receiver.reply_with(Reply(status=204, body=b""))
    attempt, delivery = await _one_attempt(db_url, config, receiver.url)
    assert attempt["response_status"] == 204 and attempt["failure_reason"] is None
    assert delivery["status"] == DeliveryStatus.SUCCESS
    req = receiver.requests[0]
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("dispatcher/")
    assert "v1," in req.headers["webhook-signature"]


async def test_slow_receiver_times_out(db_url: str, config: Config, receiver: Receiver) -> None:
    receiver.reply_with(Reply(delay=2.5))
    attempt, delivery = await _one_attempt(db_url, config, receiver.url, timeout_seconds=1.0)
    assert attempt["failure_reason"] == "timeout"
    assert 900 <= attempt["duration_ms"] < 2000  # type: ignore[operator]
    assert delivery["status"] == DeliveryStatus.RETRYING


async def test_default_timeout_is_two_seconds(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    receiver.reply_with(Reply(delay=2.6))
    attempt, _ = await _one_attempt(db_url, config, receiver.url)
    assert attempt["failure_reason"] == "timeout"
    assert 1900 <= attempt["duration_ms"] < 2500  # type: ignore[operator]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_closed_port_is_a_connect_error(db_url: str, config: Config) -> None:
    attempt, delivery = await _one_attempt(db_url, config, f"http://127.0.0.1:{_closed_port()}/")
    assert attempt["failure_reason"] == "connect_error"
    assert attempt["response_status"] is None
    assert attempt["error_detail"]
    assert delivery["status"] == DeliveryStatus.RETRYING


async def test_an_answer_that_is_not_http_is_a_protocol_error(
    db_url: str, config: Config
) -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        attempt, delivery = await _one_attempt(db_url, config, f"http://127.0.0.1:{port}/")
    finally:
        server.close()
    assert attempt["failure_reason"] == "protocol_error"
    assert "content-length" in str(attempt["error_detail"]).lower()
    assert delivery["status"] == DeliveryStatus.RETRYING


async def test_redirect_is_not_followed(
    db_url: str, config: Config, make_receiver: Callable[[], object]
) -> None:
    target: Receiver = await make_receiver()  # type: ignore[misc]
    source: Receiver = await make_receiver()  # type: ignore[misc]
    source.reply_with(then=Reply(status=302, headers={"Location": target.url}))
    attempt, _ = await _one_attempt(db_url, config, source.url)
    assert attempt["failure_reason"] == "redirect"
    assert attempt["response_status"] == 302
    assert target.requests == []


async def test_server_error_is_http_status(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(status=500, body="x" * 10_000))
    attempt, _ = await _one_attempt(db_url, config, receiver.url)
    assert attempt["failure_reason"] == "http_status"
    assert attempt["response_status"] == 500
    assert len(attempt["response_body"]) == 4096  # type: ignore[arg-type]


async def test_success_statuses_can_be_narrowed(
    db_url: str, make_config: Callable[..., Config], receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(status=202))
    config = make_config(delivery__success_statuses="[200]")
    attempt, _ = await _one_attempt(db_url, config, receiver.url)
    assert attempt["failure_reason"] == "http_status"


async def test_tls_handshake_failure_is_tls_error(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    url = f"https://127.0.0.1:{receiver.port}/hook"  # the receiver speaks plain HTTP
    attempt, _ = await _one_attempt(db_url, config, url)
    assert attempt["failure_reason"] == "tls_error"


async def test_internal_address_is_blocked_at_connect_time(
    db_url: str, make_config: Callable[..., Config], receiver: Receiver
) -> None:
    config = make_config(urls__allow_private_networks="false")
    attempt, _ = await _one_attempt(db_url, config, f"http://localhost:{receiver.port}/hook")
    assert attempt["failure_reason"] == "blocked_address"
    assert receiver.requests == []


async def test_retry_after_delays_the_next_attempt(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    receiver.reply_with(Reply(status=429, headers={"Retry-After": "900"}))
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url)
        (event,) = await h.publish(tenant, ("transaction", {}))
        await h.start_worker()
        await h.wait_attempts(1)
        row = await delivery_row(h.pool, endpoint_id, event.id)
        # The standard policy would retry after 5 s; the receiver asked for 15 minutes.
        assert row["next_attempt_at"] == clock.now() + timedelta(seconds=900)
        h.advance(899)
        h.advance(0)
        assert len(await h.wait_attempts(1)) == 1
        h.advance(1)
        await h.wait_attempts(2)
        await receiver.wait_for(2)


async def test_retry_after_is_capped(
    db_url: str, make_config: Callable[..., Config], receiver: Receiver
) -> None:
    receiver.reply_with(Reply(status=503, headers={"Retry-After": "999999"}))
    config = make_config(delivery__retry_after_cap_seconds="600")
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url)
        (event,) = await h.publish(tenant, ("transaction", {}))
        await h.start_worker()
        await h.wait_attempts(1)
        row = await delivery_row(h.pool, endpoint_id, event.id)
        assert row["next_attempt_at"] == clock.now() + timedelta(seconds=600)


async def test_gone_disables_the_endpoint_and_holds_the_rest(
    db_url: str, config: Config, receiver: Receiver
) -> None:
    receiver.reply_with(then=Reply(status=410))
    clock = FakeClock()
    async with EngineHarness(db_url, config, clock) as h:
        tenant = await make_tenant(h.pool)
        endpoint_id, _ = await make_endpoint(h.pool, h.box, tenant, receiver.url,
                                             max_in_flight=1)
        await h.publish(tenant, ("transaction", {"n": 1}))
        await h.start_worker()
        await h.wait_attempts(1)
        await h.publish(tenant, ("transaction", {"n": 2}), ("transaction", {"n": 3}))
        h.advance(3600)
        state = await h.pool.fetchrow("SELECT state, state_reason FROM endpoints WHERE id = $1",
                                      endpoint_id)
        assert state is not None and state["state"] == "disabled"
        assert "410" in state["state_reason"]
        held = await h.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE held_since IS NOT NULL AND status < 2")
        assert held == 3  # the 410'd one (retries left) and the two published after
        h.advance(24 * 3600)
        await h.stop_worker()
    assert len(receiver.requests) == 1


async def test_endpoint_without_secret_waits_and_others_still_flow(
    db_url: str, config: Config, make_receiver: Callable[[], Any]
) -> None:
    broken: Receiver = await make_receiver()
    healthy: Receiver = await make_receiver()
    async with EngineHarness(db_url, config, FakeClock()) as h:
        tenant = await make_tenant(h.pool)
        healthy_id, _ = await make_endpoint(h.pool, h.box, tenant, healthy.url)
        broken_id = await h.pool.fetchval(
            "INSERT INTO endpoints (tenant_id, url, retry_policy) VALUES ($1, $2, 'standard')"
            " RETURNING id", tenant, broken.url)
        (event,) = await h.publish(tenant, ("transaction", {}))
        await h.start_worker()
        await healthy.wait_for(1)
        await h.wait_status([DeliveryStatus.SUCCESS], 1)
        # Parked a minute out, neither attempted nor spinning through claims.
        async with asyncio.timeout(5):
            while (await delivery_row(h.pool, broken_id, event.id))["lease_owner"] is not None:
                await asyncio.sleep(0.02)
        row = await delivery_row(h.pool, broken_id, event.id)
        assert row["status"] == DeliveryStatus.PENDING and row["attempts"] == 0
        assert row["next_attempt_at"] == h.clock.now() + timedelta(seconds=60)
        assert (await delivery_row(h.pool, healthy_id, event.id))["status"] == 2
    assert broken.requests == []
