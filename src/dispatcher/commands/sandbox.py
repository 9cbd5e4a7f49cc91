"""The sandbox commands, for tenants testing their receivers before going live
(dispatcher.sandbox): `sandbox capture`, `sandbox send`, `listen` and `check-receiver`.
`register` adds them to the main click group."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from dispatcher.commands.common import api_errors, connection_options
from dispatcher.commands.local import config_of, echo_json, handles_errors, run
from dispatcher.errors import DispatcherError


def register(main: click.Group) -> None:
    for command in (sandbox_group, listen, check_receiver):
        main.add_command(command)


def _scheme(ctx: click.Context, scheme: str | None) -> str:
    from dispatcher.errors import ValidationError
    from dispatcher.signing import SCHEMES

    chosen = scheme if scheme is not None else config_of(ctx).signing.default_scheme
    if chosen not in SCHEMES:
        raise ValidationError(f"unknown signing scheme {chosen!r}; expected one of "
                              f"{', '.join(SCHEMES)}", field="scheme")
    return chosen


def _event_data(ctx: click.Context, type_: str, data: str | None) -> Any:
    from dispatcher.catalogue import load_catalogue
    from dispatcher.sandbox.samples import event_data, parse_data

    given = None if data is None else parse_data(data)
    return event_data(load_catalogue(config_of(ctx)), type_, given, has_data=data is not None)


def _echo_key(key: Any) -> None:
    for line in key.describe():
        click.echo(line)


def _signing_key_json(key: Any) -> dict[str, Any]:
    """The signing key as `sandbox send --json` shows it (a secret only if generated)."""
    return {"scheme": key.scheme, "secret": key.secret if key.generated else None,
            "verify_with": key.verifier_key if key.generated or key.scheme in (
                "standard-v1a", "cobo") else None}


def _echo_exchange(key: Any, attempt: Any) -> None:
    """The key, the signed request and the receiver's answer, for people."""
    _echo_key(key)
    click.echo(f"POST {attempt.url}")
    for name, value in attempt.request_headers.items():
        click.echo(f"  {name}: {value}")
    click.echo("")
    click.echo(attempt.body.decode("utf-8", "replace"))
    click.echo("")
    click.echo(f"response: {attempt.summary()}")
    if attempt.response_body:
        click.echo(attempt.response_body)


async def _serve_until_stopped(server: Any, host: str, port: int,
                               started: Callable[[], None]) -> None:
    """Run a capture server until SIGINT/SIGTERM."""
    import asyncio
    import signal

    await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        started()
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await server.stop()


_TIMEOUT = click.FloatRange(0.1, 30.0)
_PROXY_HELP = ("Send through this forward proxy (http://, https:// or socks5://host:port), "
               "as the daemon does with delivery.proxy_url.")


def _proxy(value: str | None) -> str:
    """The --proxy value, checked; "" for none."""
    from dispatcher.config import is_proxy_url
    from dispatcher.errors import ValidationError

    if value is None:
        return ""
    if not is_proxy_url(value):
        raise ValidationError("--proxy must be an http://, https:// or socks5:// URL with a "
                              "host and port", field="proxy")
    return value


_SCHEME_HELP = ("Signing scheme: standard-v1, standard-v1a, cobalt or cobo "
                "(default: config signing.default_scheme).")


@click.group("sandbox")
def sandbox_group() -> None:
    """Test webhook receivers before going live: capture requests, send sample events."""


@sandbox_group.command("capture")
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535),
              help="Listen port (0: any free port).")
@click.option("--status", default=200, show_default=True, type=click.IntRange(200, 599),
              help="HTTP status to answer every request with.")
@click.option("--scheme", default=None, help=_SCHEME_HELP)
@click.option("--secret", default=None,
              help="Verify signatures with this secret (for standard-v1a and cobo the "
                   "private key; its public key is used).")
@click.option("--public-key", default=None,
              help="Verify standard-v1a (whpk_... or PEM) or cobo (hex or PEM) signatures.")
@click.option("--keep", default=100, show_default=True, type=click.IntRange(1, 100_000),
              help="How many requests GET /_requests serves (the newest).")
@click.option("--save", "save_dir", default=None, type=click.Path(file_okay=False),
              help="Also write each request to DIR/NNNNNN.json.")
@click.option("--answer", default=None, type=click.Choice(["ok", "deny"]),
              help="Act as a callback endpoint: answer every request with this body "
                   "(401 instead when --secret/--public-key is given and the signature "
                   "does not verify).")
