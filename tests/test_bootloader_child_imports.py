"""What the guest side imports for a disk: only what that disk's config needs.

Each module the parser child imports before it can send its plan lies on
the critical path of every ``--runas`` boot (bench/bench_bootloader.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import disk_images
import pytest

#: Plans the boot of the disk argv[1] as the child does and prints the
#: modules it imported meanwhile.
PLAN = r"""
import json, sys
from pvgrub_py.bootloader.options import parse_options
from pvgrub_py.bootloader.guest import open_local_session
opts = parse_options(["-q", sys.argv[1]])
before = set(sys.modules)
session = open_local_session(opts)
print(json.dumps({"kernel": session.plan.kernel.path,
                  "modules": sorted(set(sys.modules) - before)}))
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def _planned(image: disk_images.Image) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-c", PLAN, str(image.path)], capture_output=True,
                       text=True, timeout=120, check=True)  # fmt: skip
    doc: dict[str, object] = json.loads(r.stdout.splitlines()[-1])
    return doc


def test_a_grub_cfg_without_blscfg_does_not_import_the_bls_reader(
    images: disk_images.ImageFactory,
) -> None:
    """The GRUB 2 interpreter imported `bls` for its ``blscfg`` command on
    every boot (~1.5 ms); now only a config that runs ``blscfg`` does."""
    doc = _planned(images.debian_gpt())
    assert doc["kernel"]
    modules = doc["modules"]
    assert isinstance(modules, list)
    assert "pvgrub_py.bootcfg.grub2_commands" in modules
    assert "pvgrub_py.bootcfg.bls" not in modules


def test_a_blscfg_config_still_reads_its_entries(images: disk_images.ImageFactory) -> None:
    doc = _planned(images.fedora_mbr())  # grub.cfg: load_env, blscfg
    assert doc["kernel"]
    assert "pvgrub_py.bootcfg.bls" in doc["modules"]  # type: ignore[operator]


#: Runs a plain (forking, unsandboxed) boot of argv[1] and prints whether
#: the parent had imported the guest side when it forked its parser child.
FORK_POINT = r"""
import json, os, sys
seen = []
real_fork = os.fork
def fork():
    seen.append(sorted(m for m in ("pvgrub_py.bootloader.guest", "pvgrub_py.bootloader.choose",
                                   "pvgrub_py.disk.volumes") if m in sys.modules))
    return real_fork()
os.fork = fork
from pvgrub_py.cli.bootloader import main
status = main(["-q", "-n", "--output-format=simple", sys.argv[1]])
print(json.dumps({"status": status, "seen": seen}))
"""


def test_a_plain_boot_forks_before_importing_the_guest_side(
    images: disk_images.ImageFactory,
) -> None:
    """The child imports the guest side while the parent gets its vTPM
    ready; imported in the parent first, it delayed the fork ~5 ms."""
    r = subprocess.run([sys.executable, "-c", FORK_POINT, str(images.debian_gpt().path)],
                       capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    doc = json.loads(r.stdout.splitlines()[-1])
    assert doc["status"] == 0
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the bootloader parses in-process, without a fork")
    assert doc["seen"] == [[]]
