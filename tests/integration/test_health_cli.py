"""`dispatcher endpoints list|pause|resume` as an operator runs them: a subprocess
against the test database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.config import Config
from tests.support.engine import EngineHarness
from tests.support.factories import make_endpoint, make_tenant

Run = Callable[..., Any]


def _cli(db_url: str, tmp_path: Path) -> Run:
    def run_sync(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        env.update({"DISPATCHER_DATABASE_URL": db_url,
                    "DISPATCHER_DATA_DIR": str(tmp_path / "data"),
                    "DISPATCHER_LOG__LEVEL": "warning"})
        return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_sync, args)

    return run


async def test_pause_list_and_resume_from_the_command_line(
    db_url: str, config: Config, tmp_path: Path
) -> None:
    cli = _cli(db_url, tmp_path)
    async with EngineHarness(db_url, config) as h:
        tenant = await make_tenant(h.pool, "acme")
        await make_tenant(h.pool, "other")
        endpoint, _ = await make_endpoint(h.pool, h.box, tenant, "https://example.com/hook")
        await h.publish(tenant, ("wallets.transaction.created", {"n": 1}))

        # Bad input: a clear error, exit 2, nothing changed.
        for args in (("pause", "not-a-uuid"), ("pause", str(endpoint), "--tenant", "other"),
                     ("resume", str(endpoint), "--tenant", "nobody")):
            r = await cli("endpoints", *args)
            assert r.returncode == 2 and r.stderr.startswith("error: "), r.stderr
            assert "Traceback" not in r.stderr
        assert await h.pool.fetchval("SELECT state FROM endpoints") == "active"

        r = await cli("endpoints", "pause", str(endpoint), "--tenant", "acme",
                      "--reason", "receiver migration")
        assert r.returncode == 0, r.stderr
        assert "1 deliveries held" in r.stdout
        r = await cli("endpoints", "list", "--state", "paused", "--json")
        (shown,) = json.loads(r.stdout)
        assert shown["id"] == str(endpoint)
        assert shown["state"] == "paused" and shown["state_reason"] == "receiver migration"
        assert shown["held_deliveries"] == 1
        assert (shown["window_threshold"], shown["total_threshold"]) == (100, 500)

        r = await cli("endpoints", "resume", str(endpoint))
        assert r.returncode == 0, r.stderr
        assert "resumed" in r.stdout and "1 held deliveries to re-drive" in r.stdout
        row = await h.pool.fetchrow("SELECT state, redrive_from FROM endpoints")
        assert row["state"] == "active" and row["redrive_from"] is not None
        r = await cli("endpoints", "list", "--tenant", "acme")
        assert r.returncode == 0 and str(endpoint) in r.stdout and "active" in r.stdout
