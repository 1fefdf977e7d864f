"""The boot-config package's module graph: no two modules import each other.

Every import of a ``pvgrub_py.bootcfg`` submodule counts, wherever it stands
in the file (top level, inside a function, under ``TYPE_CHECKING``): a cycle
closed by a function-level import is still a cycle.  The package's
``__init__`` is left out, as Python runs it before any submodule anyway.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pvgrub_py.bootcfg
from pvgrub_py.bootcfg import grub2_commands

PACKAGE = Path(pvgrub_py.bootcfg.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The bootcfg submodules *path* imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "pvgrub_py.bootcfg":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    prefix = "pvgrub_py.bootcfg."
    names = {n.removeprefix(prefix).split(".")[0] for n in found if n.startswith(prefix)}
    names |= {n for n in found if (PACKAGE / f"{n}.py").exists()}
    return names - {path.stem, "__init__"}


def module_graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in *graph* as the modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_bootcfg() -> None:
    graph = module_graph()
    assert {"grub2_interp", "grub2_commands", "search"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_command_table_is_read_only() -> None:
    """One table for every interpreter: a command added at run time would leak."""
    with pytest.raises(TypeError):
        grub2_commands.COMMANDS["linux"] = grub2_commands.COMMANDS["set"]  # type: ignore[index]
