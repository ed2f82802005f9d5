"""The package's layers, read from the modules' own imports (every import statement, at the
top or inside a function).

- No import circle between pricelab's modules.
- The core (the statistics and the designs) reaches neither the readers and writers
  (``io``, ``storage``), nor the command line (``cli``), nor the console: a notebook user can
  call it on frames without any of them.
- Only the engines name the cluster library: a word ``ray`` (or ``Ray``) appears in
  ``engine/`` and in the command line's ``--engine`` option, and nowhere else; ``.remote``
  only in ``engine/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pricelab_cli"
CORE = (
    "pricelab_cli.design",
    "pricelab_cli.assign",
    "pricelab_cli.tables",
    "pricelab_cli.hpte",
    "pricelab_cli.spillover",
    "pricelab_cli.simulate",
    "pricelab_cli.power",
    "pricelab_cli.diagnostics",
    "pricelab_cli.report",
    "pricelab_cli.plots",
)
OUTSIDE_THE_CORE = ("pricelab_cli.io", "pricelab_cli.storage", "pricelab_cli.cli", "pricelab_cli.console")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> set[str]:
    """pricelab modules ``path`` imports, as module names (a package's own submodules too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(_owner(a.name) for a in node.names if a.name.startswith("pricelab_cli"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pricelab_cli"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in MODULES else _owner(node.module))
    return out - {"pricelab_cli"}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_module_graph_is_read_and_has_no_circle():
    assert len(MODULES) > 30 and GRAPH["pricelab_cli.cli.app"], "the graph reader found no imports"
    circles = sorted(name for name in GRAPH if name in _reach(name))
    assert not circles, f"modules that import themselves through others: {circles}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, CORE)))
def test_the_core_reaches_no_reader_writer_console_or_command_line(module):
    reached = sorted(m for m in _reach(module) if _in(m, OUTSIDE_THE_CORE))
    assert not reached, f"{module} imports (directly or through others) {reached}"


def test_only_the_engines_name_the_cluster_library():
    word, remote = re.compile(r"\b[Rr]ay\b"), re.compile(r"\.remote\b")
    strays = []
    for name, path in MODULES.items():
        text = path.read_text()
        if not _in(name, ("pricelab_cli.engine",)):
            if remote.search(text):
                strays.append(f"{name}: .remote")
            if word.search(text) and name != "pricelab_cli.cli.options":
                strays.append(f"{name}: ray")
    assert not strays, strays
