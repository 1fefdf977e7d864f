"""The preload bundle's cheap stand-in for resolving its module names again.

Resolving the ~57 `LAZY` names costs a ``--runas`` boot ~0.9 ms, on its
critical path.  When only the interpreter's own finders are installed and
sys.path (after the script's own entry) is the one the bundle was made
with, `preload` checks instead the mtime of every directory those lookups
list, as importlib's FileFinder does before trusting its cached listing.
These tests check that the stand-in is taken only when it may be, and that
every change a fresh lookup would see still makes the bundle stale.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: argv[1]: JSON {path (sys.path to use), bundle, build}.  Loads the bundle
#: for LAZY (building it first if asked) and prints whether it was used and
#: how many names were resolved again.
DRIVER = r"""
import json, sys
cfg = json.loads(sys.argv[1])
sys.path[:] = cfg["path"]
from pvgrub_py.bootloader import preload
lazy = ("bpkg", "lone", "bpkg.sub")
if cfg["build"]:
    preload.build_bundle(cfg["bundle"], lazy=lazy)
calls = []
real = preload._resolve
def counted(name):
    calls.append(name)
    return real(name)
preload._resolve = counted
finder = preload._load_bundle(cfg["bundle"], lazy)
print(json.dumps({"used": finder is not None, "resolved": len(calls)}))
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    (lib / "bpkg" / "sub").mkdir(parents=True)
    (lib / "bpkg" / "__init__.py").write_text("")
    (lib / "bpkg" / "sub" / "__init__.py").write_text("VALUE = 'sub'\n")
    (lib / "lone.py").write_text("VALUE = 'lone'\n")
    for name in ("script", "other-script", "mid"):
        (tmp_path / name).mkdir()
    return tmp_path


def _load(tree: Path, first: str, *, build: bool = False) -> dict[str, object]:
    # The interpreter's own sys.path (no site: -S), after the entry of the
    # "script" and the test's directories.
    path = [str(tree / first), str(tree / "mid"), str(tree / "lib"),
            *(p for p in sys.path if p and os.path.isdir(p) and "site-packages" not in p)]
    repo = str(Path(__file__).resolve().parents[1])
    path.insert(3, repo)  # pvgrub_py itself, after the test's directories
    cfg = {"path": path, "bundle": str(tree / "b.bundle"), "build": build}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tree / "pycache")
    r = subprocess.run([sys.executable, "-S", "-c", DRIVER, json.dumps(cfg)], capture_output=True,
                       text=True, timeout=60, env=env, check=True)  # fmt: skip
    doc: dict[str, object] = json.loads(r.stdout.splitlines()[-1])
    return doc


def test_an_unchanged_search_resolves_nothing_again(tree: Path) -> None:
    assert _load(tree, "script", build=True) == {"used": True, "resolved": 0}
    # Another script's directory holding none of the names: the same lookups.
    assert _load(tree, "other-script") == {"used": True, "resolved": 0}


def test_a_module_added_earlier_on_the_path_is_seen(tree: Path) -> None:
    assert _load(tree, "script", build=True)["used"]
    (tree / "mid" / "lone.py").write_text("VALUE = 'shadow'\n")
    doc = _load(tree, "script")
    assert doc["used"] is False
    assert doc["resolved"] != 0  # resolved again, and found elsewhere


def test_a_namespace_portion_added_earlier_on_the_path_is_seen(tree: Path) -> None:
    assert _load(tree, "script", build=True)["used"]
    (tree / "mid" / "bpkg").mkdir()  # bpkg is still lib's regular package ...
    doc = _load(tree, "script")
    assert doc["resolved"] != 0  # ... but only a lookup can tell: it is made
    assert doc["used"] is True


def test_a_subpackage_replaced_by_a_module_is_seen(tree: Path) -> None:
    assert _load(tree, "script", build=True)["used"]
    (tree / "lib" / "bpkg" / "sub.py").write_text("VALUE = 'module'\n")
    assert _load(tree, "script")["used"] is False  # bpkg's listing changed


def test_the_scripts_directory_holding_a_name_is_seen(tree: Path) -> None:
    assert _load(tree, "script", build=True)["used"]
    (tree / "other-script" / "lone.py").write_text("VALUE = 'shadow'\n")
    doc = _load(tree, "other-script")
    assert doc["used"] is False
    assert doc["resolved"] != 0


def test_a_build_whose_script_directory_holds_a_name_never_skips(tree: Path) -> None:
    (tree / "script" / "lone.py").write_text("VALUE = 'script'\n")
    assert _load(tree, "script", build=True)["used"]
    assert _load(tree, "script")["resolved"] != 0
