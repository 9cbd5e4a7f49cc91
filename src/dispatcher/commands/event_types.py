"""`dispatcher event-types ...`: the catalogue a daemon serves, and a tenant's own types."""

from __future__ import annotations

import click

from dispatcher.commands.common import (
    CURSOR,
    LIMIT,
    api_errors,
    call,
    connection_options,
    echo_answer,
    echo_page,
    json_option,
)
from dispatcher.sandbox.samples import parse_data


@click.group("event-types")
def event_types_group() -> None:
    """The event-type catalogue: built in, from config, and your own.

    \b
    Example:
      dispatcher event-types list --group cobo
    """


@event_types_group.command("list")
@click.option("--group", default=None,
              help="Only this group (cobo, okx, cobalt, whatsapp, dispatcher, config, tenant).")
@LIMIT
@CURSOR
@json_option
@connection_options
@api_errors
def event_types_list(group: str | None, limit: int | None, cursor: str | None,
                     as_json: bool) -> None:
    """List event types with their group and description (--json: with samples).

    \b
    Example:
      dispatcher event-types list --group okx --json
    """
    page = call(lambda api: api.list_event_types(group=group, limit=limit, cursor=cursor))
    echo_page(page, as_json, ["NAME", "GROUP", "DESCRIPTION"],
              lambda t: [t.name, t.group, t.description])


@event_types_group.command("add")
@click.argument("name")
@click.option("--description", default="", help="What the event means.")
@click.option("--sample", default=None,
              help="A sample `data` as JSON, or @FILE (used by `dispatcher trigger`).")
@json_option
@connection_options
@api_errors
def event_types_add(name: str, description: str, sample: str | None, as_json: bool) -> None:
    """Define an event type of your own.

    \b
    Example:
      dispatcher event-types add invoice.paid --description "An invoice was paid" \\
          --sample '{"invoice_id": "inv_1", "amount": "10.00"}'
    """
    data = None if sample is None else parse_data(sample, "--sample")
    created = call(lambda api: api.create_event_type(name, description, data))
    echo_answer(as_json, created.raw, f"added {created.name}")


@event_types_group.command("remove")
@click.argument("name")
@json_option
@connection_options
@api_errors
def event_types_remove(name: str, as_json: bool) -> None:
    """Remove an event type of your own (built-in and configured ones stay).

    \b
    Example:
      dispatcher event-types remove invoice.paid
    """
    call(lambda api: api.delete_event_type(name))
    echo_answer(as_json, {"name": name, "removed": True}, f"removed {name}")
