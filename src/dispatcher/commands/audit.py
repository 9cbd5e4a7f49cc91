"""`dispatcher audit ...`: read the audit log through the API (`list`, any key: a
tenant key sees its tenant's entries) and check its hash chain on this machine's
database (`verify`, like `dispatcher keys`)."""

from __future__ import annotations

import json

import click

from dispatcher.client import AuditEntry
from dispatcher.commands.common import (
    CURSOR,
    EXIT_FAILED,
    LIMIT,
    api_errors,
    call,
    connection_options,
    echo_page,
    json_option,
    when,
)
from dispatcher.commands.local import LOCAL, config_of, echo_json, handles_errors, local_services
from dispatcher.commands.local import run as run_local
from dispatcher.operations import audit as ops


@click.group("audit")
def audit_group() -> None:
    """The audit log: who changed what, when and from where.

    \b
    Example:
      dispatcher audit list --action endpoint. --since 1767225600000
      dispatcher audit verify
    """


def _changes(e: AuditEntry) -> str:
    text = json.dumps(e.changes, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


@audit_group.command("list")
@click.option("--actor", default=None,
              help="Only this actor: a key id, a portal token's tenant id, cli:<user> or "
                   "system:<job>.")
@click.option("--action", default=None,
              help='Only this action ("endpoint.update"), or a prefix ending in "."')
@click.option("--target-type", default=None, help="Only targets of this type (endpoint, ...).")
@click.option("--target", "target_id", default=None, help="Only this target's id.")
@click.option("--since", type=click.IntRange(0), default=None, help="At or after (Unix ms).")
@click.option("--until", type=click.IntRange(0), default=None, help="Before (Unix ms).")
@LIMIT
@CURSOR
@json_option
@connection_options
@api_errors
def audit_list(actor: str | None, action: str | None, target_type: str | None,
               target_id: str | None, since: int | None, until: int | None,
               limit: int | None, cursor: str | None, as_json: bool) -> None:
    """List audit entries, newest first (an operator key: every tenant's, or
    --tenant's).

    \b
    Example:
      dispatcher audit list --target-type endpoint --target 2f0c...
    """
    page = call(lambda api: api.list_audit_log(
        actor=actor, action=action, target_type=target_type, target_id=target_id,
        since=since, until=until, limit=limit, cursor=cursor))
    echo_page(page, as_json, ["SEQ", "AT (UTC)", "ACTOR", "VIA", "ACTION", "TARGET", "CHANGES"],
              lambda e: [e.seq, when(e.timestamp), e.actor["id"], e.actor["via"], e.action,
                         f"{e.target['type']}:{e.target['id']}", _changes(e)])


@audit_group.command("verify")
@json_option
@click.pass_context
@handles_errors
def audit_verify(ctx: click.Context, as_json: bool) -> None:
    """Recompute the audit log's hash chain on the configured database; exit status
    1 and the first entry that does not fit when it is broken.

    \b
    Example:
      dispatcher audit verify
    """

    async def go() -> ops.Verdict:
        async with local_services(config_of(ctx)) as svc:
            return await ops.verify(svc, LOCAL)

    verdict = run_local(go())
    if as_json:
        echo_json({"ok": verdict.ok, "checked": verdict.checked,
                   "first_seq": verdict.first_seq, "last_seq": verdict.last_seq,
                   "broken_seq": verdict.broken_seq, "reason": verdict.reason or None})
    elif verdict.ok:
        span = "" if verdict.first_seq is None else \
            f" (seq {verdict.first_seq} to {verdict.last_seq})"
        click.echo(f"ok: {verdict.checked} entries verified{span}")
    else:
        click.echo(f"broken at seq {verdict.broken_seq}: {verdict.reason} "
                   f"({verdict.checked} entries before it verified)", err=True)
    if not verdict.ok:
        ctx.exit(EXIT_FAILED)
