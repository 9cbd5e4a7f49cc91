"""What the commands that run on this machine share (the daemon's, the database's
and the sandbox's): the loaded config, the operations' Services over the configured
database, running a coroutine, JSON output, and errors as a one-line message with
exit status 2 (bad input) or 1 (unreachable)."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import asyncpg
import click

from dispatcher.catalogue import load_catalogue
from dispatcher.clock import SystemClock
from dispatcher.commands.common import EXIT_BAD_INPUT, EXIT_FAILED, error_text, fail
from dispatcher.config import Config
from dispatcher.errors import DispatcherError
from dispatcher.operations.scope import OPERATOR, Caller
from dispatcher.operations.services import Services
from dispatcher.retry import load_policies
from dispatcher.secretbox import load_secret_box
from dispatcher.store.database import database_url
from dispatcher.store.migrate import migrate_dsn

# The local commands' caller: an operator on this machine (the audit log's `cli:<user>`).
LOCAL = Caller(OPERATOR, None, via="cli")

P = ParamSpec("P")
R = TypeVar("R")


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn DispatcherError into a clean message and exit status 2; an unreachable
    database (or port already in use) into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DispatcherError as exc:
            fail(error_text(exc), EXIT_BAD_INPUT)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)

    return wrapper


def config_of(ctx: click.Context) -> Config:
    """The config the main group loaded (--config, DISPATCHER_*)."""
    config: Config = ctx.obj
    return config


@asynccontextmanager
async def local_services(config: Config) -> AsyncIterator[Services]:
    """The operations' Services for one command, over a migrated database and a pool
    of at most two connections."""
    async with database_url(config) as dsn:
        await migrate_dsn(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            yield Services(config, SystemClock(), pool, load_secret_box(config),
                           load_policies(config), load_catalogue(config))
        finally:
            await pool.close()


def run(coro: Awaitable[R]) -> R:
    from dispatcher.daemon import run_async

    return run_async(coro)  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
