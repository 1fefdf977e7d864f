"""The event log's NV delivery in two halves: what needs no log is done
while the bootloader's parser child still parses.

`nv_channel.clear_range` (the TPM's limits, pvgrub-py's range cleared) and
`nv_channel.define_store` (the indices a log needs) together do what
`prepare_store` does; the bootloader runs the first half while it waits
for the child's plan (`measure.vtpm.clear_nv_range`), so ~0.7 ms of TPM
commands leave the path from the last byte hashed to the boot.  A failure
of that half is reported where the whole would have failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import disk_images
import pytest
from swtpm_tools import ToolsTpm, needs_tools, tools_tpm

from pvgrub_py.cli.connect import open_transport
from pvgrub_py.eventlog import nv_channel
from pvgrub_py.tpm.client import TpmClient
from pvgrub_py.tpm.uri import parse_vtpm_uri

HEADER = nv_channel.NV_LOG_HEADER
NOBODY = 65534


def _client(tpm: ToolsTpm) -> TpmClient:
    return TpmClient(open_transport(parse_vtpm_uri(tpm.uri)))


def _indices(tpm: ToolsTpm) -> list[int]:
    with _client(tpm) as c:
        return list(c.nv_handles(HEADER, nv_channel.NV_LOG_LAST))


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
def test_the_two_halves_define_what_prepare_store_defines() -> None:
    log = os.urandom(3000)  # more than one swtpm index: header + 2 data indices
    defined = []
    for halves in (False, True):
        with tools_tpm() as tpm:
            with _client(tpm) as c:
                nv_channel.store_event_log(c, os.urandom(5000), lock=False)  # an old log
                if halves:
                    cleared = nv_channel.clear_range(c)
                    assert list(c.nv_handles(HEADER, nv_channel.NV_LOG_LAST)) == []
                    delivery = nv_channel.define_store(c, cleared, len(log))
                else:
                    delivery = nv_channel.prepare_store(c, len(log))
                nv_channel.deliver(delivery, log, lock=False)
                assert nv_channel.load_event_log(c) == log
            defined.append(_indices(tpm))
    assert defined[0] == defined[1] == [HEADER, HEADER + 1, HEADER + 2]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


@pytest.mark.integration
@pytest.mark.swtpm
@needs_tools
@pytest.mark.parametrize("runas", [True, False], ids=["runas", "plain"])
def test_the_bootloader_clears_the_range_before_it_has_the_plan(
    images: disk_images.ImageFactory, tmp_path: Path, runas: bool
) -> None:
    """The plan is logged when it arrives (``config ...``): the range was
    cleared before, while the child parsed (a plain boot forks an
    unconfined parser child when it has a second CPU)."""
    if runas and os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    if not runas and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("a plain boot parses in-process on one CPU")
    image = images.debian_gpt()
    with tools_tpm() as tpm:
        r = subprocess.run(
            [sys.executable, "-m", "pvgrub_py.cli.bootloader", "-q", "--debug", "--tpm2",
             f"--output={tmp_path / 'result'}", "--output-format=simple0",
             f"--output-directory={tmp_path / 'out'}", f"--vtpm={tpm.uri}", "--require-vtpm",
             *([f"--runas={NOBODY}"] if runas else []), str(image.path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    cleared = [i for i, ln in enumerate(lines) if "event log NV range cleared" in ln]
    planned = [i for i, ln in enumerate(lines) if ": debug: config " in ln]
    delivered = [i for i, ln in enumerate(lines) if "delivered in the vTPM's NV memory" in ln]
    assert cleared and planned and delivered, r.stderr
    assert cleared[0] < planned[0] < delivered[0]
