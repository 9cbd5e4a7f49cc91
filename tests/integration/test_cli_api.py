"""`dispatcher endpoints|events|event-types ...` as a user runs them: subprocesses
calling a real daemon's API. `--json` prints exactly one JSON document; errors are
`error: ...` on stderr with the documented exit status (2 bad input, 3 not found,
4 not authorized, 1 unreachable)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import click
import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

from dispatcher.cli import main
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api
from tests.support.daemon import free_port
from tests.support.receiver import Receiver, Reply

api_server, http, api = support.api_server, support.http, support.api

Cli = Callable[..., Any]


def run_cli(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    full.update({"DISPATCHER_LOG__LEVEL": "warning", **env})
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def cli(api: Api) -> Cli:
    """`await cli("endpoints", "list")` as the test's tenant -> CompletedProcess."""

    async def run(*args: str, env: dict[str, str] | None = None) -> Any:
        base = {"DISPATCHER_URL": api.server.url, "DISPATCHER_API_KEY": api.key}
        return await asyncio.to_thread(run_cli, args, {**base, **(env or {})})

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))  # the whole of stdout is one document


def failed(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") or result.stderr.startswith("Usage:"), \
        result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    return result.stderr


def column_starts(line: str, names: list[str]) -> list[int]:
    return [line.index(n) for n in names]


async def test_endpoint_commands(cli: Cli, api: Api, receiver: Receiver) -> None:
    created = ok_json(await cli("endpoints", "add", receiver.url, "--event-type", "block",
                                "--description", "chain", "--json"))
    ep = created["id"]
    assert created["secret"].startswith("whsec_") and created["event_types"] == ["block"]
    human = ok(await cli("endpoints", "add", receiver.url + "?b=1"))
    assert "signing secret: whsec_" in human and "active" in human
    quiet = ok(await cli("endpoints", "add", receiver.url + "?c=1", "--quiet")).strip()
    assert len(quiet) == 36

    listed = ok_json(await cli("endpoints", "list", "--json"))
    assert listed["data"][0]["id"] == ep and listed["next_cursor"] is None
    lines = ok(await cli("endpoints", "list")).splitlines()
    assert len(lines) == 4
    starts = column_starts(lines[0], ["ID", "STATE", "URL"])
    for line in lines[1:]:  # aligned: every value starts under its header
        assert line[starts[1]:].startswith("active") and line[starts[2]:].startswith("http")

    shown = ok_json(await cli("endpoints", "show", ep, "--json"))
    assert shown["description"] == "chain" and shown["health"]["held"] == 0
    human = ok(await cli("endpoints", "show", ep))
    assert "chain" in human and "failures in window  0/100" in human
    updated = ok_json(await cli("endpoints", "update", ep, "--max-in-flight", "7",
                                "--event-type", "transaction", "--json"))
    assert updated["max_in_flight"] == 7 and updated["event_types"] == ["transaction"]
    assert updated["propagate_trace_context"] is True
    untraced = ok_json(await cli("endpoints", "update", ep, "--no-trace-context", "--json"))
    assert untraced["propagate_trace_context"] is False
    assert ok_json(await cli("endpoints", "pause", ep, "--json"))["state"] == "paused"
    assert ok(await cli("endpoints", "resume", ep)).strip() == f"{ep} active"
    assert ok(await cli("endpoints", "secret", ep, "-q")).strip() == created["secret"]
    rotated = ok_json(await cli("endpoints", "rotate-secret", ep, "--json"))
    assert rotated["secret"] != created["secret"]
    assert ok_json(await cli("endpoints", "secret", ep, "--json"))["secret"] == rotated["secret"]
    assert ok_json(await cli("endpoints", "delete", quiet, "--json")) == {
        "id": quiet, "deleted": True}

    # Errors: a clear message and the documented status; nothing changed.
    results = await asyncio.gather(
        cli("endpoints", "add", "ftp://example.com/x"),
        cli("endpoints", "show", quiet),
        cli("endpoints", "update", ep),
        cli("endpoints", "add", receiver.url, "--metadata", "{nope"),
        cli("endpoints", "list", env={"DISPATCHER_API_KEY": "dk_wrong"}),
        cli("endpoints", "list", env={"DISPATCHER_API_KEY": ""}),
        cli("endpoints", "list", "--url", f"http://127.0.0.1:{free_port()}"))
    statuses = [2, 3, 2, 2, 4, 2, 1]
    messages = [failed(r, status) for r, status in zip(results, statuses, strict=True)]
    assert "url" in messages[0] and "cannot reach" in messages[-1]
    assert "nothing is listening on 127.0.0.1:" in messages[-1]
    assert "make run" in results[-1].stderr and "ClientConnectorError" not in results[-1].stderr
    assert len(ok_json(await cli("endpoints", "list", "--json"))["data"]) == 2


async def test_event_commands(cli: Cli, api: Api, receiver: Receiver) -> None:
    receiver.reply_with(Reply(500), then=Reply(200))
    ep = (await api.create_endpoint(receiver.url, retry_policy="none"))["id"]
    published = ok_json(await cli("events", "publish", "transaction", "--data",
                                  '{"n": 1}', "--json"))
    event = published["id"]
    assert published["deliveries"] == [{"endpoint_id": ep, "status": "Pending"}]
    await api.wait_for_status(ep, event, "Failed")
    human = ok(await cli("events", "publish", "transaction", "--data", '{"n": 2}',
                         "--idempotency-key", "k1"))
    assert human.split()[1] == "transaction" and ep in human

    # Reads change nothing: run them side by side.
    (listed, by_type, failed_only, shown, shown_human, at_endpoint, logs,
     logs_human) = await asyncio.gather(
        cli("events", "list", "--json"), cli("events", "list", "--type", "transaction"),
        cli("events", "list", "--endpoint", ep, "--status", "failed", "--json"),
        cli("events", "show", event, "--json"), cli("events", "show", event),
        cli("events", "show", event, "--endpoint", ep, "--json"),
        cli("events", "logs", event, "--endpoint", ep, "--json"),
        cli("events", "logs", event, "--endpoint", ep))
    assert [e["id"] for e in ok_json(listed)["data"]][1] == event
    assert event in ok(by_type)
    assert [d["event_id"] for d in ok_json(failed_only)["data"]] == [event]
    assert ok_json(shown)["deliveries"][0]["status"] == "Failed"
    assert "Failed" in ok(shown_human)
    assert ok_json(at_endpoint)["failure_reason"]
    assert [a["response"]["status"] for a in ok_json(logs)["data"]] == [500]
    assert "500" in ok(logs_human)

    assert ok_json(await cli("events", "retry", event, "--endpoint", ep, "--json"))["retried"]
    await api.wait_for_status(ep, event, "Success")
    failed(await cli("events", "retry", event, "--endpoint", ep), 2)  # 409: not retryable
    assert ok_json(await cli("events", "replay", "--endpoint", ep, "--json")) == {"queued": 0}
    assert "0 events queued" in ok(await cli("events", "replay", "--endpoint", ep))

    results = await asyncio.gather(
        cli("events", "publish", "no.such.type", "--data", "{}"),
        cli("events", "publish", "transaction", "--data", "{bad"),
        cli("events", "show", "00000000-0000-0000-0000-000000000000"),
        cli("events", "list", "--status", "Failed"))
    for result, status in zip(results, [2, 2, 3, 2], strict=True):
        failed(result, status)
    assert len(ok_json(await cli("events", "list", "--json"))["data"]) == 2


async def test_event_type_commands(cli: Cli) -> None:
    listed = ok_json(await cli("event-types", "list", "--group", "okx", "--json"))
    assert [t["name"] for t in listed["data"]] == ["block", "transaction"]
    assert "transaction" in ok(await cli("event-types", "list", "--group", "okx"))
    added = ok_json(await cli("event-types", "add", "invoice.paid", "--description", "Paid",
                              "--sample", '{"id": "inv_1"}', "--json"))
    assert added["sample"] == {"id": "inv_1"} and added["source"] == "tenant"
    assert "invoice.paid" in ok(await cli("event-types", "list", "--group", "tenant"))
    results = await asyncio.gather(
        cli("event-types", "add", "invoice.paid"),  # exists
        cli("event-types", "add", "x.y", "--sample", "{bad"),
        cli("event-types", "remove", "transaction"))  # built in
    for result in results:
        failed(result, 2)
    assert ok(await cli("event-types", "remove", "invoice.paid")).strip() == \
        "removed invoice.paid"
    failed(await cli("event-types", "remove", "invoice.paid"), 3)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", [p for p in _commands(main)
                                  if p[0] in ("endpoints", "events", "event-types", "callbacks",
                                                          "tenants", "trigger")])
