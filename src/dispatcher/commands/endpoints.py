"""`dispatcher endpoints ...`: a tenant's webhook and callback endpoints through the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click

from dispatcher.client import Client, Endpoint, EndpointSecret
from dispatcher.commands.common import (
    CURSOR,
    LIMIT,
    api_errors,
    call,
    connection_options,
    echo_answer,
    echo_json,
    echo_page,
    fields,
    json_option,
    when,
)
from dispatcher.commands.endpoint_options import delivery_flags, option_fields, options_body
from dispatcher.model import SIGNING_SCHEMES
from dispatcher.sandbox.samples import parse_data

P = ParamSpec("P")
R = TypeVar("R")


@click.group("endpoints")
def endpoints_group() -> None:
    """Webhook and callback endpoints: add, list, show, update, pause, resume, rotate
    secrets, delete.

    \b
    Example:
      export DISPATCHER_URL=http://127.0.0.1:8080 DISPATCHER_API_KEY=dk_...
      dispatcher endpoints add https://example.com/hook --event-type payment.order.updated
    """


def _settings(fn: Callable[P, R]) -> Callable[P, R]:
    options = [
        click.option("--description", default=None, help="A label for the endpoint."),
        click.option("--event-type", "event_types", multiple=True,
                     help="A type to receive (repeat; default every type)."),
        click.option("--scheme", "signing_scheme", type=click.Choice(SIGNING_SCHEMES),
                     default=None, help="Signing scheme (default: the daemon's)."),
        click.option("--retry-policy", default=None,
                     help="okx, exponential-3, standard, cobo, none, or one from config."),
        click.option("--timeout", "timeout_seconds", type=click.FloatRange(1, 30),
                     default=None, help="Seconds allowed per attempt (1-30)."),
        click.option("--max-in-flight", type=click.IntRange(1, 1000), default=None,
                     help="Deliveries in flight at once (1-1000)."),
        click.option("--metadata", default=None, help="A JSON object, or @FILE."),
        click.option("--channel", "channels", multiple=True,
                     help="Receive only events of this channel (repeat; default: every "
                          "event of its types)."),
        click.option("--trace-context/--no-trace-context", "propagate_trace_context",
                     default=None, help="Send traceparent/tracestate with each request "
                                        "when tracing is on (default: yes)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _body(values: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in values.items() if v not in (None, ())}
    if "event_types" in body:
        body["event_types"] = list(body["event_types"])
    if "channels" in body:
        body["channels"] = list(body["channels"])
    if "metadata" in body:
        body["metadata"] = parse_data(body["metadata"], "--metadata")
    return body


def _show(ep: Endpoint) -> None:
    fields([
        ("id", ep.id), ("kind", ep.kind), ("url", ep.url),
        ("description", ep.description or None),
        ("state", ep.state + (f" ({ep.state_reason})" if ep.state_reason else "")),
        ("event types", ", ".join(ep.event_types)), ("signing scheme", ep.signing_scheme),
        ("retry policy", ep.retry_policy), ("timeout", f"{ep.timeout_seconds:g} s"),
        ("max in flight", ep.max_in_flight), ("created", when(ep.created_timestamp)),
        ("updated", when(ep.updated_timestamp)),
        *option_fields(ep),
    ])


def _show_secret(secret: EndpointSecret | Endpoint) -> None:
    if secret.secret:
        click.echo(f"signing secret: {secret.secret}")
    if secret.public_key:
        click.echo(f"public key: {secret.public_key}")


@endpoints_group.command("add")
@click.argument("url")
@click.option("--kind", type=click.Choice(["webhook", "callback"]), default=None,
              help="webhook (default) receives events; callback receives approval "
                   "callbacks only (set on create only).")
@_settings
@delivery_flags(update=False)
@click.option("--quiet", "-q", is_flag=True, help="Print only the new endpoint's id.")
@json_option
@connection_options
@api_errors
def endpoints_add(url: str, kind: str | None, quiet: bool, as_json: bool,
                  **settings: Any) -> None:
    """Create an endpoint; its signing secret is printed (see also `endpoints secret`).

    \b
    Example:
      dispatcher endpoints add https://example.com/hook --event-type payment.order.updated
      EP=$(dispatcher endpoints add http://127.0.0.1:8081/hook --quiet)
      dispatcher endpoints add https://example.com/approve --kind callback
      dispatcher endpoints add https://bank.example.com/hook --header 'X-Api-Key: k1' \\
        --auth-bearer "$TOKEN" --client-cert client.pem --client-key client.key
    """
    options = options_body(settings)
    body = {**_body({**settings, "kind": kind}), **options}
    ep = call(lambda api: api.create_endpoint(url, **body))
    if as_json:
        echo_json(ep.raw)
    elif quiet:
        click.echo(ep.id)
    else:
        _show(ep)
        _show_secret(ep)


@endpoints_group.command("list")
@click.option("--state", type=click.Choice(["active", "paused", "disabled"]), default=None,
              help="Only endpoints in this state.")
@LIMIT
@CURSOR
@json_option
@connection_options
@api_errors
def endpoints_list(state: str | None, limit: int | None, cursor: str | None,
                   as_json: bool) -> None:
    """List endpoints, oldest first.

    \b
    Example:
      dispatcher endpoints list --state paused
    """
    page = call(lambda api: api.list_endpoints(state=state, limit=limit, cursor=cursor))
    echo_page(page, as_json, ["ID", "KIND", "STATE", "SCHEME", "EVENT TYPES", "URL"],
              lambda e: [e.id, e.kind, e.state, e.signing_scheme, ",".join(e.event_types),
                         e.url])


@endpoints_group.command("show")
@click.argument("endpoint_id")
@json_option
@connection_options
@api_errors
def endpoints_show(endpoint_id: str, as_json: bool) -> None:
    """Show an endpoint with its health: failures against the pause thresholds and
    held deliveries (--json: the endpoint with a "health" object).

    \b
    Example:
      dispatcher endpoints show 0b9e4c0e-...
    """

    async def both(api: Client) -> tuple[Endpoint, dict[str, Any]]:
        return await api.get_endpoint(endpoint_id), await api.get_endpoint_health(endpoint_id)

    ep, health = call(both)
    if as_json:
        echo_json({**ep.raw, "health": health})
        return
    _show(ep)
    fields([("failures in window", f"{health['failures_in_window']}/"
                                   f"{health['window_threshold']} "
                                   f"(last {health['window_seconds']} s)"),
            ("since resume", f"{health['failures_since_resume']}/{health['total_threshold']}"),
            ("held deliveries", health["held"]),
            *[("warning", w["message"]) for w in health.get("warnings", [])]])


@endpoints_group.command("update")
@click.argument("endpoint_id")
@click.option("--new-url", "new_url", default=None, help="A new URL.")
@_settings
@delivery_flags(update=True)
@json_option
@connection_options
@api_errors
def endpoints_update(endpoint_id: str, new_url: str | None, as_json: bool,
                     **settings: Any) -> None:
    """Change an endpoint; options not given stay as they are.

    \b
    Example:
      dispatcher endpoints update 0b9e4c0e-... --event-type payment.order.updated --timeout 5
      dispatcher endpoints update 0b9e4c0e-... --auth-basic "bank:$PASSWORD" --clear-tls
    """
    options = options_body(settings)
    body = {**_body({**settings, "url": new_url}), **options}
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    ep = call(lambda api: api.update_endpoint(endpoint_id, **body))
    if as_json:
        echo_json(ep.raw)
    else:
        _show(ep)
        _show_secret(ep)


def _state_command(name: str, doc: str, change: str) -> None:
    @endpoints_group.command(name, help=doc)
    @click.argument("endpoint_id")
    @json_option
    @connection_options
    @api_errors
    def command(endpoint_id: str, as_json: bool) -> None:
        ep = call(lambda api: getattr(api, change)(endpoint_id))
        echo_answer(as_json, ep.raw, f"{ep.id} {ep.state}")


_state_command("pause", "Pause an endpoint: its deliveries are held until it is resumed."
               "\n\n\b\nExample:\n  dispatcher endpoints pause 0b9e4c0e-...", "pause_endpoint")
_state_command("resume", "Resume a paused or disabled endpoint: held deliveries are sent "
               "again.\n\n\b\nExample:\n  dispatcher endpoints resume 0b9e4c0e-...",
               "resume_endpoint")


@endpoints_group.command("rotate-secret")
@click.argument("endpoint_id")
@json_option
@connection_options
@api_errors
def endpoints_rotate_secret(endpoint_id: str, as_json: bool) -> None:
    """Make a new signing secret; the old one keeps signing until it expires.

    \b
    Example:
      dispatcher endpoints rotate-secret 0b9e4c0e-...
    """
    secret = call(lambda api: api.rotate_secret(endpoint_id))
    if as_json:
        echo_json(secret.raw)
        return
    _show_secret(secret)
    if secret.previous_secret_expires_timestamp:
        click.echo(f"previous secret expires: {when(secret.previous_secret_expires_timestamp)}"
                   " UTC")


@endpoints_group.command("secret")
@click.argument("endpoint_id")
@click.option("--quiet", "-q", is_flag=True, help="Print only the secret (or public key).")
@json_option
@connection_options
@api_errors
def endpoints_secret(endpoint_id: str, quiet: bool, as_json: bool) -> None:
    """Show an endpoint's current signing secret (HMAC) or public key (Ed25519).

    \b
    Example:
      dispatcher sandbox capture --secret "$(dispatcher endpoints secret $EP --quiet)"
    """
    secret = call(lambda api: api.get_secret(endpoint_id))
    if as_json:
        echo_json(secret.raw)
    elif quiet:
        click.echo(secret.secret or secret.public_key)
    else:
        click.echo(f"signing scheme: {secret.signing_scheme}")
        _show_secret(secret)


@endpoints_group.command("delete")
@click.argument("endpoint_id")
@json_option
@connection_options
@api_errors
def endpoints_delete(endpoint_id: str, as_json: bool) -> None:
    """Delete an endpoint with its deliveries.

    \b
    Example:
      dispatcher endpoints delete 0b9e4c0e-...
    """
    call(lambda api: api.delete_endpoint(endpoint_id))
    echo_answer(as_json, {"id": endpoint_id, "deleted": True}, f"deleted {endpoint_id}")
