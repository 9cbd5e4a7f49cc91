"""`dispatcher events ...`: publish events and look up what happened to them."""

from __future__ import annotations

from typing import Any

import click

from dispatcher.client import Delivery
from dispatcher.commands.common import (
    ATTEMPT_HEADERS,
    CURSOR,
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
    table,
    when,
)
from dispatcher.sandbox.samples import parse_data

STATUSES = click.Choice(["Pending", "Retrying", "Success", "Failed"], case_sensitive=False)
ENDPOINT = click.option("--endpoint", "endpoint_id", required=True, help="The endpoint's id.")


@click.group("events")
def events_group() -> None:
    """Publish events, list them, see their status, attempts, retry and replay them.

    \b
    Example:
      dispatcher events publish payment.order.updated --data '{"order_id": "ord_1"}'
      dispatcher events show EVENT_ID
    """


def _delivery_row(d: Delivery) -> list[Any]:
    state = d.status + (" (held)" if d.held else "")
    return [d.endpoint_id, state, d.attempts, d.failure_reason,
            when(d.next_retry_timestamp), d.url]


_DELIVERY_HEADERS = ["ENDPOINT", "STATUS", "ATTEMPTS", "FAILURE", "NEXT RETRY (UTC)", "URL"]


@events_group.command("publish")
@click.argument("type_", metavar="TYPE")
@click.option("--data", required=True, help="The event's data as JSON, or @FILE.")
@click.option("--idempotency-key", default=None,
              help="Publishing again with this key answers the first event.")
@json_option
@connection_options
@api_errors
def events_publish(type_: str, data: str, idempotency_key: str | None, as_json: bool) -> None:
    """Publish an event to every endpoint subscribed to its type.

    \b
    Example:
      dispatcher events publish payment.order.updated --data @order.json --idempotency-key ord_1
    """
    payload = parse_data(data)
    published = call(lambda api: api.publish(type_, payload, idempotency_key=idempotency_key))
    if as_json:
        echo_json(published.raw)
        return
    click.echo(f"{published.id} {published.type}"
               + (" (duplicate of an earlier publish)" if published.duplicate else ""))
    table(["ENDPOINT", "STATUS"], [[d.endpoint_id, d.status] for d in published.deliveries])


@events_group.command("list")
@click.option("--type", "types", multiple=True, help="Only this type (repeat for more).")
@created_range
@click.option("--endpoint", "endpoint_id", default=None,
              help="Only events sent to this endpoint, with their status there.")
@click.option("--status", "statuses", type=STATUSES, multiple=True,
              help="With --endpoint: only this status (repeat for more).")
@LIMIT
@CURSOR
@json_option
@connection_options
@api_errors
def events_list(types: tuple[str, ...], since: int | None, until: int | None,
                endpoint_id: str | None, statuses: tuple[str, ...], limit: int | None,
                cursor: str | None, as_json: bool) -> None:
    """List events, newest first (with --endpoint: their status at that endpoint).

    \b
    Example:
      dispatcher events list --type payment.order.updated --limit 10
      dispatcher events list --endpoint 0b9e4c0e-... --status Failed
    """
    if statuses and endpoint_id is None:
        raise click.UsageError("--status needs --endpoint")
    filters: dict[str, Any] = {"types": list(types) or None, "since": since, "until": until,
                               "limit": limit, "cursor": cursor}
    if endpoint_id is not None:
        deliveries = call(lambda api: api.list_deliveries(
            endpoint_id, statuses=[s.capitalize() for s in statuses] or None, **filters))
        echo_page(deliveries, as_json,
                  ["EVENT", "TYPE", "CREATED (UTC)", "STATUS", "ATTEMPTS", "FAILURE"],
                  lambda d: [d.event_id, d.type, when(d.created_timestamp), d.status,
                             d.attempts, d.failure_reason])
        return
    events = call(lambda api: api.list_events(**filters))
    echo_page(events, as_json, ["EVENT", "TYPE", "CREATED (UTC)"],
              lambda e: [e.id, e.type, when(e.created_timestamp)])


@events_group.command("show")
@click.argument("event_id")
@click.option("--endpoint", "endpoint_id", default=None,
              help="Only its status at this endpoint.")
@json_option
@connection_options
@api_errors
def events_show(event_id: str, endpoint_id: str | None, as_json: bool) -> None:
    """Show an event with its status at every endpoint.

    \b
    Example:
      dispatcher events show 5f0c...
      dispatcher events show 5f0c... --endpoint 0b9e4c0e-...
    """
    if endpoint_id is not None:
        d = call(lambda api: api.get_delivery(endpoint_id, event_id))
        if as_json:
            echo_json(d.raw)
            return
        fields([("event", d.event_id), ("type", d.type), ("endpoint", d.endpoint_id),
                ("url", d.url), ("status", d.status + (" (held)" if d.held else "")),
                ("attempts", d.attempts), ("retries left", d.retries_left),
                ("failure", d.failure_reason), ("next retry", when(d.next_retry_timestamp))])
        return
    event = call(lambda api: api.get_event(event_id))
    if as_json:
        echo_json(event.raw)
        return
    fields([("event", event.id), ("type", event.type),
            ("created", f"{when(event.created_timestamp)} UTC")])
    click.echo("")
    table(_DELIVERY_HEADERS, [_delivery_row(d) for d in event.deliveries or []])


@events_group.command("logs")
@click.argument("event_id")
@ENDPOINT
@LIMIT
@CURSOR
@json_option
@connection_options
@api_errors
def events_logs(event_id: str, endpoint_id: str, limit: int | None, cursor: str | None,
                as_json: bool) -> None:
    """Every attempt to deliver an event to an endpoint, oldest first.

    \b
    Example:
      dispatcher events logs 5f0c... --endpoint 0b9e4c0e-...
    """
    page = call(lambda api: api.list_attempts(endpoint_id, event_id, limit=limit,
                                              cursor=cursor))
    echo_page(page, as_json, ATTEMPT_HEADERS, attempt_row)


@events_group.command("retry")
@click.argument("event_id")
@ENDPOINT
@json_option
@connection_options
@api_errors
def events_retry(event_id: str, endpoint_id: str, as_json: bool) -> None:
    """Attempt a Retrying or Failed event at an endpoint now.

    \b
    Example:
      dispatcher events retry 5f0c... --endpoint 0b9e4c0e-...
    """
    call(lambda api: api.retry(endpoint_id, event_id))
    echo_answer(as_json, {"event_id": event_id, "endpoint_id": endpoint_id, "retried": True},
                f"retrying {event_id} at {endpoint_id}")


@events_group.command("replay")
@ENDPOINT
@click.option("--status", "statuses", type=click.Choice(["Retrying", "Failed"],
              case_sensitive=False), multiple=True, help="Which events (default Failed).")
@created_range
@json_option
@connection_options
@api_errors
def events_replay(endpoint_id: str, statuses: tuple[str, ...], since: int | None,
                  until: int | None, as_json: bool) -> None:
    """Attempt again an endpoint's Failed (or Retrying) events.

    \b
    Example:
      dispatcher events replay --endpoint 0b9e4c0e-... --status Failed --since 1767225600000
    """
    queued = call(lambda api: api.replay(
        endpoint_id, statuses=[s.capitalize() for s in statuses] or None, since=since,
        until=until))
    echo_answer(as_json, {"queued": queued}, f"{queued} events queued again")