@click.pass_context
@handles_errors
def sandbox_capture(ctx: click.Context, host: str, port: int, status: int, scheme: str | None,
                    secret: str | None, public_key: str | None, keep: int,
                    save_dir: str | None, answer: str | None) -> None:
    """Run a capture receiver: print every request (and whether its signature verifies),
    answer with --status (and the body --answer for callbacks), serve the last requests
    as JSON at GET /_requests."""
    from pathlib import Path

    from dispatcher.sandbox.capture import REQUESTS_PATH, CaptureServer, make_verifier

    verifier = make_verifier(_scheme(ctx, scheme), secret, public_key)

    def show(c: Any) -> None:
        sig = ("signature: not checked (no --secret/--public-key)" if c.verified is None
               else "signature: verified" if c.verified
               else f"signature: FAILED ({c.verification_error})")
        click.echo(f"#{c.n} {c.method} {c.path}  {sig}")
        for name, value in c.headers.items():
            click.echo(f"  {name}: {value}")
        if c.body:
            try:
                click.echo(json.dumps(json.loads(c.body), indent=2, ensure_ascii=False))
            except ValueError:
                click.echo(c.body.decode("utf-8", "replace"))
        click.echo("")

    server = CaptureServer(status=status, keep=keep, verifier=verifier,
                           save_dir=None if save_dir is None else Path(save_dir),
                           on_capture=show, answer=answer)
    answering = f"{status} {answer}" if answer else str(status)

    def started() -> None:
        click.echo(f"capturing on {server.url} (answering {answering}); "
                   f"requests as JSON at {server.url}{REQUESTS_PATH}; Ctrl-C to stop")

    run(_serve_until_stopped(server, host, port, started))


@sandbox_group.command("send")
@click.argument("url")
@click.option("--type", "type_", default=None,
              help="Event type (see `dispatcher event-types`); required unless --callback.")
@click.option("--scheme", default=None, help=_SCHEME_HELP)
@click.option("--secret", default=None,
              help="Signing secret (whsec_..., whsk_..., cobalt text, cobo hex seed); "
                   "default: a new one, printed.")
@click.option("--data", default=None,
              help="The event's data as JSON, or @FILE (default: the type's sample payload).")
@click.option("--timeout", default=2.0, show_default=True, type=_TIMEOUT,
              help="Total time allowed for the response, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--callback", "as_callback", is_flag=True,
              help="Send an approval callback instead (--type default withdrawal.approve, "
                   "--data default a Cobo Transaction) and print the decision the engine "
                   "would record. Exits 1 if the answer is not a decision.")
@click.option("--proxy", default=None, help=_PROXY_HELP)
@click.pass_context
@handles_errors
def sandbox_send(ctx: click.Context, url: str, type_: str | None, scheme: str | None,
                 secret: str | None, data: str | None, timeout: float, as_json: bool,
                 as_callback: bool, proxy: str | None) -> None:
    """Send one sample event to URL, signed exactly as the engine signs it, and print the
    response and the outcome the engine would record. Exits 1 if that is a failure."""
    from dispatcher.sandbox.forward import check_url, deliver, sandbox_transport
    from dispatcher.sandbox.samples import build_event, signing_key

    target = check_url(url)
    proxy_url = _proxy(proxy)
    key = signing_key(_scheme(ctx, scheme), secret)
    if as_callback:
        _send_callback(ctx, target, key, type_, data, timeout, as_json, proxy_url)
        return
    if type_ is None:
        raise click.UsageError("Missing option '--type'.")
    event = build_event(type_, _event_data(ctx, type_, data))
    success = config_of(ctx).delivery.success_statuses

    async def go() -> Any:
        async with sandbox_transport(proxy_url) as transport:
            return await deliver(transport, target, key, event, timeout=timeout,
                                 success_statuses=success)

    attempt = run(go())
    if as_json:
        echo_json({**_signing_key_json(key), "event_id": str(event.id), "type": event.type,
                   **attempt.to_json()})
    else:
        _echo_exchange(key, attempt)
        click.echo(f"outcome: {attempt.outcome}")
    if not attempt.succeeded:
        sys.exit(1)


