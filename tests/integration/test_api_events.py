"""Publish, event-status lookup, attempt logs and retries through real HTTP against
the daemon, with the delivery engine sending to real local receivers."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.receiver import Receiver, Reply

api_server, http, api, other = support.api_server, support.http, support.api, support.other

STATUS_FIELDS = {"event_id", "endpoint_id", "url", "created_timestamp", "type", "data",
                 "status", "next_retry_timestamp", "retries_left", "attempts",
                 "last_attempt_timestamp", "failure_reason", "held", "ordering_key",
                 "blocked_by"}
TX = {"chainIndex": "1", "txHash": "0xabc", "value": "1.5", "note": "héllo"}


async def test_publish_fans_out_to_subscribed_endpoints(api: Api, receiver: Receiver) -> None:
    subscribed = await api.create_endpoint(receiver.url, event_types=["transaction"])
    everything = await api.create_endpoint(receiver.url)
    await api.create_endpoint(receiver.url, event_types=["block"])
    before = int(time.time() * 1000)
    published = await api.publish("transaction", TX)
    assert set(published) == {"id", "type", "created_timestamp", "deliveries", "duplicate"}
    assert published["type"] == "transaction" and published["duplicate"] is False
    assert before - 1000 <= published["created_timestamp"] <= int(time.time() * 1000) + 1000
    assert sorted(d["endpoint_id"] for d in published["deliveries"]) == sorted(
        [subscribed["id"], everything["id"]])
    assert all(d["status"] == "Pending" for d in published["deliveries"])
    requests = await receiver.wait_for(2)
    body = json.loads(requests[0].body)
    assert body == {"event_id": published["id"], "type": "transaction",
                    "created_timestamp": published["created_timestamp"], "data": TX}


async def test_status_lookup_is_shaped_like_cobo(api: Api, receiver: Receiver) -> None:
    ep = await api.create_endpoint(receiver.url, retry_policy="okx")
    ev = await api.publish("wallets.transaction.succeeded", {"data_type": "Transaction"})
    status = await api.wait_for_status(ep["id"], ev["id"], "Success")
    assert set(status) == STATUS_FIELDS
    assert status["event_id"] == ev["id"] and status["endpoint_id"] == ep["id"]
    assert status["url"] == receiver.url
    assert status["created_timestamp"] == ev["created_timestamp"]
    assert status["type"] == "wallets.transaction.succeeded"
    assert status["data"] == {"data_type": "Transaction"}
    assert status["next_retry_timestamp"] is None
    assert status["retries_left"] == 0 and status["attempts"] == 1  # finished
    assert status["held"] is False and status["failure_reason"] is None


async def test_retrying_event_shows_next_retry_and_logs(api: Api, receiver: Receiver) -> None:
    receiver.reply_with(then=Reply(500, b"boom", {"X-Why": "down"}))
    ep = await api.create_endpoint(receiver.url, retry_policy="standard")
    ev = await api.publish("transaction", TX)
    status = await api.wait_for_status(ep["id"], ev["id"], "Retrying")
    # standard has 7 retries; the first is scheduled and still counts
    assert status["retries_left"] == 7 and status["attempts"] == 1
    # standard policy: the first retry comes 5 s after the first attempt
    assert status["next_retry_timestamp"] - status["last_attempt_timestamp"] in range(4900, 5200)
    assert status["failure_reason"] == "http_status"
    logs = await api.get(f"/v1/endpoints/{ep['id']}/events/{ev['id']}/logs")
    assert logs.status == 200 and logs.body["next_cursor"] is None
    [attempt] = logs.body["data"]
    assert attempt["attempt"] == 1
    assert attempt["failure_reason"] == "http_status"
    assert attempt["response"]["status"] == 500
    assert attempt["response"]["body"] == "boom"
    assert attempt["response"]["headers"]["X-Why"] == "down"
    assert attempt["request"]["headers"]["webhook-id"] == ev["id"]
    assert json.loads(attempt["request"]["body"])["event_id"] == ev["id"]
    assert attempt["duration_ms"] >= 0

    # Retry now: 201 and a second request well before the 5 s schedule.
    retried = await api.post(f"/v1/endpoints/{ep['id']}/events/{ev['id']}/retry")
    assert retried.status == 201 and retried.body == {"retried": True}
    await receiver.wait_for(2, timeout=3)
    for _ in range(100):
        logs = await api.get(f"/v1/endpoints/{ep['id']}/events/{ev['id']}/logs?limit=1")
        if logs.body["next_cursor"]:
            break
        await asyncio.sleep(0.05)
    second = await api.get(f"/v1/endpoints/{ep['id']}/events/{ev['id']}/logs?limit=1"
                           f"&cursor={logs.body['next_cursor']}")
    assert [a["attempt"] for a in logs.body["data"] + second.body["data"]] == [1, 2]


async def test_retry_only_for_retrying_or_failed(api: Api, receiver: Receiver) -> None:
    receiver.reply_with(Reply(500), then=Reply(200))
    ep = await api.create_endpoint(receiver.url, retry_policy="none")
    failed = await api.publish("transaction", TX)
    status = await api.wait_for_status(ep["id"], failed["id"], "Failed")
    assert status["retries_left"] == 0 and status["next_retry_timestamp"] is None
    ok = await api.post(f"/v1/endpoints/{ep['id']}/events/{failed['id']}/retry")
    assert ok.status == 201
    await api.wait_for_status(ep["id"], failed["id"], "Success")
    again = await api.post(f"/v1/endpoints/{ep['id']}/events/{failed['id']}/retry")
    assert again.status == 409 and again.error["code"] == "conflict"
    assert "Success" in again.error["message"]
    missing = await api.post(f"/v1/endpoints/{ep['id']}/events/"
                             "00000000-0000-0000-0000-000000000000/retry")
    assert missing.status == 404


async def test_paused_endpoint_holds_events_until_resumed(api: Api, receiver: Receiver) -> None:
    ep = await api.create_endpoint(receiver.url)
    assert (await api.post(f"/v1/endpoints/{ep['id']}/pause")).status == 200
    ev = await api.publish("transaction", TX)
    assert ev["deliveries"] == [{"endpoint_id": ep["id"], "status": "Pending"}]
    await asyncio.sleep(0.3)
    assert receiver.requests == []
    held = (await api.get(f"/v1/endpoints/{ep['id']}/events/{ev['id']}")).body
    assert held["status"] == "Pending" and held["held"] is True
    assert held["next_retry_timestamp"] is None
    pending_retry = await api.post(f"/v1/endpoints/{ep['id']}/events/{ev['id']}/retry")
    assert pending_retry.status == 409
    assert (await api.post(f"/v1/endpoints/{ep['id']}/resume")).status == 200
    await receiver.wait_for(1)
    await api.wait_for_status(ep["id"], ev["id"], "Success")


async def test_bulk_replay_of_failed_events(api: Api, receiver: Receiver) -> None:
    receiver.reply_with(Reply(500), Reply(500), Reply(500), then=Reply(200))
    ep = await api.create_endpoint(receiver.url, retry_policy="none")
    events = [await api.publish("transaction", {"n": i}) for i in range(3)]
    for ev in events:
        await api.wait_for_status(ep["id"], ev["id"], "Failed")
    future = int(time.time() * 1000) + 3_600_000
    none = await api.post(f"/v1/endpoints/{ep['id']}/retry", {"status": "Failed",
                                                                "since": future})
    assert none.status == 202 and none.body == {"queued": 0}
    replay = await api.post(f"/v1/endpoints/{ep['id']}/retry",
                            {"status": ["Failed", "Retrying"], "until": future})
    assert replay.status == 202 and replay.body == {"queued": 3}
    await receiver.wait_for(6)
    for ev in events:
        await api.wait_for_status(ep["id"], ev["id"], "Success")
    bad = await api.post(f"/v1/endpoints/{ep['id']}/retry", {"status": "Success"})
    assert bad.status == 422 and bad.error["field"] == "status"
    bad = await api.post(f"/v1/endpoints/{ep['id']}/retry", {"since": "yesterday"})
    assert bad.status == 422 and bad.error["field"] == "since"
    # an absent body means the defaults; a JSON null is not an object
    null = await api.call("POST", f"/v1/endpoints/{ep['id']}/retry", data=b"null",
                          headers={"Content-Type": "application/json"})
    assert null.status == 422 and "must be a JSON object" in null.error["message"]


async def test_endpoint_events_filter_and_paginate(api: Api, receiver: Receiver) -> None:
    receiver.script = lambda req, n: Reply(500 if b'"fail"' in req.body else 200)
    ep = await api.create_endpoint(receiver.url, retry_policy="none")
    published = []
    for i in range(5):
        kind = "transaction" if i % 2 == 0 else "block"
        published.append(await api.publish(kind, {"i": i, "fail": i == 4} if i == 4 else {"i": i}))
    await api.wait_for_status(ep["id"], published[4]["id"], "Failed")
    for ev in published[:4]:
        await api.wait_for_status(ep["id"], ev["id"], "Success")
    base = f"/v1/endpoints/{ep['id']}/events"

    async def ids(query: str) -> list[str]:
        out: list[str] = []
        cursor = None
        while True:
            q = query + (f"&cursor={cursor}" if cursor else "")
            reply = await api.get(f"{base}?{q}")
            assert reply.status == 200, reply
            out += [e["event_id"] for e in reply.body["data"]]
            cursor = reply.body["next_cursor"]
            if not cursor:
                return out

    newest_first = [ev["id"] for ev in reversed(published)]
    assert await ids("limit=2") == newest_first
    assert await ids("limit=1&type=block") == [published[3]["id"], published[1]["id"]]
    assert await ids("status=Failed") == [published[4]["id"]]
    assert await ids("status=Success,Failed&type=transaction") == [
        published[4]["id"], published[2]["id"], published[0]["id"]]
    after = published[2]["created_timestamp"]
    assert set(await ids(f"since={after}")) <= set(newest_first[:3])
    assert await ids("until=0") == []
    for bad in ("status=Done", "since=abc", "until=-1", "cursor=abc", "limit=1000"):
        reply = await api.get(f"{base}?{bad}")
        assert reply.status == 422, bad
        assert reply.error["field"] == bad.split("=")[0]


async def test_event_with_status_per_endpoint_and_event_list(
    api: Api, receiver: Receiver
) -> None:
    first = await api.create_endpoint(receiver.url)
    second = await api.create_endpoint(receiver.url, event_types=["statuses", "messages"])
    ev = await api.publish("messages", {"messages": []})
    await api.wait_for_status(first["id"], ev["id"], "Success")
    await api.wait_for_status(second["id"], ev["id"], "Success")
    shown = await api.get(f"/v1/events/{ev['id']}")
    assert shown.status == 200
    assert shown.body["id"] == ev["id"] and shown.body["data"] == {"messages": []}
    assert shown.body["type"] == "messages"
    assert {d["endpoint_id"]: d["status"] for d in shown.body["deliveries"]} == {
        first["id"]: "Success", second["id"]: "Success"}
    assert all(d["url"] == receiver.url for d in shown.body["deliveries"])
    later = await api.publish("statuses", {"statuses": []})
    listed = await api.get("/v1/events?limit=1")
    assert [e["id"] for e in listed.body["data"]] == [later["id"]]
    rest = await api.get(f"/v1/events?limit=5&cursor={listed.body['next_cursor']}")
    assert [e["id"] for e in rest.body["data"]] == [ev["id"]]
    assert rest.body["next_cursor"] is None
    typed = await api.get("/v1/events?type=messages")
    assert [e["id"] for e in typed.body["data"]] == [ev["id"]]


async def test_idempotency_key_returns_the_original_event(
    api: Api, other: Api, receiver: Receiver
) -> None:
    await api.create_endpoint(receiver.url)
    headers = {"Idempotency-Key": "order-42"}
    first = await api.post("/v1/events", {"type": "transaction", "data": TX}, headers=headers)
    again = await api.post("/v1/events", {"type": "transaction", "data": {"other": 1}},
                           headers=headers)
    assert first.status == again.status == 202
    assert again.body["id"] == first.body["id"] and again.body["duplicate"] is True
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.body["created_timestamp"] == first.body["created_timestamp"]
    different = await api.post("/v1/events", {"type": "transaction", "data": TX},
                               headers={"Idempotency-Key": "order-43"})
    assert different.body["id"] != first.body["id"]
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 2
    too_long = await api.post("/v1/events", {"type": "transaction", "data": TX},
                              headers={"Idempotency-Key": "k" * 256})
    assert too_long.status == 422 and too_long.error["field"] == "Idempotency-Key"
    # Keys are per tenant: the same key elsewhere publishes a new event.
    theirs = await other.post("/v1/events", {"type": "transaction", "data": TX},
                              headers=headers)
    assert theirs.status == 202 and theirs.body["id"] != first.body["id"]
    assert theirs.body["duplicate"] is False


async def test_concurrent_publishes_with_one_key_make_exactly_one_event(
    api: Api, receiver: Receiver
) -> None:
    await api.create_endpoint(receiver.url)
    replies = await asyncio.gather(*[
        api.post("/v1/events", {"type": "transaction", "data": {"n": n}},
                 headers={"Idempotency-Key": "race-1"}) for n in range(50)])
    assert {r.status for r in replies} == {202}
    assert len({r.body["id"] for r in replies}) == 1
    assert sum(not r.body["duplicate"] for r in replies) == 1
    events = await api.get("/v1/events")
    assert [e["id"] for e in events.body["data"]] == [replies[0].body["id"]]
    await receiver.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1


async def test_batch_publish(api: Api, receiver: Receiver) -> None:
    await api.create_endpoint(receiver.url)
    events: list[dict[str, Any]] = [
        {"type": "transaction", "data": {"i": 0}, "idempotency_key": "a"},
        {"type": "block", "data": [{"blockHeight": "1"}]},
        {"type": "transaction", "data": {"i": 2}, "idempotency_key": "a"},
    ]
    reply = await api.post("/v1/events/batch", {"events": events})
    assert reply.status == 202, reply
    data = reply.body["data"]
    assert [e["type"] for e in data] == ["transaction", "block", "transaction"]
    assert data[2]["id"] == data[0]["id"] and data[2]["duplicate"] is True
    await receiver.wait_for(2)
    bad = await api.post("/v1/events/batch", {"events": [{"type": "transaction", "data": 1},
                                                          {"type": "nope", "data": 1}]})
    assert bad.status == 422 and bad.error["field"] == "events[1].type"
    bad = await api.post("/v1/events/batch", {"events": [{"type": "transaction"}]})
    assert bad.status == 422 and bad.error["field"] == "events[0].data"
    bad = await api.post("/v1/events/batch", {"events": []})
    assert bad.status == 422 and bad.error["field"] == "events"
    too_many = {"events": [{"type": "block", "data": 1}] * 501}
    bad = await api.post("/v1/events/batch", too_many)
    assert bad.status == 422 and bad.error["field"] == "events"


async def test_publish_validation(api: Api) -> None:
    cases = [
        ({"type": "no.such.type", "data": {}}, "type"),
        ({"type": "bad type", "data": {}}, "type"),
        ({"type": "transaction"}, "data"),
        ({"data": {}}, "type"),
        ({"type": 7, "data": {}}, "type"),
        ({"type": "transaction", "data": {}, "extra": 1}, "extra"),
    ]
    for body, field in cases:
        reply = await api.post("/v1/events", body)
        assert reply.status == 422, (body, reply)
        assert reply.error["field"] == field
    assert (await api.get("/v1/events")).body["data"] == []


async def test_an_unknown_type_names_the_nearest_and_how_to_add_one(api: Api) -> None:
    for path, body, field in (
        ("/v1/events", {"type": "wallets.transaction.creatd", "data": {}}, "type"),
        ("/v1/endpoints", {"url": "https://hooks.example.com/in",
                           "event_types": ["wallets.transaction.creatd"]}, "event_types[0]"),
    ):
        reply = await api.post(path, body)
        assert reply.status == 422 and reply.error["field"] == field, reply
        message = reply.error["message"]
        assert "did you mean 'wallets.transaction.created'" in message, message
        assert "`dispatcher event-types add NAME`" in message
        assert "Client.create_event_type" in message


async def test_events_are_invisible_to_other_tenants(
    api: Api, other: Api, receiver: Receiver
) -> None:
    ep = await api.create_endpoint(receiver.url)
    ev = await api.publish("transaction", TX)
    theirs = await other.create_endpoint(receiver.url)
    for path in (f"/v1/events/{ev['id']}", f"/v1/endpoints/{ep['id']}/events/{ev['id']}",
                 f"/v1/endpoints/{ep['id']}/events/{ev['id']}/logs",
                 f"/v1/endpoints/{theirs['id']}/events/{ev['id']}",
                 f"/v1/endpoints/{theirs['id']}/events/{ev['id']}/logs"):
        reply = await other.get(path)
        assert reply.status == 404, (path, reply)
    retry = await other.post(f"/v1/endpoints/{ep['id']}/events/{ev['id']}/retry")
    assert retry.status == 404
    assert (await other.get("/v1/events")).body["data"] == []
    # The other tenant's publish does not reach this tenant's endpoint.
    mine = await other.publish("transaction", TX)
    assert mine["deliveries"] == [{"endpoint_id": theirs["id"], "status": "Pending"}]


async def test_empty_query_parameters_mean_any(api: Api, receiver: Receiver) -> None:
    """What a form sends for fields left blank: `?type=&status=` lists like no filter."""
    ep = await api.create_endpoint(receiver.url)
    ev = await api.publish("transaction", TX)
    await api.wait_for_status(ep["id"], ev["id"], "Success")  # nothing changes meanwhile
    blank = "type=&status=&since=&until=&cursor=&limit="
    for path in ("/v1/events", f"/v1/endpoints/{ep['id']}/events", "/v1/callbacks"):
        plain, empty = await api.get(path), await api.get(f"{path}?{blank}")
        assert empty.status == 200, (path, empty)
        assert empty.body == plain.body, path
    listed = (await api.get(f"/v1/events?{blank}")).body["data"]
    assert [e["id"] for e in listed] == [ev["id"]]
