"""The package's layers (docs: cli -> builder/bootloader -> measure/vtpm ->
tpm/sim -> xen -> errors): the arrows issue 17 removed stay removed.

Every import counts, wherever it stands (top level, inside a function, under
``TYPE_CHECKING``): a function-level import still ties the layers together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pvgrub_py

ROOT = Path(pvgrub_py.__file__).parent


def imports_of(path: Path) -> set[str]:
    """Every ``pvgrub_py`` module *path* imports, as ``pvgrub_py.a.b``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pvgrub_py":
                found.update(f"pvgrub_py.{a.name}" for a in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n.startswith("pvgrub_py.")}


def arrows(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import in *package* (a folder of pvgrub_py)."""
    return [
        (str(path.relative_to(ROOT)), name)
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imports_of(path))
    ]


def into(name: str, *packages: str) -> bool:
    return any(name == f"pvgrub_py.{p}" or name.startswith(f"pvgrub_py.{p}.") for p in packages)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("tpm", ("vtpm", "sim", "bootloader", "builder", "cli")),
        ("xen", ("sim", "vtpm", "tpm", "bootloader", "builder", "cli")),
        ("measure", ("bootloader", "builder", "cli")),
        ("sim", ("cli", "bootloader", "builder")),
        ("vtpm", ("cli", "bootloader", "builder")),
        ("bootloader", ("cli", "builder")),
    ],
)
def test_a_lower_layer_imports_nothing_above_it(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = [(f, n) for f, n in arrows(package) if into(n, *forbidden)]
    assert wrong == []


def test_the_builder_takes_only_the_disk_step_from_the_bootloader() -> None:
    wrong = [
        (f, n) for f, n in arrows("builder")
        if into(n, "bootloader", "cli") and n != "pvgrub_py.bootloader.from_disk"
    ]  # fmt: skip
    assert wrong == []


def test_nothing_below_cli_imports_cli() -> None:
    wrong = [
        (str(path.relative_to(ROOT)), name)
        for path in sorted(ROOT.rglob("*.py"))
        if path.relative_to(ROOT).parts[0] != "cli"
        for name in sorted(imports_of(path))
        if into(name, "cli")
    ]
    assert wrong == []
