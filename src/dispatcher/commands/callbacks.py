"""`dispatcher callbacks ...`: ask a tenant's callback endpoint to approve an action
and read the decision, list callbacks, their attempts, and retry a Failed one.

`callbacks request --wait S` exits 0 only when the callback is Approved: 1 when it
is Denied, Failed, or still undecided after S seconds (fail closed)."""

from __future__ import annotations

import click

from dispatcher.client import Callback, CallbackRequest, Client
from dispatcher.commands.common import (
    ATTEMPT_HEADERS,
    CURSOR,
    EXIT_FAILED,
    LIMIT,
    api_errors,
    attempt_row,
    call,
    connection_options,
    created_range,
    echo_answer,
    echo_json,
    echo_page,
    fields,
    json_option,
    when,
)
from dispatcher.sandbox.samples import parse_data

STATUSES = click.Choice(["Pending", "Retrying", "Approved", "Denied", "Failed"],
                        case_sensitive=False)
WAIT = click.FloatRange(min=0, max=86400)


@click.group("callbacks")
def callbacks_group() -> None:
    """Approval callbacks: request a decision, list, show, logs, retry.

    \b
    Example:
      dispatcher endpoints add https://approvals.example.com/cb --kind callback
      dispatcher callbacks request withdrawal.approve --data '{"amount": "250"}' --wait 60
    """


def outcome(c: Callback) -> str:
    """One line: the status and why (decision, failure reason, or still waiting)."""
    if c.decision is not None:
        return f"{c.status} {c.decision}"
    if c.status == "Failed":
        return f"Failed {c.failure_reason or ''}".rstrip()
    return f"{c.status} (not decided yet)"


def _show(c: Callback) -> None:
    fields([
        ("id", c.id), ("type", c.type), ("endpoint", c.endpoint_id),
        ("status", c.status + (" (held)" if c.held else "")), ("decision", c.decision),
        ("decided", when(c.decided_timestamp)), ("attempts", c.attempts),
        ("retries left", c.retries_left), ("failure", c.failure_reason),
        ("next retry", when(c.next_retry_timestamp)), ("created", when(c.created_timestamp)),
        ("deadline", when(c.deadline_timestamp)),
    ])


@callbacks_group.command("request")
@click.argument("type_", metavar="TYPE")
@click.option("--data", default="{}", show_default=True,
              help="What to approve: a JSON object, or @FILE.")
@click.option("--endpoint", "endpoint_id", default=None,
              help="The callback endpoint (default: the tenant's only active one).")
@click.option("--deadline", "deadline_seconds", type=click.FloatRange(min=0), default=None,
              help="Seconds until the callback fails undecided (default: the daemon's).")
@click.option("--wait", "wait", type=WAIT, default=None,
              help="Wait up to this many seconds for the decision; exit 0 only if approved.")
@click.option("--idempotency-key", default=None,
              help="Requesting again with this key answers the first callback.")
@json_option
@connection_options
@api_errors
def callbacks_request(type_: str, data: str, endpoint_id: str | None,
                      deadline_seconds: float | None, wait: float | None,
                      idempotency_key: str | None, as_json: bool) -> None:
    """Ask a callback endpoint to approve an action; prints the callback's id, and with
    --wait its decision (exit 0 Approved, 1 Denied, Failed or not decided in time).

    \b
    Example:
      dispatcher callbacks request withdrawal.approve --data '{"amount": "250.00"}' --wait 60
      CB=$(dispatcher callbacks request withdrawal.approve --data @withdrawal.json)
    """
    payload = parse_data(data)

    async def ask(api: Client) -> tuple[CallbackRequest, Callback | None]:
        asked = await api.request_approval(type_, payload, endpoint_id=endpoint_id,
                                           deadline_seconds=deadline_seconds,
                                           idempotency_key=idempotency_key)
        if wait is None:
            return asked, None
        return asked, await api.wait_for_decision(asked.id, wait)

    asked, decided = call(ask)
    if decided is None:
        echo_answer(as_json, asked.raw, asked.id)
        return
    if as_json:
        echo_json(decided.raw)
    else:
        click.echo(decided.id)
        click.echo(outcome(decided))
    if not decided.approved:
        raise SystemExit(EXIT_FAILED)


@callbacks_group.command("list")
@click.option("--status", "statuses", type=STATUSES, multiple=True,
              help="Only this status (repeat for more).")
@click.option("--type", "types", multiple=True, help="Only this type (repeat for more).")
@created_range
@LIMIT
@CURSOR
@json_option
@connection_options
@api_errors
def callbacks_list(statuses: tuple[str, ...], types: tuple[str, ...], since: int | None,
                   until: int | None, limit: int | None, cursor: str | None,
                   as_json: bool) -> None:
    """List callbacks, newest first.

    \b
    Example:
      dispatcher callbacks list --status Failed --type withdrawal.approve
    """
    page = call(lambda api: api.list_callbacks(
        statuses=[s.capitalize() for s in statuses] or None, types=list(types) or None,
        since=since, until=until, limit=limit, cursor=cursor))
    echo_page(page, as_json, ["CALLBACK", "TYPE", "STATUS", "ATTEMPTS", "CREATED (UTC)",
                              "DEADLINE (UTC)", "ENDPOINT"],
              lambda c: [c.id, c.type, outcome(c) if c.decided else c.status, c.attempts,
                         when(c.created_timestamp), when(c.deadline_timestamp), c.endpoint_id])


@callbacks_group.command("show")
@click.argument("callback_id")
@click.option("--wait", "wait", type=WAIT, default=None,
              help="Wait up to this many seconds for the decision first.")
@json_option
@connection_options
@api_errors
def callbacks_show(callback_id: str, wait: float | None, as_json: bool) -> None:
    """Show a callback and its decision.

    \b
    Example:
      dispatcher callbacks show 4f6c... --wait 30
    """
    found = call(lambda api: api.get_callback(callback_id) if wait is None
                 else api.wait_for_decision(callback_id, wait))
    if as_json:
        echo_json(found.raw)
    else:
        _show(found)


@callbacks_group.command("logs")
@click.argument("callback_id")
@LIMIT
@CURSOR
@json_option
@connection_options
@api_errors
def callbacks_logs(callback_id: str, limit: int | None, cursor: str | None,
                   as_json: bool) -> None:
    """Every attempt to send a callback, oldest first, with the answer received.

    \b
    Example:
      dispatcher callbacks logs 4f6c...
    """
    page = call(lambda api: api.callback_logs(callback_id, limit=limit, cursor=cursor))
    echo_page(page, as_json, [*ATTEMPT_HEADERS, "ANSWER"],
              lambda a: [*attempt_row(a), _answer(a.response_body)])


def _answer(body: str | None, width: int = 40) -> str | None:
    if body is None:
        return None
    text = body if body and body.isprintable() else repr(body)  # shows "ok\n" as sent
    return text if len(text) <= width else text[:width - 3] + "..."


@callbacks_group.command("retry")
@click.argument("callback_id")
@json_option
@connection_options
@api_errors
def callbacks_retry(callback_id: str, as_json: bool) -> None:
    """One more attempt for a Failed callback before its deadline.

    \b
    Example:
      dispatcher callbacks retry 4f6c... && dispatcher callbacks show 4f6c... --wait 30
    """
    call(lambda api: api.retry_callback(callback_id))
    echo_answer(as_json, {"id": callback_id, "retried": True}, f"retrying {callback_id}")
