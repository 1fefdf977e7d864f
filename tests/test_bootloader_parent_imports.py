"""The parent of a ``--runas`` boot never loads the guest side.

With ``--runas`` the disk is opened, its config found and parsed in a
sandboxed child; the parent only checks the plan and the extent maps it
receives and copies and hashes the bytes.  So the parent has no use for the
partition, volume, filesystem-search and config-search code, nor for any
Dissect reader: not loading them saves the parent ~8 ms of CPU a boot
(which, on a busy host, is the child's) and keeps it unable to parse the
guest's disk even by mistake.  (Without --runas the parent imports the
guest side before it forks, so the forked child inherits it instead of
importing it while the parent opens the vTPM: measured, that is faster.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import disk_images
import pytest

#: Runs pvgrub-py as libxl would; at the parent's exit, prints its status
#: and the modules it had loaded.
DRIVER = r"""
import json, os, runpy, sys
parent = os.getpid()
real_exit = os._exit
def exit_(status):
    if os.getpid() == parent:
        sys.__stdout__.write("\nMODULES " + json.dumps({"status": status,
                             "modules": sorted(sys.modules)}) + "\n")
        sys.__stdout__.flush()
    real_exit(status)
os._exit = exit_
sys.argv[0] = "pvgrub-py"
runpy.run_module("pvgrub_py.cli.bootloader", run_name="__main__")
"""

#: The guest side: what opens a disk and finds and parses its config.
GUEST_SIDE = (
    "pvgrub_py.bootloader.guest",
    "pvgrub_py.bootloader.choose",
    "pvgrub_py.bootcfg.search",
    "pvgrub_py.disk.locate",
    "pvgrub_py.disk.partitions",
    "pvgrub_py.disk.volumes",
    # The filesystem layer: the parent checks the caps (`disk.limits`) and
    # copies the extents its child mapped, and reads no filesystem itself.
    "pvgrub_py.disk.filesystems",
    "pvgrub_py.disk.extract",
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def run_driver(
    driver: str, marker: str, argv: list[str], cwd: Path, timeout: float = 120
) -> dict[str, Any]:
    """pvgrub-py with *argv*, run under *driver* from *cwd*: the JSON the
    driver printed after its last *marker*, from a run that exited 0."""
    r = subprocess.run([sys.executable, "-c", driver, *argv], capture_output=True, text=True,
                       cwd=cwd, timeout=timeout, check=False)  # fmt: skip
    line = [ln for ln in r.stdout.splitlines() if ln.startswith(f"{marker} ")]
    assert line, r.stderr
    doc: dict[str, Any] = json.loads(line[-1][len(marker) + 1 :])
    assert doc["status"] == 0, r.stderr
    return doc


def _parent_modules(tmp_path: Path, disk: Path, *extra: str) -> list[str]:
    out = tmp_path / "result"
    outdir = tmp_path / "boot"
    argv = ["-q", f"--output={out}", "--output-format=simple0", f"--output-directory={outdir}",
            *extra, str(disk)]  # fmt: skip
    # From a neutral directory, so that sys.path[0] holds no other checkout.
    doc = run_driver(DRIVER, "MODULES", argv, tmp_path)
    first = out.read_bytes().split(b"\0")[0].decode()  # simple0: "kernel PATH"
    assert first.startswith("kernel ")
    kernel = first[len("kernel ") :]
    assert os.path.dirname(kernel) == str(outdir) and os.path.getsize(kernel) > 0
    modules: list[str] = doc["modules"]
    return modules


def _guest_side(modules: list[str]) -> list[str]:
    return [m for m in modules if m in GUEST_SIDE or m == "dissect" or m.startswith("dissect.")]


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
def test_the_parent_of_a_runas_boot_loads_no_guest_side(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    modules = _parent_modules(tmp_path, images.debian_gpt().path, "--runas=65534")
    assert "pvgrub_py.bootloader.depriv" in modules  # it did fork a child
    assert _guest_side(modules) == []


def test_a_boot_imports_no_argparse(images: disk_images.ImageFactory, tmp_path: Path) -> None:
    """pvgrub-py parses its options as pygrub does (getopt); argparse, which
    only pvgrubctl's verbs use (`pvgrub_py.usage`), would cost ~1 ms a boot."""
    modules = _parent_modules(tmp_path, images.debian_gpt().path)
    assert "pvgrub_py.bootloader.run" in modules
    assert "argparse" not in modules


#: Parses the options of a measured boot and prints what that imported.
OPTIONS = r"""
import json, sys
from pvgrub_py.bootloader.options import parse_options
opts = parse_options(["-q", "--tpm2", "--require-vtpm", sys.argv[1], "disk.img"])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("vtpm", ["--vtpm=swtpm:unix:/run/swtpm.sock",
                                  "--vtpm=swtpm:tcp:[::1]:2321", "--vtpm=xen:0/1"])  # fmt: skip
def test_checking_the_vtpm_address_imports_no_transport(vtpm: str) -> None:
    """``--vtpm`` is checked while the options are parsed, before the parser
    child is forked, so its cost is on the critical path of every measured
    boot: it imported the swtpm transport (socket, threading, dataclasses
    and with them inspect and ast: 6.6 ms of a ~100 ms boot)."""
    r = subprocess.run([sys.executable, "-c", OPTIONS, vtpm], capture_output=True, text=True,
                       timeout=60, check=True)  # fmt: skip
    modules = set(json.loads(r.stdout))
    assert "pvgrub_py.tpm.uri" in modules  # the address was parsed
    # Nor getopt, whose gettext cost ~0.6 ms: pvgrub_py.bootloader.gnu_getopt.
    heavy = {"socket", "threading", "dataclasses", "inspect", "pvgrub_py.tpm.swtpm", "getopt",
             "gettext"}  # fmt: skip
    assert sorted(modules & heavy) == []