def _callback_data(ctx: click.Context, data: str | None) -> Any:
    from dispatcher.catalogue import load_catalogue
    from dispatcher.errors import ValidationError
    from dispatcher.sandbox.callbacks import sample_callback_data
    from dispatcher.sandbox.samples import parse_data

    if data is None:
        return sample_callback_data(load_catalogue(config_of(ctx)))
    parsed = parse_data(data)
    if not isinstance(parsed, dict):
        raise ValidationError("--data: a callback's data must be a JSON object", field="data")
    return parsed


def _send_callback(ctx: click.Context, target: str, key: Any, type_: str | None,
                   data: str | None, timeout: float, as_json: bool, proxy_url: str) -> None:
    from dispatcher.sandbox.callbacks import (
        DEFAULT_CALLBACK_TYPE,
        build_callback,
        describe_decision,
    )
    from dispatcher.sandbox.forward import post, sandbox_transport, signed_headers

    callback = build_callback(type_ or DEFAULT_CALLBACK_TYPE, _callback_data(ctx, data),
                              key.scheme)

    async def go() -> Any:
        async with sandbox_transport(proxy_url) as transport:
            return await post(transport, target, callback.body, signed_headers(key, callback),
                              timeout=timeout)

    attempt = run(go())
    decision, line = describe_decision(attempt)
    if as_json:
        echo_json({**_signing_key_json(key), "callback_id": str(callback.id),
                   "type": callback.type, **attempt.to_json(), "decision": decision,
                   "status_recorded": {"ok": "Approved", "deny": "Denied"}.get(
                       decision or "", "Retrying")})
    else:
        _echo_exchange(key, attempt)
        click.echo(line)
    if decision is None:
        sys.exit(1)


@click.command("listen")
@click.option("--forward-to", "forward_to", required=True,
              help="Your local receiver, e.g. http://localhost:3000/hook.")
@click.option("--scheme", default=None, help=_SCHEME_HELP)
@click.option("--secret", default=None,
              help="Secret to sign with (the one your receiver verifies with); "
                   "default: a new one, printed.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to take events on.")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Take events on this local port (default 8082; 0: any free port) "
                   "instead of from the daemon.")
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read events as JSON lines on stdin instead of listening.")
@click.option("--timeout", default=2.0, show_default=True, type=_TIMEOUT,
              help="Total time allowed for each response, in seconds.")
@click.option("--events", "events", multiple=True,
              help="From the daemon: only these event types (comma-separated or repeated).")
@connection_options
@click.pass_context
@handles_errors
@api_errors
def listen(ctx: click.Context, forward_to: str, scheme: str | None, secret: str | None,
           host: str, port: int | None, from_stdin: bool, timeout: float,
           events: tuple[str, ...]) -> None:
    """Forward events to a local receiver. With an API key (--api-key or
    DISPATCHER_API_KEY) and none of --port, --stdin, --secret, --scheme: connected to
    the daemon, which makes a temporary endpoint of your tenant delivering over that
    connection (its signing secret is printed; it is removed when you stop).
    Otherwise, each event is signed for your secret as the engine would sign it: a
    delivery body (event_id,
    type, created_timestamp, data; forwarded unchanged) or {"type": ..., "data": ...}
    (a new event; data defaults to the type's sample), POSTed to the local port, or
    given on stdin as JSON lines with --stdin.

    \b
    Example:
      dispatcher listen --forward-to http://localhost:3000/hook --events payment.order.updated
      dispatcher listen --forward-to http://localhost:3000/hook --port 8082
    """
    api_key = ctx.meta.get("dispatcher.api_key")
    if api_key and port is None and not from_stdin and secret is None and scheme is None:
        from dispatcher.commands.listen import listen_through_daemon
        from dispatcher.sandbox.forward import check_url

        types = [t.strip() for given in events for t in given.split(",") if t.strip()]
        listen_through_daemon(ctx.meta["dispatcher.daemon_url"], api_key,
                              ctx.meta.get("dispatcher.act_for_tenant"), check_url(forward_to),
                              types, timeout)
        return
    port = 8082 if port is None else port
    import asyncio

    from dispatcher.catalogue import load_catalogue
    from dispatcher.sandbox.capture import CaptureServer
    from dispatcher.sandbox.forward import check_url, sandbox_transport
    from dispatcher.sandbox.listen import Forwarded, Forwarder
    from dispatcher.sandbox.samples import signing_key

    target = check_url(forward_to)
    key = signing_key(_scheme(ctx, scheme), secret)
    catalogue = load_catalogue(config_of(ctx))
    success = config_of(ctx).delivery.success_statuses
    failures = 0
    bad_input = 0

    def show(done: Forwarded) -> None:
        nonlocal failures
        a = done.attempt
        if not a.succeeded:
            failures += 1
        click.echo(f"{done.event.type} {done.event.id} -> {a.summary()}: {a.outcome}")

    def bad(message: str) -> None:
        nonlocal bad_input
        bad_input += 1
        click.echo(f"error: {message}", err=True)

    _echo_key(key)

    async def go() -> None:
        async with sandbox_transport() as transport:
            forwarder = Forwarder(transport, target, key, catalogue, timeout=timeout,
                                  success_statuses=success, on_result=show, on_error=bad)
            if from_stdin:
                stream = sys.stdin

                def read_line() -> str:
                    return str(stream.readline())

                n = 0
                while line := await asyncio.to_thread(read_line):
                    n += 1
                    if not line.strip():
                        continue
                    try:
                        await forwarder.forward(line.encode())
                    except DispatcherError as exc:
                        bad(f"line {n}: {exc.message}")
                return
            server = CaptureServer(respond=forwarder.respond)

            def started() -> None:
                click.echo(f"forwarding events POSTed to {server.url} to {target}; "
                           "Ctrl-C to stop")

            await _serve_until_stopped(server, host, port, started)

    run(go())
    if bad_input:
        sys.exit(2)
    if failures:
        sys.exit(1)