def test_every_api_command_helps_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Example:\n    dispatcher " in result.output, \
        result.output


async def test_trigger_publishes_the_sample_and_follows_each_endpoint(
    cli: Cli, api: Api, make_receiver: Callable[[], Any]
) -> None:
    good, bad = await make_receiver(), await make_receiver()
    bad.reply_with(then=Reply(503))
    ok_ep = await api.create_endpoint(good.url)
    bad_ep = await api.create_endpoint(bad.url, retry_policy="none")
    result = await cli("trigger", "wallets.transaction.created", "--set", "status=Completed",
                       "--set", "destination.account_output.amount=12.5", "--set", "n.m=x")
    assert result.returncode == 1, result.stderr  # one endpoint failed
    lines = result.stdout.splitlines()
    assert lines[0].startswith("published wallets.transaction.created ")
    event_id = lines[0].split()[-1]
    outcomes = {line.split()[0]: line for line in lines[1:]}
    assert set(outcomes) == {ok_ep["id"], bad_ep["id"]}
    assert " 200 (" in outcomes[ok_ep["id"]]
    assert "FAILED 503 http_status" in outcomes[bad_ep["id"]]
    (req,) = await good.wait_for(1)
    body = Webhook(ok_ep["secret"]).verify(req.body, dict(req.headers))
    assert body["event_id"] == event_id
    data = body["data"]
    assert data["status"] == "Completed" and data["n"] == {"m": "x"}
    assert data["destination"]["account_output"]["amount"] == 12.5
    assert data["wallet_id"]  # the rest of the sample is kept

    only = ok_json(await cli("trigger", "wallets.transaction.created", "--endpoint",
                             ok_ep["id"], "--data", '{"x": 1}', "--json"))
    assert [o["endpoint_id"] for o in only["outcomes"]] == [ok_ep["id"]]
    assert only["outcomes"][0]["succeeded"] and only["outcomes"][0]["attempt"]["response"][
        "status"] == 200
    results = await asyncio.gather(
        cli("trigger", "no.such.type"),
        cli("trigger", "transaction", "--set", "novalue"),
        cli("trigger", "transaction", "--endpoint", "00000000-0000-0000-0000-000000000000"))
    for result, status in zip(results, [3, 2, 3], strict=True):
        failed(result, status)
    assert len((await api.get("/v1/events")).body["data"]) == 2  # errors published nothing
