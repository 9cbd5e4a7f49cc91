"""`dispatcher trigger TYPE`: publish the catalogue's sample of a type through a daemon
and follow each endpoint's first attempt as it happens."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from typing import Any

import click

from dispatcher.client import Attempt, Client, Delivery, PublishedEvent
from dispatcher.commands.common import (
    EXIT_FAILED,
    api_errors,
    client,
    connection_options,
    echo_json,
    json_option,
)
from dispatcher.errors import ValidationError
from dispatcher.sandbox.samples import parse_data

POLL_SECONDS = 0.1


def apply_override(data: Any, assignment: str) -> Any:
    """`a.b.0.c=value`: set that path in `data` (objects made as needed); the value is
    JSON when it parses as JSON, else the text itself."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ValidationError(f"--set {assignment!r}: expected path=value", field="set")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    keys = path.split(".")
    if not isinstance(data, dict | list):
        data = {}
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValidationError(f"--set {path}: {key!r} is not an index of the list",
                                      field="set")
            slot: Any = int(key)
        else:
            slot = key
        if last:
            node[slot] = value
        else:
            child = node[slot] if isinstance(node, list) else node.get(slot)
            if not isinstance(child, dict | list):
                child = {}
                node[slot] = child
            node = child
    return data


@dataclass
class Outcome:
    delivery: Delivery
    attempt: Attempt | None

    @property
    def succeeded(self) -> bool:
        return self.delivery.status == "Success"

    def line(self) -> str:
        d, a = self.delivery, self.attempt
        if a is None:
            what = "held: the endpoint is paused" if d.held else f"no attempt yet ({d.status})"
        elif a.response_status is not None and self.succeeded:
            what = f"{a.response_status} ({a.duration_ms:.0f} ms)"
        else:
            status = f"{a.response_status} " if a.response_status is not None else ""
            reason = a.failure_reason or "failed"
            detail = f": {a.error}" if a.error else ""
            what = f"FAILED {status}{reason}{detail} ({a.duration_ms:.0f} ms)"
            if d.status == "Retrying" and d.next_retry_timestamp:
                what += f"; {d.retries_left} retries left"
        return f"{d.endpoint_id}  {what}  {d.url}"

    def to_json(self) -> dict[str, Any]:
        return {"endpoint_id": self.delivery.endpoint_id, "url": self.delivery.url,
                "status": self.delivery.status, "held": self.delivery.held,
                "succeeded": self.succeeded,
                "attempt": None if self.attempt is None else self.attempt.raw}


async def follow(api: Client, event_id: str, endpoint_ids: list[str], timeout: float,
                 show: Any) -> list[Outcome]:
    """Poll until every endpoint's first attempt is done (or it is held), reporting each
    as it finishes; what is still waiting at `timeout` is reported as it stands."""
    waiting = set(endpoint_ids)
    outcomes: list[Outcome] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while waiting:
        event = await api.get_event(event_id)
        expired = loop.time() >= deadline
        for d in event.deliveries or []:
            if d.endpoint_id not in waiting:
                continue
            if d.attempts == 0 and not d.held and not expired:
                continue
            attempt = None
            if d.attempts:
                attempt = (await api.list_attempts(d.endpoint_id, event_id, limit=1)).data[0]
            outcome = Outcome(d, attempt)
            outcomes.append(outcome)
            waiting.discard(d.endpoint_id)
            show(outcome)
        if waiting:
            await asyncio.sleep(POLL_SECONDS)
    return outcomes


@click.command("trigger")
@click.argument("type_", metavar="TYPE")
@click.option("--endpoint", "endpoint_id", default=None,
              help="Follow only this endpoint (it must be subscribed to TYPE).")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Change one field of the sample, e.g. --set status=Completed "
                   "--set destination.account_output.amount=12.5 (repeat; the value is "
                   "JSON when it parses, else text).")
@click.option("--data", default=None,
              help="Start from this data (JSON or @FILE) instead of the type's sample.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.5, 600),
              help="Seconds to wait for the first attempts.")
@json_option
@connection_options
@api_errors
def trigger(type_: str, endpoint_id: str | None, overrides: tuple[str, ...],
            data: str | None, timeout: float, as_json: bool) -> None:
    """Publish a sample event of TYPE through the daemon and show each endpoint's first
    attempt as it happens. Exits 1 if one failed (or was not attempted in time).

    \b
    Example:
      dispatcher trigger wallets.transaction.created --set status=Completed
      dispatcher trigger payment.order.updated --endpoint 0b9e4c0e-... --data @order.json
    """
    given = None if data is None else parse_data(data)
    api = client()

    async def go() -> tuple[PublishedEvent, list[Outcome]]:
        async with api:
            payload = given
            if payload is None:
                sample = (await api.get_event_type(type_)).sample
                payload = copy.deepcopy(sample) if sample is not None else {}
            for assignment in overrides:
                payload = apply_override(payload, assignment)
            if endpoint_id is not None:
                ep = await api.get_endpoint(endpoint_id)
                if "*" not in ep.event_types and type_ not in ep.event_types:
                    raise ValidationError(f"endpoint {endpoint_id} is not subscribed to "
                                          f"{type_!r}", field="endpoint")
            published = await api.publish(type_, payload)
            if not as_json:
                click.echo(f"published {published.type} {published.id}")
            followed = [d.endpoint_id for d in published.deliveries
                        if endpoint_id is None or d.endpoint_id == endpoint_id]
            if not followed and not as_json:
                click.echo("no endpoint is subscribed to this type")

            def show(outcome: Outcome) -> None:
                if not as_json:
                    click.echo(outcome.line())

            return published, await follow(api, published.id, followed, timeout, show)

    published, outcomes = asyncio.run(go())
    if as_json:
        echo_json({"event": published.raw, "outcomes": [o.to_json() for o in outcomes]})
    if not all(o.succeeded for o in outcomes):
        raise SystemExit(EXIT_FAILED)
