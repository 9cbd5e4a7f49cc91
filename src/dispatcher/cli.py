"""The `dispatcher` command line. Every command answers bad input with a message on
stderr and a non-zero exit, and changes nothing."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import asyncpg
import click

from dispatcher import __version__
from dispatcher.config import Config, load_config, redacted
from dispatcher.errors import DispatcherError
from dispatcher.logs import configure_logging
from dispatcher.store import tenants
from dispatcher.store.database import database_url
from dispatcher.store.migrate import migrate_dsn

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn DispatcherError into a clean message and exit status 2; an unreachable
    database (or port already in use) into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DispatcherError as exc:
            field = f" [{exc.field}]" if exc.field and exc.field not in exc.message else ""
            _fail(f"{exc.message}{field}")
            raise AssertionError("unreachable") from exc
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _fail(f"{type(exc).__name__}: {exc}", code=1)
            raise AssertionError("unreachable") from exc

    return wrapper


def _config(ctx: click.Context) -> Config:
    config: Config = ctx.obj
    return config


def _run(coro: Awaitable[R]) -> R:
    from dispatcher.daemon import run_async

    return run_async(coro)  # type: ignore[return-value]


@asynccontextmanager
async def connect(config: Config) -> AsyncIterator[asyncpg.Connection]:
    """A migrated database connection for one CLI command."""
    async with database_url(config) as dsn:
        await migrate_dsn(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            yield conn
        finally:
            await conn.close()


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.version_option(__version__, prog_name="dispatcher")
@click.option("--config", "config_path", envvar="DISPATCHER_CONFIG", default=None,
              help="TOML config file (default: built-in defaults; env DISPATCHER_CONFIG).")
@click.pass_context
@handles_errors
def main(ctx: click.Context, config_path: str | None) -> None:
    """dispatcher: webhook delivery and retry engine."""
    ctx.obj = load_config(config_path)
    configure_logging(ctx.obj.log)


@main.command()
@click.option("--host", default=None, help="Listen address (config server.host).")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Listen port (config server.port).")
@click.pass_context
@handles_errors
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the daemon: API, delivery engine and maintenance."""
    from dispatcher.daemon import serve as serve_daemon

    config = _config(ctx)
    _run(serve_daemon(config, host or config.server.host,
                      config.server.port if port is None else port))


@main.command()
@click.pass_context
@handles_errors
def migrate(ctx: click.Context) -> None:
    """Apply pending database migrations."""

    async def go() -> list[str]:
        async with database_url(_config(ctx)) as dsn:
            return await migrate_dsn(dsn)

    applied = _run(go())
    click.echo("applied: " + ", ".join(applied) if applied else "already up to date")


@main.group("config")
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@click.pass_context
@handles_errors
def config_show(ctx: click.Context) -> None:
    """Print the effective config (defaults, file, env) with secrets redacted."""
    _echo_json(redacted(_config(ctx)))


@main.group()
def keys() -> None:
    """Manage API keys (each belongs to one tenant)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name (created if new).")
@click.option("--name", default="", help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handles_errors
def keys_create(ctx: click.Context, tenant: str, name: str, as_json: bool) -> None:
    """Create a key; it is printed once and never again."""
    tenants.validate_tenant_name(tenant)

    async def go() -> str:
        async with connect(_config(ctx)) as conn:
            return await tenants.create_api_key(conn, tenant, name)

    key = _run(go())
    if as_json:
        _echo_json({"tenant": tenant.strip(), "key": key})
    else:
        click.echo(key)


def _key_json(k: tenants.ApiKeyInfo) -> dict[str, Any]:
    return {"id": str(k.id), "tenant": k.tenant, "name": k.name, "prefix": k.prefix,
            "created_at": k.created_at.isoformat(),
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handles_errors
def keys_list(ctx: click.Context, tenant: str | None, as_json: bool) -> None:
    """List keys (prefixes only; keys themselves are never stored)."""

    async def go() -> list[tenants.ApiKeyInfo]:
        async with connect(_config(ctx)) as conn:
            return await tenants.list_api_keys(conn, tenant)

    found = _run(go())
    if as_json:
        _echo_json([_key_json(k) for k in found])
        return
    for k in found:
        state = "revoked" if k.revoked_at else "active"
        click.echo(f"{k.id}  {k.prefix}...  {k.tenant}  {state}  {k.name}")


@keys.command("revoke")
@click.argument("key")
@click.pass_context
@handles_errors
def keys_revoke(ctx: click.Context, key: str) -> None:
    """Revoke a key by id, shown prefix, or the key itself."""

    async def go() -> tenants.ApiKeyInfo:
        async with connect(_config(ctx)) as conn:
            return await tenants.revoke_api_key(conn, key)

    info = _run(go())
    click.echo(f"revoked {info.id} ({info.prefix}...) of tenant {info.tenant}")


@main.command("event-types")
@click.option("--group", default=None,
              help="Only this group (cobo, okx, cobalt, whatsapp, dispatcher, config).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with sample payloads.")
@click.pass_context
@handles_errors
def event_types(ctx: click.Context, group: str | None, as_json: bool) -> None:
    """List the event-type catalogue (built in and from config)."""
    from dispatcher.catalogue import load_catalogue

    found = [t for t in load_catalogue(_config(ctx)).values()
             if group is None or t.group == group]
    if as_json:
        _echo_json([t.to_json() for t in found])
        return
    for t in found:
        click.echo(f"{t.name:<42} {t.group:<10} {t.description}")


if __name__ == "__main__":  # pragma: no cover
    main()
