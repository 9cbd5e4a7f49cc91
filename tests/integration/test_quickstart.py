"""The README's quickstart round trip, run exactly as written (its commands are read
out of the README): `make dev`, then a key, an endpoint, a verifying capture
receiver, `dispatcher trigger` and the event's status. Only the ports differ: the
daemon's is given by environment (DISPATCHER_SERVER__PORT, DISPATCHER_URL), the
receiver's 8081 is replaced by a free one, so the test never takes a fixed port."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from dispatcher.devmode import BANNER
from tests.conftest import TEST_ENV
from tests.support.daemon import DaemonProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


def readme_block(name: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- quickstart:{name} -->\n(.*?)<!-- /quickstart:{name} -->",
                      text, re.S)
    assert found, f"README has no quickstart:{name} block"
    return [line.strip() for line in found.group(1).splitlines() if line.strip()]


def test_the_readme_blocks_are_what_the_quickstart_promises() -> None:
    assert readme_block("daemon") == ["make dev"]
    commands = readme_block("round-trip")
    assert any(c.startswith("dispatcher trigger ") for c in commands)
    assert any("sandbox capture" in c and "--secret" in c for c in commands)


@pytest.mark.skipif(not (ROOT / ".venv" / ".installed").exists(),
                    reason="make dev needs the .venv that `make test` creates")
async def test_readme_quickstart_round_trip(db_url: str, tmp_path: Path) -> None:
    port, receiver_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DISPATCHER_") and k != "PYTHONPATH"}
    env.update({"DISPATCHER_DATABASE_URL": db_url, "DISPATCHER_DATA_DIR": str(tmp_path),
                "DISPATCHER_SERVER__PORT": str(port), "DISPATCHER_SERVER__WORKERS": "2",
                "DISPATCHER_LOG__LEVEL": "warning",
                "DISPATCHER_URL": f"http://127.0.0.1:{port}",
                "DISPATCHER_DELIVERY__POLL_INTERVAL_SECONDS":
                    TEST_ENV["DISPATCHER_DELIVERY__POLL_INTERVAL_SECONDS"]})
    (daemon_command,) = readme_block("daemon")
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(  # noqa: ASYNC220 - started once, stopped below
            daemon_command, shell=True, cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        waiter = DaemonProcess(env, log)
        waiter.port, waiter.proc = port, daemon
        await waiter.wait_ready(60)
        assert BANNER.splitlines()[1] in log.read_text()  # the loud banner
        script = "\n".join(readme_block("round-trip")).replace("8081", str(receiver_port))
        # Not a README command: when a step fails, stop the background receiver too.
        script = "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script
        result = await asyncio.to_thread(
            subprocess.run, ["bash", "-e", "-c", script], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        await asyncio.to_thread(daemon.wait, 30)
    out = result.stdout
    assert result.returncode == 0, (out, result.stderr, log.read_text()[-2000:])
    assert "signature: verified" in out  # the capture receiver checked the signature
    published = re.search(r"^published wallets\.transaction\.created (\S+)$", out, re.M)
    assert published, out
    assert re.search(r"^\S{36}  200 \(\d+ ms\)  http://127\.0\.0\.1:\d+/hook$", out, re.M), out
    assert re.search(rf"^{published.group(1)}\s+wallets\.transaction\.created\s.*Success",
                     out, re.M), out
