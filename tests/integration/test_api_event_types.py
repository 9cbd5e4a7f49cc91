"""The event-type catalogue over HTTP: the providers' types with samples, paging,
tenant-defined types (create, show, delete, publish) and their isolation."""

from __future__ import annotations

from typing import Any

from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api

api_server, http, api, other = support.api_server, support.http, support.api, support.other


async def all_types(api: Api, query: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        reply = await api.get(f"/v1/event-types?limit=7{query}"
                              + (f"&cursor={cursor}" if cursor else ""))
        assert reply.status == 200, reply
        assert len(reply.body["data"]) <= 7
        out += reply.body["data"]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return out


async def test_catalogue_holds_the_providers_types_with_samples(api: Api) -> None:
    types = {t["name"]: t for t in await all_types(api)}
    for name in ("wallets.transaction.created", "wallets.transaction.updated",
                 "wallets.transaction.succeeded", "wallets.transaction.failed",
                 "wallets.mpc.tss_request.created", "payment.transaction.completed",
                 "compliance.disposition.status.updated",
                 "transaction", "block", "workflow-completed", "workflow-errored",
                 "messages", "statuses", "errors", "endpoint.paused", "endpoint.failing"):
        assert name in types, name
        assert types[name]["description"]
        assert types[name]["sample"] is not None
        assert types[name]["source"] == "builtin"
    assert types["wallets.transaction.created"]["sample"]["data_type"] == "Transaction"
    assert types["wallets.transaction.created"]["group"] == "cobo"
    assert types["block"]["group"] == "okx" and isinstance(types["block"]["sample"], list)
    assert types["workflow-errored"]["sample"]["event"] == "Workflow Errored"
    assert types["statuses"]["group"] == "whatsapp"
    names = list(types)
    assert names == sorted(names)
    okx = await all_types(api, "&group=okx")
    assert [t["name"] for t in okx] == ["block", "transaction"]


async def test_tenant_types_are_listed_published_and_deleted(api: Api, other: Api) -> None:
    created = await api.post("/v1/event-types", {
        "name": "invoice.paid", "description": "An invoice was paid",
        "sample": {"invoice_id": "inv_1"}})
    assert created.status == 201
    assert created.body == {"name": "invoice.paid", "description": "An invoice was paid",
                            "group": "tenant", "source": "tenant",
                            "sample": {"invoice_id": "inv_1"}}
    names = [t["name"] for t in await all_types(api)]
    assert "invoice.paid" in names and names == sorted(names)
    assert (await api.get("/v1/event-types/invoice.paid")).body["source"] == "tenant"
    assert (await api.get("/v1/event-types/messages")).body["group"] == "whatsapp"
    mine = await all_types(api, "&group=tenant")
    assert [t["name"] for t in mine] == ["invoice.paid"]

    # Only this tenant sees, subscribes to and publishes its own type.
    assert (await other.get("/v1/event-types/invoice.paid")).status == 404
    assert "invoice.paid" not in [t["name"] for t in await all_types(other)]
    published = await api.post("/v1/events", {"type": "invoice.paid", "data": {"x": 1}})
    assert published.status == 202
    theirs = await other.post("/v1/events", {"type": "invoice.paid", "data": {"x": 1}})
    assert theirs.status == 422 and theirs.error["field"] == "type"
    subscribed = await api.post("/v1/endpoints", {"url": "https://hooks.example.com/in",
                                                  "event_types": ["invoice.paid"]})
    assert subscribed.status == 201
    other_sub = await other.post("/v1/endpoints", {"url": "https://hooks.example.com/in",
                                                   "event_types": ["invoice.paid"]})
    assert other_sub.status == 422 and other_sub.error["field"] == "event_types[0]"

    assert (await other.delete("/v1/event-types/invoice.paid")).status == 404
    assert (await api.delete("/v1/event-types/invoice.paid")).status == 204
    assert (await api.get("/v1/event-types/invoice.paid")).status == 404
    assert (await api.delete("/v1/event-types/transaction")).status == 409


async def test_sample_numbers_come_back_as_written(api: Api) -> None:
    # jsonb would turn 1e308 into a 309-digit integer; a float must stay a float.
    floats = {"big": 1e308, "small": 5e-324, "tenth": 0.1, "int": 10**30}
    made = await api.post("/v1/event-types", {"name": "floats", "sample": floats})
    assert made.status == 201 and made.body["sample"] == floats
    got = (await api.get("/v1/event-types/floats")).body["sample"]
    assert got == floats and isinstance(got["big"], float) and isinstance(got["int"], int)


async def test_event_type_validation(api: Api) -> None:
    for body, field in (({"name": "has space"}, "name"), ({"name": "*"}, "name"),
                        ({"name": ""}, "name"), ({}, "name"), ({"name": "x" * 101}, "name"),
                        ({"name": "ok.name", "description": 5}, "description"),
                        ({"name": "ok.name", "sample": {"a": "\u0000"}}, "sample"),
                        ({"name": "ok.name", "source": "builtin"}, "source")):
        reply = await api.post("/v1/event-types", body)
        assert reply.status == 422, (body, reply)
        assert reply.error["field"] == field
    assert (await api.get("/v1/event-types/no-such-type")).status == 404
    assert (await api.get("/v1/event-types/bad%20name")).status == 404
