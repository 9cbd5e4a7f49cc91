"""`dispatcher callbacks ...` and `endpoints add --kind callback` as a user runs them:
subprocesses calling a real daemon, with a real callback receiver answering `ok`,
`deny` or an error. `request --wait` exits 0 only when Approved."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.integration import test_api_support as support
from tests.integration import test_cli_api
from tests.integration.test_api_support import Api
from tests.integration.test_cli_api import Cli, failed, ok, ok_json
from tests.support.receiver import Receiver, Reply

api_server, http, api, cli = support.api_server, support.http, support.api, test_cli_api.cli

MISSING = "00000000-0000-0000-0000-000000000000"
ASK = ("callbacks", "request", "withdrawal.approve")


async def test_callback_commands(cli: Cli, receiver: Receiver, tmp_path: Path) -> None:
    receiver.reply_with(Reply(200, "ok"), Reply(200, "deny"), Reply(500, "busy"),
                        then=Reply(200, "ok"))
    ep = ok_json(await cli("endpoints", "add", receiver.url, "--kind", "callback",
                           "--retry-policy", "none", "--json"))
    assert ep["kind"] == "callback" and ep["event_types"] == []
    assert "callback" in ok(await cli("endpoints", "list")).splitlines()[1].split()

    approved = await cli(*ASK, "--data", '{"amount": "250.00"}', "--wait", "20")
    approved_id, decision = ok(approved).splitlines()
    assert decision == "Approved ok"
    denied = await cli(*ASK, "--data", '{"amount": "9e9"}', "--wait", "20", "--json")
    assert denied.returncode == 1, denied.stderr
    body = json.loads(denied.stdout)  # one document, even when not approved
    assert (body["status"], body["decision"]) == ("Denied", "deny")
    (tmp_path / "w.json").write_text('{"amount": "3"}')
    asked = ok(await cli(*ASK, "--data", f"@{tmp_path / 'w.json'}", "--endpoint", ep["id"],
                         "--deadline", "120", "--idempotency-key", "w-3")).strip()
    assert len(asked) == 36  # only the id, for CB=$(...)
    shown = ok_json(await cli("callbacks", "show", asked, "--wait", "20", "--json"))
    assert (shown["status"], shown["failure_reason"]) == ("Failed", "http_status")
    assert shown["data"] == {"amount": "3"}
    assert shown["deadline_timestamp"] - shown["created_timestamp"] == 120_000

    assert ok(await cli("callbacks", "retry", asked)).strip() == f"retrying {asked}"
    human = ok(await cli("callbacks", "show", asked, "--wait", "20"))
    assert "Approved" in human and "decision      ok" in human

    listed, denied_only, table, logs, logs_human = await asyncio.gather(
        cli("callbacks", "list", "--json"),
        cli("callbacks", "list", "--status", "denied", "--json"),
        cli("callbacks", "list"),
        cli("callbacks", "logs", asked, "--json"),
        cli("callbacks", "logs", approved_id))
    assert [c["id"] for c in ok_json(listed)["data"]][::2] == [asked, approved_id]
    assert [c["id"] for c in ok_json(denied_only)["data"]] == [body["id"]]
    lines = ok(table).splitlines()
    assert len(lines) == 4 and lines[0].split()[:3] == ["CALLBACK", "TYPE", "STATUS"]
    status_at = lines[0].index("STATUS")
    assert [line[status_at:].split("  ")[0] for line in lines[1:]] == [
        "Approved ok", "Denied deny", "Approved ok"]
    assert [(a["response"]["status"], a["response"]["body"])
            for a in ok_json(logs)["data"]] == [(500, "busy"), (200, "ok")]
    assert " 200 " in ok(logs_human) and logs_human.stdout.rstrip().endswith("ok")
    assert ok_json(await cli("callbacks", "list", "--json", "--limit", "1"))["next_cursor"]

    # Errors: a clear message, the documented status, and nothing asked or changed.
    results = await asyncio.gather(
        cli("callbacks", "retry", asked),  # decided: final (409)
        cli("callbacks", "show", MISSING),
        cli("callbacks", "logs", MISSING),
        cli(*ASK, "--data", "{bad"),
        cli(*ASK, "--data", "[1]"),
        cli(*ASK, "--endpoint", MISSING),
        cli(*ASK, "--deadline", "0.5"),
        cli("callbacks", "list", "--status", "maybe"),
        cli("callbacks", "list", env={"DISPATCHER_API_KEY": "dk_wrong"}),
        cli("endpoints", "add", receiver.url, "--kind", "approval"))
    statuses = [2, 3, 3, 2, 2, 2, 2, 2, 4, 2]
    messages = [failed(r, status) for r, status in zip(results, statuses, strict=True)]
    assert "final" in messages[0] and "endpoint_id" in messages[5]
    assert len(ok_json(await cli("callbacks", "list", "--json"))["data"]) == 3
    assert len(receiver.requests) == 4


async def test_request_wait_exits_1_when_not_decided_in_time(
    cli: Cli, api: Api, receiver: Receiver
) -> None:
    ep = await api.create_endpoint(receiver.url, kind="callback")
    ok(await cli("endpoints", "pause", ep["id"]))  # holds its callbacks: no decision
    result = await cli(*ASK, "--endpoint", ep["id"], "--wait", "1")
    assert result.returncode == 1, result.stderr
    callback_id, outcome = result.stdout.splitlines()
    assert outcome == "Pending (not decided yet)"
    assert ok_json(await cli("callbacks", "show", callback_id, "--json"))["held"] is True
    failed(await cli(*ASK), 2)  # no active callback endpoint: 422 endpoint_id
