"""The preload bundle: `preload.prepare` reads one file, not ~280, when it
is trusted and matches the installed sources; otherwise it reads them one
by one as before, and never runs code that differs from them.

Each run is a fresh interpreter (``prepare`` takes the path-based importer
away), as the sandboxed child is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pvgrub_py.bootloader import preload

#: argv[1]: JSON {paths, bundle, lazy (None: LAZY), eager (None: EAGER),
#: warm (import *imports* first), build_first, imports, closure}.
#: Prints what prepare opened and found.
DRIVER = r"""
import importlib, json, os, sys
cfg = json.loads(sys.argv[1])
sys.path[:0] = cfg["paths"]
from pvgrub_py.bootloader import preload
kw = {}
if cfg["lazy"] is not None:
    kw["lazy"] = tuple(cfg["lazy"])
if cfg["eager"] is not None:
    kw["eager"] = tuple(cfg["eager"])
if cfg["warm"]:
    for name in cfg["imports"]:  # byte-compile them, as an ordinary import does
        importlib.import_module(name)
    for name in [m for m in sys.modules if m.split(".")[0] in ("bpkg", "lone")]:
        del sys.modules[name]
if cfg["build_first"]:
    preload.build_bundle(cfg["bundle"], **({"lazy": kw["lazy"]} if "lazy" in kw else {}))
opened = []
real_open = os.open
def spy(path, *args, **kwargs):
    opened.append(os.fspath(path))
    return real_open(path, *args, **kwargs)
fds = set(os.listdir("/proc/self/fd"))
os.open = spy
finder = preload.prepare(bundle=cfg["bundle"], **kw)
os.open = real_open
fds_added = sorted(set(os.listdir("/proc/self/fd")) - fds)
values = {}
for name in cfg["imports"]:
    try:
        values[name] = importlib.import_module(name).VALUE
    except ImportError as e:
        values[name] = f"ImportError: {e}"
kinds = {name: (e.is_pyc if e.blob is not None else e.pyc is not None)
         for name, e in finder.entries.items() if name in cfg["imports"]}
failed = preload.check_closure() if cfg["closure"] else []
ext = sys.modules.get("dissect.xfs")
print(json.dumps({"bundle": finder.bundle, "opened": opened, "values": values, "kinds": kinds,
                  "fds_added": fds_added, "default": preload.bundle_path(),
                  "failed": failed, "entries": len(finder.entries),
                  "loader": type(ext.__spec__.loader).__name__ if ext else None}))
