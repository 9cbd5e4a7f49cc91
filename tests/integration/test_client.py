"""`dispatcher.client` against a real daemon: typed answers, API errors as ApiError,
the Idempotency-Key reused when a publish is retried after a connection error, and
the blocking SyncClient."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from multidict import CIMultiDict
from standardwebhooks import Webhook

from dispatcher.client import (
    TENANT_HEADER,
    UNREACHABLE,
    ApiError,
    Client,
    Delivery,
    Endpoint,
    Event,
    SyncClient,
)
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.daemon import free_port
from tests.support.proxy import dropping_proxy
from tests.support.receiver import Receiver, Reply

api_server, http, api = support.api_server, support.http, support.api


@pytest.fixture
async def client(api: Api) -> AsyncIterator[Client]:
    async with Client(api.server.url, api.key) as c:
        yield c


async def wait_for_status(client: Client, endpoint_id: str, event_id: str,
                          status: str) -> Delivery:
    for _ in range(200):
        found = await client.get_delivery(endpoint_id, event_id)
        if found.status == status:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {found.status}, wanted {status}")


async def test_publish_and_look_up_with_typed_results(client: Client,
                                                      receiver: Receiver) -> None:
    ep = await client.create_endpoint(receiver.url, description="orders")
    assert isinstance(ep, Endpoint) and ep.url == receiver.url and ep.state == "active"
    assert ep.secret is not None and ep.secret.startswith("whsec_")
    published = await client.publish("transaction", {"n": 1})
    assert published.type == "transaction" and not published.duplicate
    assert [d.endpoint_id for d in published.deliveries] == [ep.id]
    (req,) = await receiver.wait_for(1)
    Webhook(ep.secret).verify(req.body, dict(req.headers))  # an independent verifier
    delivery = await wait_for_status(client, ep.id, published.id, "Success")
    assert delivery.attempts == 1 and delivery.data == {"n": 1}
    event = await client.get_event(published.id)
    assert isinstance(event, Event) and event.data == {"n": 1}
    assert event.deliveries is not None and event.deliveries[0].status == "Success"
    page = await client.list_events(types=["transaction"], limit=10)
    assert [e.id for e in page.data] == [published.id] and page.next_cursor is None
    (attempt,) = (await client.list_attempts(ep.id, published.id)).data
    assert attempt.response_status == 200 and json.loads(attempt.request_body)["data"] == {
        "n": 1}
    batch = await client.publish_batch([{"type": "block", "data": {"h": 1}},
                                        {"type": "block", "data": {"h": 2}}])
    assert len(batch) == 2 and len({b.id for b in batch}) == 2


async def test_endpoint_management(client: Client, receiver: Receiver) -> None:
    ep = await client.create_endpoint(receiver.url)
    updated = await client.update_endpoint(ep.id, description="new", max_in_flight=3)
    assert (updated.description, updated.max_in_flight) == ("new", 3)
    assert (await client.pause_endpoint(ep.id)).state == "paused"
    assert (await client.resume_endpoint(ep.id)).state == "active"
    assert (await client.get_secret(ep.id)).secret == ep.secret
    rotated = await client.rotate_secret(ep.id)
    assert rotated.secret != ep.secret and rotated.previous_secret_expires_timestamp
    assert [e.id for e in (await client.list_endpoints()).data] == [ep.id]
    await client.delete_endpoint(ep.id)
    with pytest.raises(ApiError) as caught:
        await client.get_endpoint(ep.id)
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        404, "not_found", "endpoint_id")


async def test_retry_and_replay_failed_events(client: Client, receiver: Receiver) -> None:
    receiver.reply_with(Reply(500), Reply(500), then=Reply(200))
    ep = await client.create_endpoint(receiver.url, retry_policy="none")
    first = await client.publish("transaction", {"n": 1})
    await wait_for_status(client, ep.id, first.id, "Failed")
    second = await client.publish("transaction", {"n": 2})
    await wait_for_status(client, ep.id, second.id, "Failed")
    await client.retry(ep.id, first.id)
    await wait_for_status(client, ep.id, first.id, "Success")
    assert await client.replay(ep.id) == 1
    await wait_for_status(client, ep.id, second.id, "Success")
    failed = await client.list_deliveries(ep.id, statuses=["Failed"])
    assert failed.data == []


async def test_api_errors_carry_code_message_and_field(client: Client, api: Api) -> None:
    with pytest.raises(ApiError) as caught:
        await client.create_endpoint("ftp://example.com/hook")
    assert caught.value.status == 422 and caught.value.field == "url"
    assert caught.value.code == "validation_error" and caught.value.message
    with pytest.raises(ApiError) as caught:
        await client.publish("no.such.type", {})
    assert caught.value.status == 422 and caught.value.field == "type"
    async with Client(api.server.url, "dk_wrong") as wrong:
        with pytest.raises(ApiError) as caught:
            await wrong.list_endpoints()
    assert caught.value.status == 401
    async with Client(f"http://127.0.0.1:{free_port()}", api.key) as nowhere:
        with pytest.raises(ApiError) as caught:
            await nowhere.list_events()
    assert (caught.value.status, caught.value.code) == (0, UNREACHABLE)


async def test_publish_retried_after_a_dropped_connection_is_stored_once(
    client: Client, api: Api
) -> None:
    """A proxy forwards the first publish to the daemon, then drops the connection
    before answering: the client tries again with the same Idempotency-Key."""
    seen: list[CIMultiDict[str]] = []
    # A tenant key may name only its own tenant (another is 403).
    async with (dropping_proxy(api.server.url, seen) as url,
                Client(url, api.key, tenant=api.tenant) as proxied):
        published = await proxied.publish("transaction", {"n": 1})
    keys = [(h.get("Idempotency-Key"), h.get(TENANT_HEADER)) for h in seen]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0][0]
    assert keys[0][1] == api.tenant
    assert published.duplicate is True
    assert len((await client.list_events()).data) == 1


async def test_sync_client(api: Api, receiver: Receiver) -> None:
    def use() -> None:
        with SyncClient(api.server.url, api.key) as sync:
            ep = sync.create_endpoint(receiver.url)
            published = sync.publish("transaction", {"n": 1}, idempotency_key="order-1")
            again = sync.publish("transaction", {"n": 1}, idempotency_key="order-1")
            assert again.id == published.id and again.duplicate
            assert sync.get_event(published.id).type == "transaction"
            assert sync.get_delivery(ep.id, published.id).endpoint_id == ep.id
            with pytest.raises(ApiError) as caught:
                sync.get_event("00000000-0000-0000-0000-000000000000")
            assert caught.value.status == 404

    await asyncio.to_thread(use)  # the receiver answers on this test's loop meanwhile
