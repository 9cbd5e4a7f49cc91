"""What every API-backed command shares: the connection options (`--url`,
`--api-key`, `--tenant` or DISPATCHER_URL, DISPATCHER_API_KEY, DISPATCHER_TENANT),
`--json` (exactly one JSON document on stdout), aligned tables for people, and the
exit statuses:

    0  done
    1  failed: the daemon cannot be reached or answered 5xx, or a delivery failed
    2  bad input: rejected by the command line or by the API (400, 409, 413, 415, 422)
    3  not found (404)
    4  not authorized (401, 403)
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from dispatcher.client import UNREACHABLE, ApiError, Attempt, Client, Page
from dispatcher.errors import DispatcherError

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_UNAUTHORIZED = 1, 2, 3, 4


def exit_status(error: ApiError) -> int:
    if error.status in (401, 403):
        return EXIT_UNAUTHORIZED
    if error.status == 404:
        return EXIT_NOT_FOUND
    if 400 <= error.status < 500:
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def error_text(exc: DispatcherError | ApiError) -> str:
    """The error's message, with its field when the message does not name it."""
    where = f" [{exc.field}]" if exc.field and exc.field not in exc.message else ""
    return f"{exc.message}{where}"


def fail(message: str, status: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def api_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """ApiError and bad local input become `error: ...` on stderr and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            if exc.code == UNREACHABLE:
                fail(f"{exc.message}\n  is the daemon running? Start it with `make run` (or "
                     "`dispatcher serve`), or point --url / DISPATCHER_URL at it",
                     EXIT_FAILED)
            fail(error_text(exc), exit_status(exc))
        except DispatcherError as exc:
            fail(error_text(exc), EXIT_BAD_INPUT)

    return wrapper


def _connection(fn: Callable[P, R], *, tenant: bool) -> Callable[P, R]:
    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        ctx.meta[f"dispatcher.{param.name}"] = value
        return value

    options = [
        click.option("--url", "daemon_url", envvar="DISPATCHER_URL", default=DEFAULT_URL,
                     show_default=True, expose_value=False, callback=remember,
                     help="The daemon's address (env DISPATCHER_URL)."),
        click.option("--api-key", "api_key", envvar="DISPATCHER_API_KEY", default=None,
                     expose_value=False, callback=remember,
                     help="API key (env DISPATCHER_API_KEY)."),
    ]
    if tenant:
        options.append(click.option(
            "--tenant", "act_for_tenant", envvar="DISPATCHER_TENANT", default=None,
            expose_value=False, callback=remember,
            help="Act for this tenant (operator keys; env DISPATCHER_TENANT)."))
    for option in reversed(options):
        fn = option(fn)
    return fn


def connection_options(fn: Callable[P, R]) -> Callable[P, R]:
    """--url, --api-key and --tenant, stored on the context for `client()`."""
    return _connection(fn, tenant=True)


def operator_connection_options(fn: Callable[P, R]) -> Callable[P, R]:
    """--url and --api-key (an operator key) for commands over tenants themselves."""
    return _connection(fn, tenant=False)


def json_option(fn: Callable[P, R]) -> Callable[P, R]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the answer as one JSON document.")(fn)


def client() -> Client:
    meta = click.get_current_context().meta
    key = meta.get("dispatcher.api_key")
    if not key:
        fail("no API key: pass --api-key or set DISPATCHER_API_KEY "
             "(`dispatcher keys create --tenant NAME` makes one)", EXIT_BAD_INPUT)
    return Client(meta.get("dispatcher.daemon_url") or DEFAULT_URL, key,
                  meta.get("dispatcher.act_for_tenant"))


def call(work: Callable[[Client], Awaitable[R]]) -> R:
    """Run `work` with a client of the daemon, closing it afterwards."""
    api = client()

    async def go() -> R:
        async with api:
            return await work(api)

    return asyncio.run(go())


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns aligned to their widest cell; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r]
                                          for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False))
                   + ("  " if len(r) > 1 else "") + r[-1])


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """A record as aligned `name  value` lines."""
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        click.echo(f"{name.ljust(width)}  {'-' if value is None else value}")


def when(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def echo_answer(as_json: bool, data: Any, line: str) -> None:
    """`data` as the JSON document with --json, else `line` for people."""
    if as_json:
        echo_json(data)
    else:
        click.echo(line)


def echo_page(page: Page[T], as_json: bool, headers: Sequence[str],
              row: Callable[[T], Sequence[Any]]) -> None:
    """A page of a list: the API's answer with --json, else a table of `row(item)`,
    and the cursor of the next page on stderr."""
    if as_json:
        echo_json(page.raw)
        return
    table(headers, [row(item) for item in page.data])
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


ATTEMPT_HEADERS = ["ATTEMPT", "AT (UTC)", "STATUS", "DURATION", "FAILURE"]


def attempt_row(a: Attempt) -> list[Any]:
    """An attempt (of an event or a callback) under ATTEMPT_HEADERS."""
    return [a.attempt, when(a.timestamp), a.response_status, f"{a.duration_ms:.0f} ms",
            a.failure_reason and f"{a.failure_reason}" + (f": {a.error}" if a.error else "")]


LIMIT = click.option("--limit", type=click.IntRange(1, 100), default=None,
                     help="Page size (1-100; default 50).")
CURSOR = click.option("--cursor", default=None, help="The next page, as printed after a page.")


def created_range(fn: Callable[P, R]) -> Callable[P, R]:
    """--since and --until: only what was created in that window."""
    fn = click.option("--until", type=click.IntRange(0), default=None,
                      help="Created before (Unix ms).")(fn)
    return click.option("--since", type=click.IntRange(0), default=None,
                        help="Created at or after (Unix ms).")(fn)
