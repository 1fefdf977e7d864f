"""The real pygrub (Xen 4.17) as a differential oracle for our boot-config parsers.

pygrub's parser modules (``grub/GrubConf.py``, ``grub/ExtLinuxConf.py``) are
imported from the installed Xen tools and its command line is run; nothing of
pygrub is copied, it is only executed.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pvgrub_py.bootcfg import BootConfigError, BootMenu, select


def _find(patterns: list[str]) -> Path | None:
    for pattern in patterns:
        for hit in sorted(Path("/").glob(pattern.lstrip("/"))):
            return hit
    return None


PYGRUB_LIB = _find(
    [
        "/usr/lib/xen-*/lib/python/grub/GrubConf.py",
        "/usr/lib/python3/dist-packages/grub/GrubConf.py",
    ]
)
PYGRUB_BIN = _find(["/usr/lib/xen-*/bin/pygrub", "/usr/lib/xen/bin/pygrub"])

needs_pygrub = pytest.mark.skipif(PYGRUB_LIB is None, reason="pygrub (xen-utils) is not installed")
needs_pygrub_bin = pytest.mark.skipif(PYGRUB_BIN is None, reason="pygrub binary not installed")


@dataclass(frozen=True)
class Choice:
    kernel: str | None
    initrd: str | None
    args: str


NOTHING = Choice(None, None, "")


def norm(args: str | None) -> str:
    return " ".join((args or "").split())


@pytest.fixture(scope="module")
def pygrub() -> Iterator[tuple[ModuleType, ModuleType]]:
    """pygrub's GrubConf and ExtLinuxConf modules, imported for the module's tests."""
    assert PYGRUB_LIB is not None
    path = str(PYGRUB_LIB.parent.parent)
    sys.path.insert(0, path)
    logging.disable(logging.CRITICAL)
    try:
        grub_conf = importlib.import_module("grub.GrubConf")
        ext_conf = importlib.import_module("grub.ExtLinuxConf")
        yield grub_conf, ext_conf
    finally:
        logging.disable(logging.NOTSET)
        sys.path.remove(path)
        for name in [m for m in sys.modules if m == "grub" or m.startswith("grub.")]:
            del sys.modules[name]


def pygrub_config(mods: tuple[ModuleType, ModuleType], kind: str, text: str, path: str) -> Any:
    """pygrub's parsed config object (raises what pygrub raises)."""
    grub_conf, ext_conf = mods
    if kind == "grub2":
        cf = grub_conf.Grub2ConfigFile()
    elif kind == "extlinux":
        cf = ext_conf.ExtLinuxConfigFile()
        cf.filename = path
    else:
        cf = grub_conf.GrubConfigFile()
    cf.parse(text)
    return cf


def pygrub_choice(mods: tuple[ModuleType, ModuleType], kind: str, text: str, path: str) -> Any:
    """pygrub's pick: ``images[cf.default]``, ``images[0]`` on IndexError."""
    try:
        cf = pygrub_config(mods, kind, text, path)
    except Exception as exc:  # pygrub's own errors are data here
        return exc
    if not cf.images:
        return NOTHING
    sel = cf.default
    try:
        img = cf.images[sel]
    except IndexError:
        img = cf.images[0]
    kernel = img.kernel[1] if img.kernel else None
    initrd = img.initrd[1] if img.initrd else None
    return Choice(kernel, initrd, norm(img.args))


def our_choice(menu: BootMenu) -> Choice:
    try:
        entry = select(menu)
    except BootConfigError:
        return NOTHING
    assert entry.kernel is not None
    initrd = " ".join(i.path for i in entry.initrds) or None
    return Choice(entry.kernel.path, initrd, norm(entry.args))


def our_choice_of(menu: BootMenu, index: int) -> Choice:
    entry = menu.entries[index]
    if entry.kernel is None:
        return NOTHING
    initrd = " ".join(i.path for i in entry.initrds) or None
    return Choice(entry.kernel.path, initrd, norm(entry.args))


def run_pygrub(config: Path, outdir: Path, *extra: str) -> Choice | None:
    """``pygrub --isconfig -q -n``: the real tool's choice, or None when it fails."""
    assert PYGRUB_BIN is not None
    proc = subprocess.run(
        [
            str(PYGRUB_BIN),
            "--isconfig",
            "-q",
            "-n",
            f"--output-directory={outdir}",
            *extra,
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        return None
    fields = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        fields[key.rstrip(":")] = value
    initrd = fields.get("initrd")
    return Choice(
        fields.get("kernel"),
        None if initrd in (None, "None") else initrd,
        norm(fields.get("args")),
    )
