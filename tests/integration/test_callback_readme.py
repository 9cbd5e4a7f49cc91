"""The README's callback receivers (Python and Node), run exactly as printed (only
the secret and the port filled in): against the daemon they approve and deny by
their rule, and `check-receiver --callback` passes them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from click.testing import CliRunner

from dispatcher.cli import main
from tests.integration import test_api_support as support
from tests.integration.test_api_support import Api, ApiServer, new_api, start_server
from tests.support.daemon import free_port

if TYPE_CHECKING:  # imported by name, pytest would try to collect it here
    from tests.support.pg import TestPostgres

http = support.http
README = Path(__file__).resolve().parents[2] / "README.md"


def code_after(heading: str, language: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, heading
    return match.group(1)


def python_receiver(secret: str, port: int) -> list[str]:
    code = code_after("### A callback receiver in Python", "python")
    code = code.replace('"whsec_..."', repr(secret))
    code = code.replace('("0.0.0.0", 8000)', f'("127.0.0.1", {port})')
    return [sys.executable, "-c", code]


def node_receiver(secret: str, port: int) -> list[str]:
    verify = code_after("### Verifying in Node", "js")
    code = code_after("### A callback receiver in Node", "js")
    code = code.replace("'whsec_...'", json.dumps(secret))
    code = code.replace(".listen(8000)", f".listen({port}, '127.0.0.1')")
    node = shutil.which("node")
    assert node is not None
    return [node, "-e", verify + code]


@pytest.fixture(scope="module")
def readme_server(pg: TestPostgres,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from start_server(pg, tmp_path_factory.mktemp("readme"))


@pytest.fixture
async def api(http: aiohttp.ClientSession, readme_server: ApiServer) -> Api:
    return await new_api(http, readme_server)


@asynccontextmanager
async def running(argv: list[str], port: int) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(*argv, env={**os.environ},
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    if proc.returncode is not None:
                        assert proc.stderr is not None
                        raise AssertionError((await proc.stderr.read()).decode()) from None
                    await asyncio.sleep(0.1)
        yield
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


LANGUAGES: dict[str, Callable[[str, int], list[str]]] = {
    "python": python_receiver, "node": node_receiver}


@pytest.mark.parametrize("language", sorted(LANGUAGES))
async def test_the_readme_receiver_approves_denies_and_passes_the_checks(
    api: Api, language: str
) -> None:
    if language == "node" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    port = free_port()
    url = f"http://127.0.0.1:{port}/callback"
    endpoint = await api.create_endpoint(url, kind="callback", retry_policy="none")
    secret = endpoint["secret"]
    async with running(LANGUAGES[language](secret, port), port):
        decided: dict[str, Any] = {}
        for amount in ("250.00", "5000.00"):
            reply = await api.post("/v1/callbacks", {"type": "withdrawal.approve",
                                                     "data": {"amount": amount}})
            assert reply.status == 202, reply
            done = await api.get(f"/v1/callbacks/{reply.body['id']}?wait=10")
            decided[amount] = (done.body["status"], done.body["decision"])
        checked = await asyncio.to_thread(
            CliRunner().invoke, main,
            ["check-receiver", url, "--callback", "--secret", secret,
             "--data", '{"amount": "1.00"}'],
            env={"DISPATCHER_LOG__LEVEL": "warning"})
    assert decided == {"250.00": ("Approved", "ok"), "5000.00": ("Denied", "deny")}
    assert checked.exit_code == 0, checked.output
