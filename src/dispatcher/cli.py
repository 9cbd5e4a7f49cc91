"""The `dispatcher` command line: the group `main` with the daemon's and the database's
commands (serve, worker-process, migrate, config, keys), and on it those of
dispatcher.commands (over the API) and dispatcher.commands.sandbox. Every command
answers bad input with a message on stderr and a non-zero exit, and changes nothing."""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

import click

from dispatcher import __version__
from dispatcher.commands import register as register_api_commands
from dispatcher.commands.audit import audit_group
from dispatcher.commands.common import table
from dispatcher.commands.local import (
    LOCAL,
    config_of,
    echo_json,
    handles_errors,
    local_services,
    run,
)
from dispatcher.commands.sandbox import register as register_sandbox_commands
from dispatcher.config import load_config, redacted
from dispatcher.logs import configure_logging
from dispatcher.operations import keys as key_ops
from dispatcher.store.database import database_url
from dispatcher.store.migrate import migrate_dsn
from dispatcher.store.tenants import ApiKeyInfo, validate_tenant_name

# Local commands act as the operator: whoever reaches the database owns the deployment.
CLI = LOCAL


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
@click.option("--workers", default=None, type=click.IntRange(0, 256),
              help="Worker processes sharing the port (config server.workers; "
                   "0: one per CPU, the default; 1: a single process).")
@click.option("--role", default=None, type=click.Choice(["all", "api", "worker"]),
              help="What the workers run (config server.role): all, api (management "
                   "API only) or worker (delivery only).")
@click.option("--dev", is_flag=True,
              help="Local development: endpoints may use http, any port and loopback/private "
                   "addresses. Never in production.")
@click.pass_context
@handles_errors
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None,
          role: str | None, dev: bool) -> None:
    """Run the daemon: API, delivery engine and maintenance.

    \b
    Example:
      dispatcher serve --workers 4 --port 8080
      dispatcher serve --dev     # deliver to receivers on this machine
    """
    from dispatcher.daemon import serve as serve_daemon
    from dispatcher.devmode import development_config

    config = development_config(config_of(ctx)) if dev else config_of(ctx)
    server = config.server
    config = dataclasses.replace(config, server=dataclasses.replace(
        server,
        workers=server.workers if workers is None else workers,
        role=server.role if role is None else role,  # type: ignore[arg-type]
    ))
    run(serve_daemon(config, host or server.host, server.port if port is None else port,
                     config_path=ctx.find_root().params.get("config_path")))


@main.command("worker-process", hidden=True)
@click.option("--fd", required=True, type=int)
@click.option("--role", required=True, type=click.Choice(["all", "api", "worker"]))
@click.option("--owner", required=True, type=click.UUID)
# Optional so that a supervisor of an earlier version (an upgrade in place) can still
# start workers; without it a worker takes its parent at start-up.
@click.option("--parent", type=int, default=None, help="the supervisor's pid")
@click.pass_context
@handles_errors
def worker_process(ctx: click.Context, fd: int, role: str, owner: uuid.UUID,
                   parent: int | None) -> None:
    """One worker of `dispatcher serve`, started by its supervisor (internal)."""
    from dispatcher.daemon import run_worker_process

    run(run_worker_process(config_of(ctx), fd, role, owner,  # type: ignore[arg-type]
                           os.getppid() if parent is None else parent))


@main.command()
@click.pass_context
@handles_errors
def migrate(ctx: click.Context) -> None:
    """Apply pending database migrations."""

    async def go() -> list[str]:
        async with database_url(config_of(ctx)) as dsn:
            return await migrate_dsn(dsn)

    applied = run(go())
    click.echo("applied: " + ", ".join(applied) if applied else "already up to date")


@main.group("config")
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@click.pass_context
@handles_errors
def config_show(ctx: click.Context) -> None:
    """Print the effective config (defaults, file, env) with secrets redacted."""
    echo_json(redacted(config_of(ctx)))


@main.group()
def keys() -> None:
    """Manage API keys: tenant keys (act only for their tenant) and operator keys
    (act for any tenant)."""


@keys.command("create")
@click.option("--tenant", default=None, help="Tenant name (created if new): a tenant key.")
@click.option("--operator", is_flag=True,
              help="An operator key: acts for any tenant (the Dispatcher-Tenant header), "
                   "for 'default' without it.")
@click.option("--name", default="", help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handles_errors
def keys_create(ctx: click.Context, tenant: str | None, operator: bool, name: str,
                as_json: bool) -> None:
    """Create a key; it is printed once and never again."""
    if tenant is None and not operator:
        raise click.MissingParameter(ctx=ctx, param_hint="'--tenant'", param_type="option")
    if tenant is not None and operator:
        raise click.UsageError("--tenant and --operator exclude each other", ctx=ctx)
    if tenant is not None:
        validate_tenant_name(tenant)  # before the database is opened

    async def go() -> str:
        async with local_services(config_of(ctx)) as svc:
            return await key_ops.create_key(svc, CLI, tenant, name)

    key = run(go())
    if as_json:
        echo_json({"kind": "operator", "key": key} if tenant is None
                  else {"tenant": tenant.strip(), "key": key})
    else:
        click.echo(key)


def _key_json(k: ApiKeyInfo) -> dict[str, Any]:
    return {"id": str(k.id), "kind": k.kind, "tenant": k.tenant, "name": k.name,
            "prefix": k.prefix,
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

    async def go() -> list[ApiKeyInfo]:
        async with local_services(config_of(ctx)) as svc:
            return await key_ops.list_keys(svc, CLI, tenant)

    found = run(go())
    if as_json:
        echo_json([_key_json(k) for k in found])
        return
    table(["ID", "PREFIX", "TENANT", "STATE", "NAME"],
          [[k.id, f"{k.prefix}...", k.tenant or "(operator)",
            "revoked" if k.revoked_at else "active", k.name] for k in found])


@keys.command("revoke")
@click.argument("key")
@click.pass_context
@handles_errors
def keys_revoke(ctx: click.Context, key: str) -> None:
    """Revoke a key by id, shown prefix, or the key itself."""

    async def go() -> ApiKeyInfo:
        async with local_services(config_of(ctx)) as svc:
            return await key_ops.revoke_key(svc, CLI, key)

    info = run(go())
    owner = "an operator key" if info.tenant is None else f"of tenant {info.tenant}"
    click.echo(f"revoked {info.id} ({info.prefix}...) {owner}")


@keys.command("end-sessions")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handles_errors
def keys_end_sessions(ctx: click.Context, key: str, as_json: bool) -> None:
    """End every web console session signed in with a key (by id, shown prefix, or
    the key itself); the key keeps working. Every daemon refuses those sessions
    from their next request.

    \b
    Example:
      dispatcher keys end-sessions dk_AbC12xYz
    """

    async def go() -> key_ops.SessionsEnded:
        async with local_services(config_of(ctx)) as svc:
            return await key_ops.end_sessions(svc, CLI, key)

    done = run(go())
    if as_json:
        echo_json({"key_id": str(done.key.id), "ended": done.ended})
    else:
        click.echo(f"ended {done.ended} console session(s) of {done.key.id} "
                   f"({done.key.prefix}...)")


# Commands over a running daemon's API (endpoints, events, event types, ...).
register_api_commands(main)
main.add_command(audit_group)
# Commands for testing receivers: sandbox capture/send, listen, check-receiver.
register_sandbox_commands(main)

if __name__ == "__main__":  # pragma: no cover
    main()
