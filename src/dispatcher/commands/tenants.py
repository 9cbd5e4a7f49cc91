"""`dispatcher tenants ...`: the operator's tenants through the API (an operator key):
add, list, show (with its stats), delete, and make a tenant key."""

from __future__ import annotations

import click

from dispatcher.client import Client, Tenant, TenantStats
from dispatcher.commands.common import (
    CURSOR,
    LIMIT,
    api_errors,
    call,
    echo_answer,
    echo_json,
    echo_page,
    fields,
    json_option,
    operator_connection_options,
    when,
)
from dispatcher.sandbox.samples import parse_data


@click.group("tenants")
def tenants_group() -> None:
    """Tenants (with an operator key): add, list, show, delete, and make their keys.
    Tenant commands act for one with --tenant NAME.

    \b
    Example:
      export DISPATCHER_API_KEY=dk_...   # an operator key: dispatcher keys create --operator
      dispatcher tenants add acme && dispatcher endpoints list --tenant acme
    """


def _show(t: Tenant) -> None:
    fields([("id", t.id), ("name", t.name), ("created", when(t.created_timestamp)),
            ("updated", when(t.updated_timestamp))]
           + [(f"metadata.{k}", v) for k, v in sorted(t.metadata.items())])


@tenants_group.command("add")
@click.argument("name")
@click.option("--metadata", default=None, help="A JSON object, or @FILE.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the new tenant's id.")
@json_option
@operator_connection_options
@api_errors
def tenants_add(name: str, metadata: str | None, quiet: bool, as_json: bool) -> None:
    """Create a tenant (name: 1-100 of a-z, 0-9, '.', '_', '-').

    \b
    Example:
      dispatcher tenants add acme --metadata '{"plan": "pro"}'
    """
    meta = None if metadata is None else parse_data(metadata, "--metadata")
    tenant = call(lambda api: api.create_tenant(name, meta))
    if as_json:
        echo_json(tenant.raw)
    elif quiet:
        click.echo(tenant.id)
    else:
        _show(tenant)


@tenants_group.command("list")
@click.option("--prefix", "name_prefix", default=None, help="Only names starting with this.")
@LIMIT
@CURSOR
@json_option
@operator_connection_options
@api_errors
def tenants_list(name_prefix: str | None, limit: int | None, cursor: str | None,
                 as_json: bool) -> None:
    """List tenants by name.

    \b
    Example:
      dispatcher tenants list --prefix acme
    """
    page = call(lambda api: api.list_tenants(name_prefix=name_prefix, limit=limit,
                                             cursor=cursor))
    echo_page(page, as_json, ["NAME", "ID", "CREATED (UTC)"],
              lambda t: [t.name, t.id, when(t.created_timestamp)])


@tenants_group.command("show")
@click.argument("tenant")
@json_option
@operator_connection_options
@api_errors
def tenants_show(tenant: str, as_json: bool) -> None:
    """Show a tenant (by name or id) with its endpoints by state and deliveries by
    status (--json: the tenant with a "stats" object).

    \b
    Example:
      dispatcher tenants show acme
    """

    async def both(api: Client) -> tuple[Tenant, TenantStats]:
        return await api.get_tenant(tenant), await api.tenant_stats(tenant)

    found, stats = call(both)
    if as_json:
        echo_json({**found.raw, "stats": stats.raw})
        return
    _show(found)
    fields([("endpoints", _counts(stats.endpoints)), ("deliveries", _counts(stats.deliveries)),
            ("failures in window", f"{stats.failures_in_window} "
                                   f"(last {stats.window_seconds} s)")])


def _counts(by: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in by.items())


@tenants_group.command("delete")
@click.argument("tenant")
@click.option("--force", is_flag=True,
              help="Also when it has endpoints: deletes its keys, endpoints, events and "
                   "deliveries with it.")
@json_option
@operator_connection_options
@api_errors
def tenants_delete(tenant: str, force: bool, as_json: bool) -> None:
    """Delete a tenant (refused while it has endpoints, unless --force).

    \b
    Example:
      dispatcher tenants delete acme --force
    """
    call(lambda api: api.delete_tenant(tenant, force=force))
    echo_answer(as_json, {"tenant": tenant, "deleted": True}, f"deleted {tenant}")


@tenants_group.command("key")
@click.argument("tenant")
@click.option("--name", default="", help="A label for the key.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the key.")
@json_option
@operator_connection_options
@api_errors
def tenants_key(tenant: str, name: str, quiet: bool, as_json: bool) -> None:
    """Make a key that acts only for this tenant; it is shown only now.

    \b
    Example:
      dispatcher tenants key acme --name billing --quiet
    """
    key = call(lambda api: api.create_tenant_key(tenant, name))
    if as_json:
        echo_json(key.raw)
    elif quiet:
        click.echo(key.key)
    else:
        fields([("key", key.key), ("id", key.id), ("prefix", key.prefix),
                ("tenant", f"{key.tenant} ({key.tenant_id})")])


@tenants_group.command("portal-link")
@click.argument("tenant")
@click.option("--read-only", is_flag=True, help="The portal may look, not change anything.")
@click.option("--ttl", "ttl", default=None, type=int,
              help="Seconds the link stays valid (60 to 2,592,000; default 3,600).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the link.")
@json_option
@operator_connection_options
@api_errors
def tenants_portal_link(tenant: str, read_only: bool, ttl: int | None, quiet: bool,
                        as_json: bool) -> None:
    """Make a portal link: the console as this tenant's own, for its people to open.

    \b
    Example:
      dispatcher tenants portal-link acme --read-only --ttl 86400 --quiet
    """
    link = call(lambda api: api.create_portal_link(tenant, read_only=read_only,
                                                   expires_in=ttl))
    if as_json:
        echo_json(link.raw)
    elif quiet:
        click.echo(link.url)
    else:
        fields([("url", link.url), ("tenant", link.tenant_id),
                ("read-only", "yes" if link.read_only else "no"),
                ("expires", when(link.expires_timestamp))])
