"""Approval callbacks against a real `dispatcher serve` (two worker processes) and
real receivers: the decision rule, fail closed (retries, deadline), `?wait`,
finality, retry, isolation from events, and the `callback.decided` event."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, new_api, start_server
from tests.support.receiver import Receiver, Reply

if TYPE_CHECKING:  # imported by name, pytest would try to collect it here
    from tests.support.pg import TestPostgres

http = support.http

QUICK = '{kind = "fixed", delays = [0.05, 0.05, 0.05, 0.05, 0.05]}'  # 5 retries
SLOW_SECOND = '{kind = "fixed", delays = [0.05, 30.0]}'  # 2nd retry after the deadline


@pytest.fixture(scope="module")
def cb_server(pg: TestPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from start_server(
        pg, tmp_path_factory.mktemp("callbacks"),
        DISPATCHER_RETRY_POLICIES__QUICK=QUICK,
        DISPATCHER_RETRY_POLICIES__SLOW_SECOND=SLOW_SECOND,
        DISPATCHER_SERVER__WORKERS="2",
    )


@pytest.fixture
async def cb(http: aiohttp.ClientSession, cb_server: ApiServer) -> Api:
    return await new_api(http, cb_server)


@pytest.fixture
async def other(http: aiohttp.ClientSession, cb_server: ApiServer) -> Api:
    return await new_api(http, cb_server)


async def callback_endpoint(api: Api, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    return await api.create_endpoint(receiver.url, kind="callback", **fields)


async def ask(api: Api, data: Any = None, **fields: Any) -> dict[str, Any]:
    reply = await api.post("/v1/callbacks", {"type": "withdrawal.approve",
                                             "data": data or {"amount": "10"}, **fields})
    assert reply.status == 202, reply
    body: dict[str, Any] = reply.body
    return body


async def wait_decided(api: Api, callback_id: str, seconds: int = 20) -> dict[str, Any]:
    reply = await api.get(f"/v1/callbacks/{callback_id}?wait={seconds}")
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.body
    assert body["status"] in ("Approved", "Denied", "Failed"), body
    return body


async def test_ok_approves_after_one_request_signed_like_an_event(
    cb: Api, receiver: Receiver
) -> None:
    ep = await callback_endpoint(cb, receiver)
    assert ep["kind"] == "callback" and ep["event_types"] == []
    assert ep["retry_policy"] == "callback"
    receiver.reply_with(then=Reply(200, "ok"))
    created = await ask(cb, {"amount": "1.5", "to": "0xabc"})
    assert set(created) == {"id", "type", "status", "endpoint_id", "created_timestamp",
                            "deadline_timestamp"}
    assert created["endpoint_id"] == ep["id"]
    assert created["deadline_timestamp"] - created["created_timestamp"] == 300_000
    done = await wait_decided(cb, created["id"])
    assert done["status"] == "Approved" and done["decision"] == "ok"
    assert done["attempts"] == 1 and done["failure_reason"] is None
    assert done["decided_timestamp"] is not None and done["next_retry_timestamp"] is None
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    Webhook(ep["secret"]).verify(req.body, dict(req.headers))  # raises if not genuine
    assert json.loads(req.body) == {"event_id": created["id"], "type": "withdrawal.approve",
                                    "created_timestamp": created["created_timestamp"],
                                    "data": {"amount": "1.5", "to": "0xabc"}}


async def test_deny_with_201_denies_after_one_request(cb: Api, receiver: Receiver) -> None:
    await callback_endpoint(cb, receiver)
    receiver.reply_with(then=Reply(201, " \tdeny\r\n"))
    done = await wait_decided(cb, (await ask(cb))["id"])
    assert done["status"] == "Denied" and done["decision"] == "deny"
    assert done["attempts"] == 1 and len(receiver.requests) == 1


async def test_500_OK_yes_then_ok_approves_on_the_fourth_attempt(
    cb: Api, receiver: Receiver
) -> None:
    await callback_endpoint(cb, receiver, retry_policy="quick")
    receiver.reply_with(Reply(500, "ok"), Reply(200, "OK"), Reply(200, "yes"),
                        then=Reply(200, "ok"))
    created = await ask(cb)
    done = await wait_decided(cb, created["id"])
    assert done["status"] == "Approved" and done["attempts"] == 4
    assert len(receiver.requests) == 4
    logs = await cb.get(f"/v1/callbacks/{created['id']}/logs")
    assert logs.status == 200, logs
    seen = [(a["response"]["status"], a["response"]["body"], a["failure_reason"])
            for a in logs.body["data"]]
    assert seen == [(500, "ok", "http_status"), (200, "OK", "no_decision"),
                    (200, "yes", "no_decision"), (200, "ok", None)]


@pytest.mark.parametrize("answer", ['"ok"', "Ok", "", '{"result": "ok"}', "\u00a0ok", "ok."])
async def test_answers_that_are_not_a_decision_are_retried(
    cb: Api, receiver: Receiver, answer: str
) -> None:
    await callback_endpoint(cb, receiver, retry_policy="quick")
    receiver.reply_with(Reply(200, answer), then=Reply(200, "deny"))
    done = await wait_decided(cb, (await ask(cb))["id"])
    assert done["status"] == "Denied" and done["attempts"] == 2


async def test_a_receiver_that_never_decides_fails_after_exactly_the_policy_retries(
    cb: Api, receiver: Receiver
) -> None:
    await callback_endpoint(cb, receiver, retry_policy="quick")
    receiver.reply_with(then=Reply(200, "maybe"))
    done = await wait_decided(cb, (await ask(cb))["id"])
    assert done["status"] == "Failed" and done["decision"] is None
    assert done["failure_reason"] == "no_decision"
    assert done["attempts"] == 6 and done["retries_left"] == 0  # 1 + 5 retries
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 6


async def test_a_deadline_shorter_than_the_schedule_fails_with_deadline_expired(
    cb: Api, receiver: Receiver
) -> None:
    await callback_endpoint(cb, receiver, retry_policy="slow_second")
    receiver.reply_with(then=Reply(503, "busy"))
    t0 = time.monotonic()
    done = await wait_decided(cb, (await ask(cb, deadline_seconds=5))["id"])
    # The next attempt would come after the deadline: failed at once, not at the deadline.
    assert time.monotonic() - t0 < 4
    assert done["status"] == "Failed" and done["failure_reason"] == "deadline_expired"
    assert done["attempts"] == 2 and len(receiver.requests) == 2


async def test_a_paused_callback_endpoint_holds_while_the_deadline_runs(
    cb: Api, receiver: Receiver
) -> None:
    ep = await callback_endpoint(cb, receiver)
    assert (await cb.post(f"/v1/endpoints/{ep['id']}/pause")).status == 200
    created = await ask(cb, endpoint_id=ep["id"], deadline_seconds=1)
    held = await cb.get(f"/v1/callbacks/{created['id']}")
    assert held.body["status"] == "Pending" and held.body["held"] is True
    done = await wait_decided(cb, created["id"], seconds=10)
    assert done["status"] == "Failed" and done["failure_reason"] == "deadline_expired"
    assert done["attempts"] == 0 and receiver.requests == []
    # Resuming afterwards sends nothing: the callback stays Failed.
    assert (await cb.post(f"/v1/endpoints/{ep['id']}/resume")).status == 200
    await asyncio.sleep(0.5)
    assert receiver.requests == []
    assert (await cb.get(f"/v1/callbacks/{created['id']}")).body["status"] == "Failed"


async def test_wait_returns_within_100_ms_of_the_decision(cb: Api, receiver: Receiver) -> None:
    await callback_endpoint(cb, receiver)
    receiver.reply_with(then=Reply(200, "ok", delay=1.0))
    created = await ask(cb)
    reply = await cb.get(f"/v1/callbacks/{created['id']}?wait=10")
    returned_ms = time.time() * 1000
    assert reply.body["status"] == "Approved", reply
    lag_ms = returned_ms - reply.body["decided_timestamp"]
    assert 0 <= lag_ms + 2 < 100, lag_ms


async def test_wait_gives_up_after_the_seconds_asked(cb: Api, receiver: Receiver) -> None:
    await callback_endpoint(cb, receiver)
    receiver.reply_with(then=Reply(200, "ok", delay=5.0))
    created = await ask(cb)
    t0 = time.monotonic()
    reply = await cb.get(f"/v1/callbacks/{created['id']}?wait=1")
    assert 0.9 < time.monotonic() - t0 < 2.5
    assert reply.status == 200 and reply.body["status"] == "Pending"
    for bad in ("31", "-1", "x"):
        err = await cb.get(f"/v1/callbacks/{created['id']}?wait={bad}")
        assert err.status == 422 and err.error["field"] == "wait"


async def test_a_decided_callback_is_final(cb: Api, receiver: Receiver) -> None:
    await callback_endpoint(cb, receiver)
    receiver.reply_with(then=Reply(200, "ok"))
    created = await ask(cb)
    done = await wait_decided(cb, created["id"])
    receiver.reply_with(then=Reply(200, "deny"))
    retry = await cb.post(f"/v1/callbacks/{created['id']}/retry")
    assert retry.status == 409 and retry.error["code"] == "callback_decided"
    await asyncio.sleep(0.3)
    again = await cb.get(f"/v1/callbacks/{created['id']}")
    assert again.body == done and len(receiver.requests) == 1


async def test_a_callback_delivery_is_retried_only_as_a_callback(
    cb: Api, receiver: Receiver
) -> None:
    ep = await callback_endpoint(cb, receiver, retry_policy="none")
    receiver.reply_with(then=Reply(200, "later"))
    created = await ask(cb, {"amount": "7"})
    await wait_decided(cb, created["id"])
    listed = await cb.get(f"/v1/endpoints/{ep['id']}/events")
    assert [(e["event_id"], e["data"], e["status"]) for e in listed.body["data"]] == [
        (created["id"], {"amount": "7"}, "Failed")]
    one = await cb.post(f"/v1/endpoints/{ep['id']}/events/{created['id']}/retry")
    assert one.status == 409 and one.error["code"] == "callback_endpoint"
    bulk = await cb.post(f"/v1/endpoints/{ep['id']}/retry")
    assert bulk.status == 409 and bulk.error["code"] == "callback_endpoint"
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 1


async def test_a_failed_callback_may_be_retried_before_its_deadline(
    cb: Api, receiver: Receiver
) -> None:
    await callback_endpoint(cb, receiver, retry_policy="none")
    receiver.reply_with(Reply(200, "later"), then=Reply(200, "ok"))
    created = await ask(cb)
    failed = await wait_decided(cb, created["id"])
    assert failed["status"] == "Failed" and failed["failure_reason"] == "no_decision"
    retry = await cb.post(f"/v1/callbacks/{created['id']}/retry")
    assert retry.status == 201, retry
    done = await wait_decided(cb, created["id"])
    assert done["status"] == "Approved" and done["attempts"] == 2


async def test_retry_is_refused_unless_failed_and_before_the_deadline(
    cb: Api, receiver: Receiver
) -> None:
    await callback_endpoint(cb, receiver)
    receiver.reply_with(then=Reply(500, "", delay=0.2))
    created = await ask(cb, deadline_seconds=1)
    early = await cb.post(f"/v1/callbacks/{created['id']}/retry")
    assert early.status == 409 and early.error["field"] == "status"
    done = await wait_decided(cb, created["id"], seconds=10)
    assert done["failure_reason"] == "deadline_expired"
    await asyncio.sleep(max(0.0, done["deadline_timestamp"] / 1000 - time.time()) + 0.05)
    late = await cb.post(f"/v1/callbacks/{created['id']}/retry")
    assert late.status == 409 and late.error["code"] == "deadline_passed"


async def test_events_and_callbacks_never_cross(
    cb: Api, make_receiver: Any
) -> None:
    hooks: Receiver = await make_receiver()
    approver: Receiver = await make_receiver()
    approver.reply_with(then=Reply(200, "ok"))
    webhook = await cb.create_endpoint(hooks.url)  # every type: ["*"]
    callback = await callback_endpoint(cb, approver)
    published = await cb.publish("wallets.created", {"wallet_id": "w1"})
    created = await ask(cb)
    await wait_decided(cb, created["id"])
    await cb.wait_for_status(webhook["id"], published["id"], "Success")
    await asyncio.sleep(0.3)
    assert [e["endpoint_id"] for e in published["deliveries"]] == [webhook["id"]]
    assert [json.loads(r.body)["event_id"] for r in approver.requests] == [created["id"]]
    got = [json.loads(r.body) for r in hooks.requests]
    assert created["id"] not in {g["event_id"] for g in got}
    assert {g["type"] for g in got} == {"wallets.created", "callback.decided"}
    # A callback cannot be sent to a webhook endpoint, nor listed as an event.
    wrong = await cb.post("/v1/callbacks", {"type": "x", "data": {},
                                            "endpoint_id": webhook["id"]})
    assert wrong.status == 422 and wrong.error["field"] == "endpoint_id"
    assert (await cb.get(f"/v1/events/{created['id']}")).status == 404
    listed = (await cb.get("/v1/events")).body["data"]
    assert {e["id"] for e in listed} >= {published["id"]}
    assert created["id"] not in {e["id"] for e in listed}
    assert callback["id"] not in {d["endpoint_id"] for d in published["deliveries"]}


async def test_callback_decided_reaches_subscribed_webhook_endpoints(
    cb: Api, make_receiver: Any
) -> None:
    hooks: Receiver = await make_receiver()
    approver: Receiver = await make_receiver()
    approver.reply_with(then=Reply(200, "deny"))
    await cb.create_endpoint(hooks.url, event_types=["callback.decided"])
    await callback_endpoint(cb, approver, retry_policy="none")
    denied = await ask(cb)
    await wait_decided(cb, denied["id"])
    async with asyncio.timeout(10):
        while not hooks.requests:
            await asyncio.sleep(0.05)
    event = json.loads(hooks.requests[0].body)
    assert event["type"] == "callback.decided"
    assert event["data"]["id"] == denied["id"]
    assert event["data"]["type"] == "withdrawal.approve"
    assert event["data"]["status"] == "Denied" and event["data"]["decision"] == "deny"
    assert event["data"]["failure_reason"] is None


async def test_endpoint_kind_rules(cb: Api, receiver: Receiver) -> None:
    webhook = await cb.create_endpoint(receiver.url)
    assert webhook["kind"] == "webhook" and webhook["event_types"] == ["*"]
    refused = await cb.post("/v1/endpoints", {"url": receiver.url, "kind": "callback",
                                              "event_types": ["*"]})
    assert refused.status == 422 and refused.error["field"] == "event_types"
    bad_kind = await cb.post("/v1/endpoints", {"url": receiver.url, "kind": "both"})
    assert bad_kind.status == 422 and bad_kind.error["field"] == "kind"
    ep = await callback_endpoint(cb, receiver)
    patch = await cb.patch(f"/v1/endpoints/{ep['id']}", {"event_types": ["*"]})
    assert patch.status == 422 and patch.error["field"] == "event_types"
    patch = await cb.patch(f"/v1/endpoints/{ep['id']}", {"kind": "webhook"})
    assert patch.status == 422 and patch.error["field"] == "kind"
    shown = await cb.get(f"/v1/endpoints/{ep['id']}")
    assert shown.body["kind"] == "callback" and shown.body["event_types"] == []
    ok = await cb.patch(f"/v1/endpoints/{ep['id']}", {"timeout_seconds": 3})
    assert ok.status == 200 and ok.body["kind"] == "callback"


async def test_bad_input_is_refused_and_changes_nothing(
    cb: Api, other: Api, receiver: Receiver
) -> None:
    none = await cb.post("/v1/callbacks", {"type": "x", "data": {}})
    assert none.status == 422 and none.error["field"] == "endpoint_id"
    first = await callback_endpoint(cb, receiver)
    for body, field in (
        ({"type": "x", "data": [1]}, "data"),
        ({"type": "x", "data": "ok"}, "data"),
        ({"type": "", "data": {}}, "type"),
        ({"type": "x" * 101, "data": {}}, "type"),
        ({"data": {}}, "type"),
        ({"type": "x"}, "data"),
        ({"type": "x", "data": {}, "deadline_seconds": 0}, "deadline_seconds"),
        ({"type": "x", "data": {}, "endpoint_id": "nope"}, "endpoint_id"),
        ({"type": "x", "data": {}, "colour": "red"}, "colour"),
    ):
        reply = await cb.post("/v1/callbacks", body)
        assert reply.status == 422 and reply.error["field"] == field, (body, reply)
    await callback_endpoint(cb, receiver)
    two = await cb.post("/v1/callbacks", {"type": "x", "data": {}})
    assert two.status == 422 and two.error["field"] == "endpoint_id"
    assert (await cb.get("/v1/callbacks")).body["data"] == []
    named = await ask(cb, endpoint_id=first["id"])
    # Another tenant sees none of it.
    for path in (f"/v1/callbacks/{named['id']}", f"/v1/callbacks/{named['id']}/logs"):
        assert (await other.get(path)).status == 404
    assert (await other.post(f"/v1/callbacks/{named['id']}/retry")).status == 404
    assert (await other.get("/v1/callbacks")).body["data"] == []
    foreign = await other.post("/v1/callbacks", {"type": "x", "data": {},
                                                 "endpoint_id": first["id"]})
    assert foreign.status == 422 and foreign.error["field"] == "endpoint_id"


async def test_idempotency_key_answers_the_original(cb: Api, receiver: Receiver) -> None:
    await callback_endpoint(cb, receiver)
    headers = {"Idempotency-Key": "withdrawal-42"}
    first = await cb.post("/v1/callbacks", {"type": "x", "data": {"n": 1}}, headers=headers)
    again = await cb.post("/v1/callbacks", {"type": "x", "data": {"n": 1}}, headers=headers)
    assert first.status == again.status == 202
    assert again.body["id"] == first.body["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len((await cb.get("/v1/callbacks")).body["data"]) == 1


async def test_list_filters_and_pages(cb: Api, make_receiver: Any) -> None:
    yes: Receiver = await make_receiver()
    no: Receiver = await make_receiver()
    yes.reply_with(then=Reply(200, "ok"))
    no.reply_with(then=Reply(200, "deny"))
    ep_yes = await callback_endpoint(cb, yes)
    ep_no = await callback_endpoint(cb, no)
    ids = []
    for i in range(3):
        ids.append((await ask(cb, {"i": i}, endpoint_id=ep_yes["id"]))["id"])
    denied = (await ask(cb, endpoint_id=ep_no["id"]))["id"]
    for callback_id in [*ids, denied]:
        await wait_decided(cb, callback_id)
    approved = await cb.get("/v1/callbacks?status=Approved&limit=2")
    assert approved.status == 200
    assert [c["id"] for c in approved.body["data"]] == ids[::-1][:2]
    rest = await cb.get(f"/v1/callbacks?status=Approved&limit=2"
                        f"&cursor={approved.body['next_cursor']}")
    assert [c["id"] for c in rest.body["data"]] == [ids[0]] and rest.body["next_cursor"] is None
    only_denied = await cb.get("/v1/callbacks?status=Denied")
    assert [c["id"] for c in only_denied.body["data"]] == [denied]
    assert (await cb.get("/v1/callbacks?type=other")).body["data"] == []
    bad = await cb.get("/v1/callbacks?status=Success")
    assert bad.status == 422 and bad.error["field"] == "status"


async def test_two_daemons_racing_keep_the_first_decision(
    daemon_factory: Any, http: aiohttp.ClientSession, receiver: Receiver, tmp_path: Path
) -> None:
    """The first daemon's request hangs past its lease; the second daemon sends
    again and gets `deny`; the first's late `ok` is logged and ignored."""
    env = {"DISPATCHER_SERVER__WORKERS": "1", "DISPATCHER_DELIVERY__LEASE_SECONDS": "5"}
    first = await daemon_factory(**env)
    await daemon_factory(**env)
    api = await new_api(http, ApiServer(first.url, first.env["DISPATCHER_DATABASE_URL"], first))
    await api.create_endpoint(receiver.url, kind="callback", timeout_seconds=15)
    receiver.reply_with(Reply(200, "ok", delay=6.5), then=Reply(200, "deny"))
    created = await ask(api)
    done = await wait_decided(api, created["id"], seconds=15)
    assert done["status"] == "Denied"
    async with asyncio.timeout(10):  # the late answer arrives and is logged
        while True:
            logs = (await api.get(f"/v1/callbacks/{created['id']}/logs")).body["data"]
            if len(logs) == 2:
                break
            await asyncio.sleep(0.1)
    assert sorted(a["response"]["body"] for a in logs) == ["deny", "ok"]
    await asyncio.sleep(0.3)
    final = await api.get(f"/v1/callbacks/{created['id']}")
    assert final.body["status"] == "Denied" and final.body["decision"] == "deny"
    assert len(receiver.requests) == 2
