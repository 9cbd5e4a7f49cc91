"""Approval callbacks through `dispatcher.client` against a real daemon and a real
callback receiver answering `ok` / `deny`: typed answers, waiting for the decision,
listing, logs, retry, errors, the Idempotency-Key reused on a retried request, and
the blocking SyncClient."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from multidict import CIMultiDict
from standardwebhooks import Webhook

from dispatcher.client import ApiError, Callback, CallbackRequest, Client, SyncClient
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.proxy import dropping_proxy
from tests.support.receiver import Receiver, Reply

api_server, http, api = support.api_server, support.http, support.api

MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
async def client(api: Api) -> AsyncIterator[Client]:
    async with Client(api.server.url, api.key) as c:
        yield c


async def test_request_approval_then_wait_for_ok_and_deny(client: Client,
                                                          receiver: Receiver) -> None:
    ep = await client.create_endpoint(receiver.url, kind="callback")
    assert ep.kind == "callback" and ep.event_types == [] and ep.secret
    receiver.reply_with(Reply(200, "ok"), then=Reply(200, "deny\n"))

    asked = await client.request_approval("withdrawal.approve", {"amount": "250.00"})
    assert isinstance(asked, CallbackRequest)
    assert (asked.status, asked.endpoint_id, asked.type) == ("Pending", ep.id,
                                                             "withdrawal.approve")
    assert asked.deadline_timestamp > asked.created_timestamp
    approved = await client.wait_for_decision(asked.id, timeout=20)
    assert isinstance(approved, Callback)
    assert approved.approved and approved.decided and approved.decision == "ok"
    assert approved.attempts == 1 and approved.data == {"amount": "250.00"}
    (req,) = await receiver.wait_for(1)
    Webhook(ep.secret).verify(req.body, dict(req.headers))  # an independent verifier

    denied_ask = await client.request_approval("withdrawal.approve", {"amount": "9e9"},
                                               endpoint_id=ep.id, deadline_seconds=60)
    assert denied_ask.deadline_timestamp - denied_ask.created_timestamp == 60_000
    denied = await client.wait_for_decision(denied_ask.id, timeout=20)
    assert (denied.status, denied.decision, denied.approved, denied.decided) == (
        "Denied", "deny", False, True)

    listed = await client.list_callbacks()
    assert [c.id for c in listed.data] == [denied.id, approved.id]  # newest first
    only = await client.list_callbacks(statuses=["Denied"], types=["withdrawal.approve"])
    assert [c.id for c in only.data] == [denied.id]
    (attempt,) = (await client.callback_logs(approved.id)).data
    assert attempt.response_status == 200 and attempt.response_body == "ok"
    shown = await client.get_callback(approved.id)
    assert shown == approved


async def test_wait_for_decision_answers_the_undecided_callback_at_its_timeout(
    client: Client, receiver: Receiver
) -> None:
    ep = await client.create_endpoint(receiver.url, kind="callback")
    await client.pause_endpoint(ep.id)  # a paused callback endpoint holds its callbacks
    asked = await client.request_approval("withdrawal.approve", {"amount": "1"},
                                          endpoint_id=ep.id)
    started = time.monotonic()
    found = await client.wait_for_decision(asked.id, timeout=1.5)
    elapsed = time.monotonic() - started
    assert not found.decided and found.status == "Pending" and found.held
    assert 1.4 <= elapsed < 6, elapsed
    assert receiver.requests == []


async def test_retry_a_failed_callback_and_api_errors(client: Client,
                                                      receiver: Receiver) -> None:
    receiver.reply_with(Reply(500, "busy"), then=Reply(200, "ok"))
    ep = await client.create_endpoint(receiver.url, kind="callback", retry_policy="none")
    asked = await client.request_approval("withdrawal.approve", {"amount": "1"})
    failed = await client.wait_for_decision(asked.id, timeout=20)
    assert (failed.status, failed.failure_reason, failed.approved) == (
        "Failed", "http_status", False)
    await client.retry_callback(asked.id)
    assert (await client.wait_for_decision(asked.id, timeout=20)).approved

    with pytest.raises(ApiError) as caught:
        await client.retry_callback(asked.id)  # a decision is final
    assert (caught.value.status, caught.value.code) == (409, "callback_decided")
    with pytest.raises(ApiError) as caught:
        await client.get_callback(MISSING)
    assert (caught.value.status, caught.value.field) == (404, "callback_id")
    with pytest.raises(ApiError) as caught:
        await client.request_approval("withdrawal.approve", {}, endpoint_id=MISSING)
    assert (caught.value.status, caught.value.field) == (422, "endpoint_id")
    with pytest.raises(ApiError) as caught:
        await client.create_endpoint(receiver.url, kind="approval")
    assert (caught.value.status, caught.value.field) == (422, "kind")
    assert [c.id for c in (await client.list_callbacks()).data] == [asked.id]
    assert len((await client.list_endpoints()).data) == 1
    assert ep.kind == "callback"


async def test_request_approval_retried_after_a_dropped_connection_asks_once(
    client: Client, api: Api, receiver: Receiver
) -> None:
    await client.create_endpoint(receiver.url, kind="callback")
    seen: list[CIMultiDict[str]] = []
    async with dropping_proxy(api.server.url, seen) as url, Client(url, api.key) as proxied:
        asked = await proxied.request_approval("withdrawal.approve", {"amount": "5"})
    keys = [h.get("Idempotency-Key") for h in seen]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
    assert [c.id for c in (await client.list_callbacks()).data] == [asked.id]
    assert (await client.wait_for_decision(asked.id, timeout=20)).approved
    assert len(receiver.requests) == 1


async def test_sync_client_callbacks(api: Api, receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(200, "deny"))

    def use() -> None:
        with SyncClient(api.server.url, api.key) as sync:
            ep = sync.create_endpoint(receiver.url, kind="callback")
            assert ep.kind == "callback"
            asked = sync.request_approval("withdrawal.approve", {"amount": "1"},
                                          idempotency_key="w-1")
            again = sync.request_approval("withdrawal.approve", {"amount": "1"},
                                          idempotency_key="w-1")
            assert again.id == asked.id
            decided = sync.wait_for_decision(asked.id, timeout=20)
            assert decided.status == "Denied" and not decided.approved
            assert sync.get_callback(asked.id, wait=1).decision == "deny"
            assert [c.id for c in sync.list_callbacks().data] == [asked.id]
            assert sync.callback_logs(asked.id).data[0].response_body == "deny"
            with pytest.raises(ApiError) as caught:
                sync.retry_callback(asked.id)
            assert caught.value.status == 409

    await asyncio.to_thread(use)  # the receiver answers on this test's loop meanwhile
