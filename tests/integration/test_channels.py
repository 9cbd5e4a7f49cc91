"""Channels, as Svix defines them: an endpoint with channels receives only the events
that share one; an endpoint without channels receives every event of its types; an
event without channels reaches only endpoints without channels. Bad names are 422
naming the item, and change nothing."""

from __future__ import annotations

import asyncio

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.receiver import Receiver

api_server, http, api = support.api_server, support.http, support.api

TYPE = "payment.order.updated"


async def _ids(receiver: Receiver) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.requests}


async def test_only_endpoints_sharing_a_channel_or_without_any_receive(
    api: Api, make_receiver: object
) -> None:
    eth, btc, every = [await make_receiver() for _ in range(3)]  # type: ignore[operator]
    for receiver, channels in ((eth, ["chain.eth"]), (btc, ["chain.btc", "wallet:7"]),
                               (every, [])):
        ep = await api.create_endpoint(receiver.url, channels=channels)
        assert ep["channels"] == channels
    on_eth = (await api.post("/v1/events", {"type": TYPE, "data": {"n": 1},
                                           "channels": ["chain.eth"]})).body
    on_wallet = (await api.post("/v1/events/batch", {"events": [
        {"type": TYPE, "data": {"n": 2}, "channels": ["wallet:7", "other"]}]})).body["data"][0]
    plain = await api.publish(TYPE, {"n": 3})
    assert len(on_eth["deliveries"]) == 2 and len(on_wallet["deliveries"]) == 2
    assert len(plain["deliveries"]) == 1
    await every.wait_for(3)
    await eth.wait_for(1)
    await btc.wait_for(1)
    await asyncio.sleep(0.3)  # nothing more arrives
    assert await _ids(eth) == {on_eth["id"]}
    assert await _ids(btc) == {on_wallet["id"]}
    assert await _ids(every) == {on_eth["id"], on_wallet["id"], plain["id"]}


async def test_an_endpoint_can_change_its_channels(api: Api) -> None:
    ep = await api.create_endpoint("https://hooks.example.com/in", channels=["a"])
    changed = await api.patch(f"/v1/endpoints/{ep['id']}", {"channels": ["b", "b", "c"]})
    assert changed.status == 200 and changed.body["channels"] == ["b", "c"]
    cleared = await api.patch(f"/v1/endpoints/{ep['id']}", {"channels": None})
    assert cleared.body["channels"] == []


async def test_bad_channels_are_refused_with_the_item(api: Api) -> None:
    before = (await api.get("/v1/endpoints")).body
    for body, field in (({"channels": "chain.eth"}, "channels"),
                        ({"channels": ["ok", "no spaces"]}, "channels[1]"),
                        ({"channels": [f"c{i}" for i in range(11)]}, "channels"),
                        ({"channels": ["x" * 129]}, "channels[0]")):
        reply = await api.post("/v1/endpoints", {"url": "https://hooks.example.com/in", **body})
        assert reply.status == 422 and reply.error["field"] == field, (body, reply.body)
        event = await api.post("/v1/events", {"type": TYPE, "data": {}, **body})
        assert event.status == 422 and event.error["field"] == field
    batch = await api.post("/v1/events/batch", {"events": [
        {"type": TYPE, "data": {}}, {"type": TYPE, "data": {}, "channels": [1]}]})
    assert batch.status == 422 and batch.error["field"] == "events[1].channels[0]"
    assert (await api.get("/v1/endpoints")).body == before
    assert (await api.get("/v1/events")).body["data"] == []
