"""Cobo wire compatibility, checked with Cobo's own SDK (`cobo-waas2`): deliveries of
every Cobo event type verify with the routine of the SDK's `server_demo.py` and
parse as `WebhookEvent`; the demo app itself acknowledges all of them; a Cobo-scheme
callback is the Transaction itself and the demo's `ok` approves it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from cobo_waas2 import Transaction, WebhookEvent

from dispatcher.catalogue import builtin_event_types
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, new_api, start_server
from tests.support.cobo import SDK_TYPES, demo_receiver, demo_verifies
from tests.support.receiver import Receiver, Reply

if TYPE_CHECKING:  # imported by name, pytest would try to collect it here
    from tests.support.pg import TestPostgres

http = support.http
CATALOGUE = builtin_event_types()


@pytest.fixture(scope="module")
def cobo_server(pg: TestPostgres,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from start_server(pg, tmp_path_factory.mktemp("cobo"),
                            DISPATCHER_RETRY_POLICIES__QUICK='{kind = "fixed", delays = [0.05]}')


@pytest.fixture
async def api(http: aiohttp.ClientSession, cobo_server: ApiServer) -> Api:
    return await new_api(http, cobo_server)


async def public_key(api: Api) -> str:
    reply = await api.get("/v1/signing-key")
    assert reply.status == 200, reply
    key: str = reply.body["public_key"]
    return key


async def publish_every_cobo_type(api: Api) -> list[dict[str, Any]]:
    events = [{"type": t, "data": CATALOGUE[t].sample} for t in SDK_TYPES]
    reply = await api.post("/v1/events/batch", {"events": events})
    assert reply.status == 202, reply
    published: list[dict[str, Any]] = reply.body["data"]
    return published


async def wait_requests(receiver: Receiver, count: int) -> None:
    async with asyncio.timeout(20):
        while len(receiver.requests) < count:
            await asyncio.sleep(0.05)


async def test_every_cobo_type_verifies_and_parses_as_the_sdk_demo_does(
    api: Api, receiver: Receiver
) -> None:
    endpoint = await api.create_endpoint(receiver.url, signing_scheme="cobo",
                                         event_types=SDK_TYPES)
    key = await public_key(api)
    published = await publish_every_cobo_type(api)
    await wait_requests(receiver, len(SDK_TYPES))
    ids = {p["id"]: p["type"] for p in published}
    for req in receiver.requests:
        assert demo_verifies(key, req.headers, req.body)
        event = WebhookEvent.from_dict(json.loads(req.body.decode("utf8")))
        assert event is not None
        assert event.url == receiver.url == endpoint["url"]
        assert event.event_id in ids and event.type.value == ids[event.event_id]
        parsed = event.data.actual_instance
        assert parsed is not None and parsed.data_type == CATALOGUE[ids[event.event_id]].sample[
            "data_type"]
    assert {json.loads(r.body)["event_id"] for r in receiver.requests} == set(ids)
    # The status lookup of a delivered event parses too.
    first = published[0]["id"]
    status = await api.wait_for_status(endpoint["id"], first, "Success")
    looked_up = WebhookEvent.from_dict(status)
    assert looked_up is not None and looked_up.status is not None
    assert looked_up.status.value == "Success" and looked_up.url == receiver.url
    # The logs show the body as sent, url included.
    logs = await api.get(f"/v1/endpoints/{endpoint['id']}/events/{first}/logs")
    sent = next(r.body for r in receiver.requests if json.loads(r.body)["event_id"] == first)
    assert logs.body["data"][0]["request"]["body"] == sent.decode()


async def test_a_retry_sends_the_same_bytes(api: Api, receiver: Receiver) -> None:
    await api.create_endpoint(receiver.url, signing_scheme="cobo", retry_policy="quick")
    key = await public_key(api)
    receiver.reply_with(Reply(500, "busy"), then=Reply(200, "ok"))
    await api.publish("wallets.transaction.created",
                      CATALOGUE["wallets.transaction.created"].sample)
    await wait_requests(receiver, 2)
    first, second = receiver.requests[:2]
    assert first.body == second.body
    assert all(demo_verifies(key, r.headers, r.body) for r in (first, second))
    assert json.loads(first.body)["url"] == receiver.url


async def test_other_schemes_keep_the_envelope_without_url(
    api: Api, receiver: Receiver
) -> None:
    await api.create_endpoint(receiver.url)  # standard-v1
    await api.publish("wallets.created", CATALOGUE["wallets.created"].sample)
    await wait_requests(receiver, 1)
    assert list(json.loads(receiver.requests[0].body)) == [
        "event_id", "type", "created_timestamp", "data"]


async def test_the_sdk_demo_app_acknowledges_every_cobo_delivery(api: Api) -> None:
    async with demo_receiver(await public_key(api)) as demo:
        endpoint = await api.create_endpoint(demo + "/api/webhook", signing_scheme="cobo",
                                             event_types=SDK_TYPES)
        await publish_every_cobo_type(api)
        async with asyncio.timeout(30):
            while True:
                page = await api.get(f"/v1/endpoints/{endpoint['id']}/events?limit=100")
                done = [e for e in page.body["data"] if e["status"] != "Pending"]
                if len(done) == len(SDK_TYPES):
                    break
                await asyncio.sleep(0.1)
    failed = [(e["type"], e["failure_reason"]) for e in done if e["status"] != "Success"]
    assert failed == []  # a 401 (signature) or 500 (model) would be listed here


async def test_a_cobo_callback_is_the_transaction_and_the_demo_approves_it(
    api: Api, receiver: Receiver
) -> None:
    transaction = CATALOGUE["wallets.transaction.created"].sample
    key = await public_key(api)
    # What arrives: exactly the Transaction, signed as the demo verifies.
    recorder = await api.create_endpoint(receiver.url, kind="callback", signing_scheme="cobo")
    receiver.reply_with(then=Reply(200, "ok"))
    reply = await api.post("/v1/callbacks", {"type": "withdrawal.approve", "data": transaction,
                                             "endpoint_id": recorder["id"]})
    assert reply.status == 202, reply
    await wait_requests(receiver, 1)
    req = receiver.requests[0]
    assert demo_verifies(key, req.headers, req.body)
    assert json.loads(req.body) == transaction
    tx = Transaction.from_dict(json.loads(req.body.decode("utf8")))
    assert tx is not None and tx.transaction_id == transaction["transaction_id"]
    listed = await api.get(f"/v1/endpoints/{recorder['id']}/events")
    assert listed.status == 200 and listed.body["data"][0]["data"] == transaction
    # The demo app itself answers `ok`: the callback is approved.
    async with demo_receiver(key) as demo:
        approver = await api.create_endpoint(demo + "/api/callback", kind="callback",
                                             signing_scheme="cobo")
        asked = await api.post("/v1/callbacks", {"type": "withdrawal.approve",
                                                 "data": transaction,
                                                 "endpoint_id": approver["id"]})
        done = await api.get(f"/v1/callbacks/{asked.body['id']}?wait=20")
    assert done.body["status"] == "Approved" and done.body["decision"] == "ok", done
