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


# --- endpoint health: pause, resume, list (dispatcher.store.health) -----------------------


@main.group("endpoints")
def endpoints_group() -> None:
    """Endpoint health: list failure counters, pause and resume endpoints."""


_ENDPOINT_STATES = ("active", "paused", "disabled")


def _endpoint_id(value: str) -> Any:
    import uuid

    from dispatcher.errors import ValidationError

    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError(f"not an endpoint id: {value!r}", field="endpoint") from None


async def _tenant_id(conn: asyncpg.Connection, name: str | None) -> Any:
    from dispatcher.errors import NotFound

    if name is None:
        return None
    found = await conn.fetchval("SELECT id FROM tenants WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no tenant named {name!r}", field="tenant")
    return found


def _now() -> Any:
    from dispatcher.clock import SystemClock

    return SystemClock().now()


def _health_json(e: Any, cfg: Any) -> dict[str, Any]:
    return {
        "id": str(e.endpoint_id), "tenant_id": str(e.tenant_id), "url": e.url,
        "state": str(e.state), "state_reason": e.state_reason,
        "state_changed_at": e.state_changed_at.isoformat() if e.state_changed_at else None,
        "failures_in_window": e.failures_in_window,
        "window_threshold": e.window_threshold or cfg.window_threshold,
        "window_seconds": cfg.window_seconds,
        "failures_since_resume": e.failures_since_resume,
        "total_threshold": e.total_threshold or cfg.total_threshold,
        "held_deliveries": e.held, "redrive_pending": e.redrive_pending,
    }


@endpoints_group.command("list")
@click.option("--tenant", default=None, help="Only this tenant's endpoints (by name).")
@click.option("--state", type=click.Choice(_ENDPOINT_STATES), default=None,
              help="Only endpoints in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handles_errors
def endpoints_list(ctx: click.Context, tenant: str | None, state: str | None,
                   as_json: bool) -> None:
    """Endpoints with their state, failure counters against thresholds and held deliveries."""
    from dispatcher.model import EndpointState
    from dispatcher.store import health as health_store

    cfg = _config(ctx).health

    async def go() -> list[health_store.EndpointHealth]:
        async with connect(_config(ctx)) as conn:
            return await health_store.list_endpoint_health(
                conn, _now(), cfg.window_seconds, tenant_id=await _tenant_id(conn, tenant),
                state=None if state is None else EndpointState(state))

    found = [_health_json(e, cfg) for e in _run(go())]
    if as_json:
        _echo_json(found)
        return
    for e in found:
        click.echo(f"{e['id']}  {e['state']:<8}  window {e['failures_in_window']}/"
                   f"{e['window_threshold']}  total {e['failures_since_resume']}/"
                   f"{e['total_threshold']}  held {e['held_deliveries']}  {e['url']}"
                   + (f"  ({e['state_reason']})" if e["state_reason"] else ""))


@endpoints_group.command("pause")
@click.argument("endpoint")
@click.option("--reason", default="paused by an operator", show_default=True)
@click.option("--tenant", default=None, help="Refuse unless the endpoint is this tenant's.")
@click.pass_context
@handles_errors
def endpoints_pause(ctx: click.Context, endpoint: str, reason: str, tenant: str | None) -> None:
    """Pause an endpoint: its deliveries are held (new events too) until it is resumed."""
    from dispatcher.store import health as health_store

    endpoint_id = _endpoint_id(endpoint)

    async def go() -> health_store.StateChange:
        async with connect(_config(ctx)) as conn:
            return await health_store.pause_endpoint(
                conn, endpoint_id, reason, _now(), tenant_id=await _tenant_id(conn, tenant))

    change = _run(go())
    verb = "paused" if change.changed else "already paused"
    click.echo(f"{verb} {change.endpoint_id}; {change.deliveries} deliveries held")


@endpoints_group.command("resume")
@click.argument("endpoint")
@click.option("--tenant", default=None, help="Refuse unless the endpoint is this tenant's.")
@click.pass_context
@handles_errors
def endpoints_resume(ctx: click.Context, endpoint: str, tenant: str | None) -> None:
    """Resume a paused or disabled endpoint: counters reset, held deliveries re-driven by
    the running daemon at health.resume_rate_per_second."""
    from dispatcher.store import health as health_store

    endpoint_id = _endpoint_id(endpoint)

    async def go() -> health_store.StateChange:
        async with connect(_config(ctx)) as conn:
            return await health_store.resume_endpoint(
                conn, endpoint_id, _now(), tenant_id=await _tenant_id(conn, tenant))

    change = _run(go())
    verb = "resumed" if change.changed else "already active; counters reset for"
    click.echo(f"{verb} {change.endpoint_id}; {change.deliveries} held deliveries to re-drive")


if __name__ == "__main__":  # pragma: no cover
    main()