@click.command("check-receiver")
@click.argument("url")
@click.option("--secret", required=True,
              help="The secret the receiver verifies with (for standard-v1a and cobo, the "
                   "private key whose public key it has).")
@click.option("--scheme", default=None, help=_SCHEME_HELP)
@click.option("--type", "type_", default=None,
              help="Event type to probe with (default: one of the scheme's provider).")
@click.option("--data", default=None, help="The event's data as JSON, or @FILE.")
@click.option("--timeout", default=2.0, show_default=True, type=_TIMEOUT,
              help="Total time allowed for each response, in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--callback", "as_callback", is_flag=True,
              help="Probe a callback receiver: genuine callbacks must get exactly ok or "
                   "deny; forged, stale and unsigned ones a 4xx, never ok.")
@click.option("--proxy", default=None, help=_PROXY_HELP)
@click.pass_context
@handles_errors
def check_receiver(ctx: click.Context, url: str, secret: str, scheme: str | None,
                   type_: str | None, data: str | None, timeout: float,
                   as_json: bool, as_callback: bool, proxy: str | None) -> None:
    """Probe a receiver: signed events accepted (also twice), tampered, stale and
    unsigned requests rejected, answers quick. Exits 1 if a required check fails."""
    from dispatcher.sandbox.callbacks import DEFAULT_CALLBACK_TYPE, run_callback_checks
    from dispatcher.sandbox.conformance import DEFAULT_TYPE, DEFAULT_TYPES, run_checks
    from dispatcher.sandbox.forward import check_url, sandbox_transport
    from dispatcher.sandbox.samples import signing_key

    target = check_url(url)
    proxy_url = _proxy(proxy)
    key = signing_key(_scheme(ctx, scheme), secret)
    if as_callback:
        event_type = type_ or DEFAULT_CALLBACK_TYPE
        payload = _callback_data(ctx, data)
    else:
        event_type = type_ or DEFAULT_TYPES.get(key.scheme, DEFAULT_TYPE)
        payload = _event_data(ctx, event_type, data)
    success = config_of(ctx).delivery.success_statuses

    async def go() -> Any:
        async with sandbox_transport(proxy_url) as transport:
            if as_callback:
                return await run_callback_checks(transport, target, key, event_type, payload,
                                                 timeout=timeout)
            return await run_checks(transport, target, key, event_type, payload,
                                    timeout=timeout, success_statuses=success)

    report = run(go())
    if as_json:
        echo_json(report.to_json())
    else:
        what = "callback type" if as_callback else "event type"
        click.echo(f"checking {report.url} ({report.scheme}, {what} {event_type})")
        for c in report.checks:
            optional = "" if c.required else " [optional]"
            click.echo(f"  {c.status.upper():<4}  ({c.id}) {c.title}{optional}: {c.reason}")
        failed = [c for c in report.checks if c.failed]
        click.echo(f"{len(failed)} of {len(report.checks)} checks failed" if failed
                   else "receiver passed every required check")
    if not report.passed:
        sys.exit(1)