"""


def _env(tmp_path: Path, *, write: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(
    tmp_path: Path,
    bundle: Path | bool,
    *,
    lazy: list[str] | None,
    eager: list[str] | None,
    imports: Sequence[str] = (),
    first: Sequence[str] = (),
    build_first: bool = False,
    warm: bool = False,
    closure: bool = False,
    write: bool = True,
    env: dict[str, str] | None = None,
) -> dict[str, object]:
    paths = [*first, str(tmp_path / "lib"), *(p for p in sys.path if p and os.path.isdir(p))]
    where = bundle if isinstance(bundle, bool) else str(bundle)
    cfg = {"paths": paths, "bundle": where, "lazy": lazy, "eager": eager,
           "imports": list(imports), "build_first": build_first, "warm": warm,
           "closure": closure}  # fmt: skip
    out = subprocess.run([sys.executable, "-S", "-c", DRIVER, json.dumps(cfg)],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=env if env is not None else _env(tmp_path, write=write))  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return doc


LAZY = ["bpkg", "lone"]
IMPORTS = ["bpkg.mod", "lone"]


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    """A package and a module, outside any installed tree."""
    pkg = tmp_path / "lib" / "bpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("VALUE = 1\n")
    (tmp_path / "lib" / "lone.py").write_text("VALUE = 'lone'\n")
    return tmp_path / "lib"


def _small(tmp_path: Path, bundle: Path | bool, **kw: object) -> dict[str, object]:
    return _run(tmp_path, bundle, lazy=LAZY, eager=[], imports=IMPORTS, **kw)  # type: ignore[arg-type]


def test_the_readers_come_from_the_bundle_alone_and_still_close(tmp_path: Path) -> None:
    """With a bundle of the real LAZY list, prepare opens that one file
    (not ~280), and every reader imports from it."""
    bundle = tmp_path / "preload.bundle"
    doc = _run(tmp_path, bundle, lazy=None, eager=None, build_first=True, closure=True,
               env=dict(os.environ))  # fmt: skip
    assert bundle.stat().st_mode & 0o777 == 0o644
    assert doc["bundle"] == str(bundle)
    assert doc["opened"] == [str(bundle)]
    # Mapped, and no descriptor left open (the sandboxed child's are counted).
    assert doc["fds_added"] == []
    assert isinstance(doc["entries"], int) and doc["entries"] > 200
    assert doc["failed"] == []
    assert doc["loader"] == "_MemoryLoader"


def test_without_a_bundle_the_files_are_read_and_a_bundle_written(
    tmp_path: Path, lib: Path
) -> None:
    bundle = tmp_path / "b.bundle"
    first = _small(tmp_path, bundle, write=False)  # -B: nothing is written
    assert first["bundle"] is None
    assert first["values"] == {"bpkg.mod": 1, "lone": "lone"}
    assert isinstance(first["opened"], list)
    assert str(lib / "bpkg" / "mod.py") in first["opened"]
    assert not bundle.exists()
    # Nor while a module has no byte code (the bundle would keep its source).
    assert _small(tmp_path, bundle)["kinds"] == {"bpkg.mod": False, "lone": False}
    assert not bundle.exists()
    second = _small(tmp_path, bundle, warm=True)  # written, as a .pyc would be
    assert second["bundle"] is None
    assert bundle.stat().st_mode & 0o777 == 0o644
    third = _small(tmp_path, bundle)
    assert third["bundle"] == str(bundle)
    assert third["opened"] == [str(bundle)]
    assert third["values"] == {"bpkg.mod": 1, "lone": "lone"}


def test_the_build_compiles_what_has_no_byte_code(tmp_path: Path, lib: Path) -> None:
    bundle = tmp_path / "b.bundle"
    assert _small(tmp_path, bundle, write=False)["kinds"] == {"bpkg.mod": False, "lone": False}
    doc = _small(tmp_path, bundle, write=False, build_first=True)
    assert doc["bundle"] == str(bundle)
    assert doc["kinds"] == {"bpkg.mod": True, "lone": True}
    assert doc["values"] == {"bpkg.mod": 1, "lone": "lone"}


def test_a_changed_source_is_run_not_the_bundled_byte_code(tmp_path: Path, lib: Path) -> None:
    bundle = tmp_path / "b.bundle"
    built = _small(tmp_path, bundle, build_first=True)
    assert built["bundle"] == str(bundle)  # byte code in it (build_first compiled it)
    mod = lib / "bpkg" / "mod.py"
    st = mod.stat()
    mod.write_text("VALUE = 2\n")  # the same size
    os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    doc = _small(tmp_path, bundle, write=False)
    assert doc["bundle"] is None
    assert doc["values"] == {"bpkg.mod": 2, "lone": "lone"}


def test_a_touched_source_or_a_new_module_makes_the_bundle_stale(tmp_path: Path, lib: Path) -> None:
    bundle = tmp_path / "b.bundle"
    assert _small(tmp_path, bundle, build_first=True)["bundle"] == str(bundle)
    lone = lib / "lone.py"
    st = lone.stat()
    os.utime(lone, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # contents unchanged
    assert _small(tmp_path, bundle, write=False)["bundle"] is None
    assert _small(tmp_path, bundle, build_first=True)["bundle"] == str(bundle)
    (lib / "bpkg" / "extra.py").write_text("VALUE = 3\n")  # the walk would find it
    assert _small(tmp_path, bundle, write=False)["bundle"] is None


def test_a_module_found_elsewhere_now_makes_the_bundle_stale(tmp_path: Path, lib: Path) -> None:
    """A module earlier on sys.path shadows the bundled one: it is what an
    import would run, so the bundle is not used."""
    bundle = tmp_path / "b.bundle"
    assert _small(tmp_path, bundle, build_first=True)["bundle"] == str(bundle)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "lone.py").write_text("VALUE = 'shadow'\n")
    doc = _small(tmp_path, bundle, write=False, first=[str(earlier)])
    assert doc["bundle"] is None
    assert doc["values"] == {"bpkg.mod": 1, "lone": "shadow"}


@pytest.mark.parametrize("damage", ["truncated", "short", "header", "garbage", "empty"])
def test_a_damaged_bundle_is_ignored(tmp_path: Path, lib: Path, damage: str) -> None:
    bundle = tmp_path / "b.bundle"
    assert _small(tmp_path, bundle, build_first=True)["bundle"] == str(bundle)
    data = bundle.read_bytes()
    if damage == "truncated":
        data = data[: len(data) - 1]
    elif damage == "short":
        data = data[:12]
    elif damage == "header":  # inside the marshalled header
        data = data[:16] + bytes(b ^ 0x5A for b in data[16:64]) + data[64:]
    elif damage == "garbage":
        data = data[:16] + os.urandom(len(data) - 16)
    else:
        data = b""
    bundle.write_bytes(data)
    doc = _small(tmp_path, bundle, write=False)
    assert doc["bundle"] is None
    assert doc["values"] == {"bpkg.mod": 1, "lone": "lone"}


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "foreign", "symlink"])
def test_an_untrusted_bundle_is_ignored(tmp_path: Path, lib: Path, how: str) -> None:
    bundle = tmp_path / "b.bundle"
    assert _small(tmp_path, bundle, build_first=True)["bundle"] == str(bundle)
    if how == "world-writable":
        bundle.chmod(0o646)
    elif how == "group-writable":
        bundle.chmod(0o664)
    elif how == "foreign":
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(bundle, 54321, 54321)
    else:
        real = tmp_path / "real.bundle"
        bundle.rename(real)
        bundle.symlink_to(real)
    doc = _small(tmp_path, bundle, write=False)
    assert doc["bundle"] is None
    assert doc["values"] == {"bpkg.mod": 1, "lone": "lone"}


def test_a_bundle_for_another_module_list_is_ignored(tmp_path: Path, lib: Path) -> None:
    bundle = tmp_path / "b.bundle"
    assert _small(tmp_path, bundle, build_first=True)["bundle"] == str(bundle)
    doc = _run(tmp_path, bundle, lazy=["bpkg"], eager=[], imports=["bpkg.mod"], write=False)
    assert doc["bundle"] is None
    assert doc["values"] == {"bpkg.mod": 1}


def test_the_build_command(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.bootloader.preload"],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 2
    assert "--build" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.bootloader.preload", "--build",
                        str(tmp_path / "missing" / "dir" / "b.bundle")],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    made = tmp_path / "missing" / "dir" / "b.bundle"
    assert r.returncode == 0, r.stderr  # the directory is made, as __pycache__ is
    assert r.stdout.strip() == str(made)
    assert made.stat().st_mode & 0o777 == 0o644
    assert made.read_bytes().startswith(preload.BUNDLE_MAGIC)
    (tmp_path / "a-file").write_text("")
    r = subprocess.run([sys.executable, "-m", "pvgrub_py.bootloader.preload", "--build",
                        str(tmp_path / "a-file" / "b.bundle")],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "cannot write" in r.stderr


def test_a_changed_preload_module_makes_the_bundle_stale(tmp_path: Path, lib: Path) -> None:
    """How the modules are found and bundled is this module's code: a
    bundle written by another version of it is not used."""
    copy = tmp_path / "copy"
    shutil.copytree(Path(preload.__file__).parents[2] / "pvgrub_py", copy / "pvgrub_py",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    bundle = tmp_path / "b.bundle"
    first = [str(copy)]
    assert _small(tmp_path, bundle, build_first=True, first=first)["bundle"] == str(bundle)
    assert _small(tmp_path, bundle, write=False, first=first)["bundle"] == str(bundle)
    module = copy / "pvgrub_py" / "bootloader" / "preload.py"
    module.write_text(module.read_text() + "\n# another version\n")
    assert _small(tmp_path, bundle, write=False, first=first)["bundle"] is None


def test_another_module_list_leaves_the_default_bundle_be(tmp_path: Path, lib: Path) -> None:
    """Only LAZY's bundle lives at `bundle_path` (here under the test's
    PYTHONPYCACHEPREFIX): a run for another list neither uses nor writes it."""
    doc = _small(tmp_path, True, warm=True)
    assert doc["bundle"] is None
    assert doc["values"] == {"bpkg.mod": 1, "lone": "lone"}
    default = doc["default"]
    assert isinstance(default, str) and default.startswith(str(tmp_path / "pycache"))
    assert not os.path.exists(default)
