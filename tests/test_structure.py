"""The package is a stack: every import (module level or inside a function) points down or sideways, never up.

The stack is written once, in the package docstring (``brainfm_cli/__init__.py``); this test reads it from there.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "brainfm_cli"


def declared_stack() -> list[list[str]]:
    """Levels from the docstring's ``Stack:`` line, bottom first (``a, b → c → d``)."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    line = next(ln for ln in doc.splitlines() if ln.strip().startswith("Stack:"))
    return [[name.strip() for name in level.split(",")] for level in line.split(":", 1)[1].split("→")]


def unit_of(module: str) -> str:
    """The top-level subpackage or module of ``brainfm_cli.x.y`` (``x``); the package itself is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, package: str) -> list[tuple[str, int]]:
    """Every brainfm_cli module imported anywhere in ``source`` (function bodies included), with its line;
    ``package`` resolves relative imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
    return [(t, ln) for t, ln in found if t == "brainfm_cli" or t.startswith("brainfm_cli.")]


def imports_of(path: Path) -> list[tuple[str, int]]:
    module = module_name(path)
    return imports_in(path.read_text(), module if path.name == "__init__.py" else module.rpartition(".")[0])


def edges() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = module_name(path)
        for target, line in imports_of(path):
            if unit_of(src) != unit_of(target):
                out.append((unit_of(src), unit_of(target), f"{path.relative_to(PACKAGE.parent)}:{line} → {target}"))
    return out


def test_every_subpackage_has_a_place_in_the_stack():
    placed = {name for level in declared_stack() for name in level}
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    units -= {"__init__"}
    assert units - placed == set(), "subpackages missing from the stack in brainfm_cli/__init__.py"
    assert placed - units == set(), "the stack names subpackages that do not exist"


def test_no_import_points_up_the_stack():
    level = {name: i for i, names in enumerate(declared_stack()) for name in names}
    level["__init__"] = -1  # the package root holds only the version
    upward = [where for src, dst, where in edges() if level[dst] > level[src]]
    assert upward == []


def test_no_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for src, dst, _ in edges():
        graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("cycle between subpackages: " + " → ".join(trail + [node, nxt]))
            if not state.get(nxt):
                visit(nxt, trail + [node])
        state[node] = 2

    for node in list(graph):
        if not state.get(node):
            visit(node, [])


def test_the_structure_check_sees_imports_inside_functions_and_relative_ones():
    source = "import os\nfrom brainfm_cli.io import files\ndef f():\n    from brainfm_cli.cli import app\n" \
             "    from ..engine import train\n    import brainfm_cli.tasks.embed\n"
    assert imports_in(source, "brainfm_cli.models") == [
        ("brainfm_cli.io", 2), ("brainfm_cli.cli", 4), ("brainfm_cli.engine", 5), ("brainfm_cli.tasks.embed", 6)]
    assert [unit_of(t) for t, _ in imports_in(source, "brainfm_cli.models")] == ["io", "cli", "engine", "tasks"]


def test_the_cli_loads_without_torch_numpy_or_pandas():
    code = ("import sys, brainfm_cli.cli.app; "
            "print(' '.join(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
