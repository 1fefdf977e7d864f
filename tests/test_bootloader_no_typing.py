"""A boot imports no `typing` at run time on its critical path.

``import typing`` costs ~1.7 ms (Debian's python 3.11), and each
``class X(typing.NamedTuple)`` ~0.1 ms, on every ``--runas`` boot: in the
parent before it forks its parser child, in the child before it sends
its plan, and in the parent after the fork (its own side of a measured
boot, imported while the child parses).
No stdlib module on that path imports it; our modules keep their
annotation-only names under ``if TYPE_CHECKING:`` (``TYPE_CHECKING = False``)
and build their records with `pvgrub_py.named_tuple.NamedTuple`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import disk_images
import pytest
from test_bootloader_parent_imports import DRIVER as AT_EXIT_DRIVER  # the modules at its exit
from test_bootloader_parent_imports import run_driver

#: Runs pvgrub-py as libxl would and prints, at the parent's fork, whether
#: it had imported typing, and which of our modules it had.
AT_FORK = r"""
import json, os, runpy, sys
real_fork = os.fork
seen = []
def fork():
    seen.append({"typing": "typing" in sys.modules,
                 "ours": sorted(m for m in sys.modules if m.startswith("pvgrub_py"))})
    return real_fork()
os.fork = fork
parent = os.getpid()
real_exit = os._exit
def exit_(status):
    if os.getpid() == parent:
        sys.__stdout__.write("\nFORKS " + json.dumps({"status": status, "seen": seen}) + "\n")
        sys.__stdout__.flush()
    real_exit(status)
os._exit = exit_
sys.argv[0] = "pvgrub-py"
runpy.run_module("pvgrub_py.cli.bootloader", run_name="__main__")
"""

#: Plans the boot of argv[1] as the parser child does (without the
#: sandbox's preload) and prints whether that imported typing.
AT_PLAN = r"""
import json, sys
from pvgrub_py.bootloader.options import parse_options
from pvgrub_py.bootloader.guest import open_local_session
from pvgrub_py.disk.extents import map_file
opts = parse_options(["-q", sys.argv[1]])
session = open_local_session(opts)
print(json.dumps({"kernel": session.plan.kernel.path, "typing": "typing" in sys.modules,
                  "ours": sorted(m for m in sys.modules if m.startswith("pvgrub_py"))}))
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
def test_the_parent_of_a_runas_boot_forks_without_typing(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    argv = ["-q", f"--output={tmp_path / 'result'}", "--output-format=simple0",
            f"--output-directory={tmp_path / 'boot'}", "--runas=65534",
            str(images.debian_gpt().path)]  # fmt: skip
    doc = run_driver(AT_FORK, "FORKS", argv, tmp_path)
    assert len(doc["seen"]) == 1  # the parser child
    (at_fork,) = doc["seen"]
    assert "pvgrub_py.bootloader.depriv" in at_fork["ours"]
    assert at_fork["typing"] is False


def test_the_guest_side_plans_a_gpt_ext4_boot_without_typing(
    images: disk_images.ImageFactory,
) -> None:
    r = subprocess.run([sys.executable, "-c", AT_PLAN, str(images.debian_gpt().path)],
                       capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    doc = json.loads(r.stdout.splitlines()[-1])
    assert doc["kernel"]
    for module in ("bootcfg.grub2_interp", "disk.partitions", "disk.readers.ext4",
                   "disk.extract", "bootloader.plan", "record"):  # fmt: skip
        assert f"pvgrub_py.{module}" in doc["ours"]
    assert doc["typing"] is False


#: What the parser child runs before its sandbox (`preload.prepare`, with
#: its own modules and the sandbox's), without site (-S), as in
#: test_bootloader_preload.py.
AT_PREPARE = r"""
import json, sys
sys.path[:0] = sys.argv[1:]
from pvgrub_py.bootloader import preload, sandbox
finder = preload.prepare(bundle=False)
print(json.dumps({"typing": "typing" in sys.modules, "read": "typing" in finder.entries}))
"""


def test_the_child_prepares_its_sandbox_without_typing() -> None:
    """...and reads it for the readers that import it (Dissect's among them)."""
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    r = subprocess.run([sys.executable, "-S", "-c", AT_PREPARE, *paths], capture_output=True,
                       text=True, timeout=120, check=True)  # fmt: skip
    assert json.loads(r.stdout.splitlines()[-1]) == {"typing": False, "read": True}




@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
def test_the_parent_of_a_measured_runas_boot_imports_no_typing(
    images: disk_images.ImageFactory, tmp_path: Path
) -> None:
    """After the fork the parent opens the vTPM and imports the extraction,
    hashing and event-log code while the child parses: that chain was the
    critical one, ~2 ms longer than the child's, until none of it imported
    typing (~1.5 ms).  As the bench runs it: TPM 2.0, --require-vtpm, an
    event log file and the guest's copy in NV."""
    from pvgrub_py.tpm.launcher import SwtpmProcess

    log = tmp_path / "boot.log"
    with SwtpmProcess(tpm2=True) as tpm:
        argv = ["-q", f"--output={tmp_path / 'result'}", "--output-format=simple0",
                f"--output-directory={tmp_path / 'boot'}", "--runas=65534", "--tpm2",
                f"--vtpm={tpm.uri}", "--require-vtpm", f"--event-log={log}",
                str(images.debian_gpt().path)]  # fmt: skip
        doc = run_driver(AT_EXIT_DRIVER, "MODULES", argv, tmp_path, timeout=180)
    assert log.stat().st_size > 0  # measured
    modules = set(doc["modules"])
    # The parent's own side of the boot (run._import_host_side) was imported...
    for module in ("measure.vtpm", "bootloader.extract", "measure.boot_files",
                   "eventlog.builder", "eventlog.nv_channel", "tpm.client"):  # fmt: skip
        assert f"pvgrub_py.{module}" in modules
    # ...without these.
    assert "typing" not in modules
