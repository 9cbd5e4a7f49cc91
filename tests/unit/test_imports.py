"""The package's layers, read from the source: every `import` of a dispatcher
module (top level, inside functions, under TYPE_CHECKING), as a graph of modules.
No module may reach itself through it, only the composition root may join the
engine to anything else, the two front ends (api, console) share only what lies
below them (web/, operations/), and the operations know no front end."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "dispatcher"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}


def _owner(name: str) -> str | None:
    """The module `name` lives in (an imported attribute's module, or a package)."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                owner = _owner(name)
                if owner is not None and owner != module:
                    yield owner


@cache
def graph() -> dict[str, frozenset[str]]:
    return {m: frozenset(_imported(m, p)) for m, p in modules().items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    g, index, low, stack, on_stack, found = graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_the_imports_it_should() -> None:
    # A test that cannot fail is a defect: these edges exist today.
    assert "dispatcher.transport" in graph()["dispatcher.engine.sender"]
    assert "dispatcher.transport.send" in graph()["dispatcher.transport"]
    assert "dispatcher.engine.worker" in graph()["dispatcher.daemon"]
    assert "dispatcher.operations.endpoints" in graph()["dispatcher.console.endpoints"]
    assert "dispatcher.operations.endpoints" in graph()["dispatcher.api.endpoints"]
    assert _reaching("dispatcher.api", ("dispatcher.operations",)) != {}
    assert len(modules()) > 100


def test_no_module_reaches_itself_through_its_imports() -> None:
    assert _cycles() == []


def test_only_the_daemon_imports_the_engine_from_outside() -> None:
    outside = {m: sorted(t for t in targets if _in(t, "dispatcher.engine"))
               for m, targets in graph().items()
               if not _in(m, "dispatcher.engine") and m != "dispatcher.daemon"}
    assert {m: t for m, t in outside.items() if t} == {}


@pytest.mark.parametrize("front_end", ["dispatcher.api", "dispatcher.console"])
def test_the_engine_imports_no_front_end(front_end: str) -> None:
    reaching = sorted(m for m, targets in graph().items() if _in(m, "dispatcher.engine")
                      and any(_in(t, front_end) for t in targets))
    assert reaching == []


def test_the_transport_knows_no_queue_no_store_and_no_front_end() -> None:
    forbidden = ("dispatcher.engine", "dispatcher.store", "dispatcher.api",
                 "dispatcher.console", "dispatcher.sandbox", "dispatcher.daemon",
                 "dispatcher.relay")
    reaching = {m: sorted(t for t in targets if any(_in(t, f) for f in forbidden))
                for m, targets in graph().items() if _in(m, "dispatcher.transport")}
    assert {m: t for m, t in reaching.items() if t} == {}


def _reaching(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The modules of `package` importing any of `forbidden`, with what they import."""
    found = {m: sorted(t for t in targets if any(_in(t, f) for f in forbidden))
             for m, targets in graph().items() if _in(m, package)}
    return {m: t for m, t in found.items() if t}


@pytest.mark.parametrize(("front_end", "neighbour"), [("dispatcher.api", "dispatcher.console"),
                                                      ("dispatcher.console", "dispatcher.api")])
def test_neither_front_end_imports_the_other(front_end: str, neighbour: str) -> None:
    # The daemon mounts both; what they share is below them (web/, operations/).
    assert _reaching(front_end, (neighbour,)) == {}


def test_the_console_reaches_the_database_only_through_operations() -> None:
    assert _reaching("dispatcher.console", ("dispatcher.store",)) == {}


def test_operations_know_no_http_front_end_and_no_engine() -> None:
    forbidden = ("dispatcher.api", "dispatcher.console", "dispatcher.web", "dispatcher.engine",
                 "dispatcher.daemon", "dispatcher.commands", "dispatcher.cli")
    assert _reaching("dispatcher.operations", forbidden) == {}


def test_shared_web_plumbing_imports_no_front_end() -> None:
    forbidden = ("dispatcher.api", "dispatcher.console", "dispatcher.engine",
                 "dispatcher.daemon")
    assert _reaching("dispatcher.web", forbidden) == {}


def test_operations_use_no_aiohttp_server() -> None:
    # Operations take typed input, not requests: nothing of aiohttp.web in them.
    using = sorted(m for m, p in modules().items() if _in(m, "dispatcher.operations")
                   and ("aiohttp.web" in p.read_text() or "from aiohttp import web"
                        in p.read_text()))
    assert using == []
