"""What the sandboxed child does with the guest's disk (`depriv._serve`).

* It arms the disk budget's alarm once for its whole parse.  Every reader
  call on the guest side runs under `budget.cpu_deadline`, and an arming
  costs two ``signal.signal`` and two ``setitimer`` calls (~6 us): ~80 a
  boot, on the child's critical path.  The child wraps its parse and its
  maps in one outer arming, in which the readers' own guards nest, and
  writes its frames only after it, so an expiry never cuts a frame in half.

Runs `_serve` in-process (the main thread, where the alarm works) into a
file.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import disk_images
import pytest

from pvgrub_py.bootloader import depriv, wire
from pvgrub_py.bootloader.options import parse_options
from pvgrub_py.bootloader.plan import plan_from_json
from pvgrub_py.errors import InputError


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> disk_images.ImageFactory:
    return disk_images.factory(tmp_path_factory)


def _frames(path: Path) -> list[tuple[bytes, bytes]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = wire.FrameReader(fd, wire.Deadline(None))
        frames = []
        kinds = (wire.PLAN, wire.START, wire.MAP, wire.DATA, wire.END)
        while not frames or frames[-1][0] not in (wire.END, wire.FAIL):
            frames.append(reader.read_frame(kinds))
        return frames
    finally:
        os.close(fd)


def _serve(disk: Path, out: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    """`depriv._serve` on *disk* into *out*; how many times it armed the alarm."""
    armed = 0
    real = signal.setitimer

    def setitimer(which: int, seconds: float, interval: float = 0.0) -> Any:
        nonlocal armed
        if which == signal.ITIMER_REAL and seconds > 0:
            armed += 1
        return real(which, seconds, interval)

    monkeypatch.setattr(signal, "setitimer", setitimer)
    opts = parse_options(["-q", *extra, str(disk)])
    disk_fd = os.open(disk, os.O_RDONLY)
    out_fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        depriv._serve(opts, disk_fd, out_fd, None, 120.0)
    finally:
        os.close(out_fd)
        os.close(disk_fd)
        real(signal.ITIMER_REAL, 0)
    return armed


@pytest.mark.parametrize("image", ["debian_gpt", "fedora_mbr"])
def test_the_child_arms_the_alarm_once_for_a_mapped_boot(
    images: disk_images.ImageFactory, image: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """ext4: the kernel and initrd map onto the image; the old child armed
    the alarm once per reader call (77 and 133 times on these images)."""
    disk = getattr(images, image)().path
    out = tmp_path / "frames"
    assert _serve(disk, out, monkeypatch) == 1
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    frames = _frames(out)
    kinds = [k for k, _ in frames]
    plan = plan_from_json(json.loads(frames[0][1]), disk.name)
    assert kinds == [wire.PLAN, *[wire.START, wire.MAP] * len(plan.files), wire.END]
    assert len(plan.files) == 2


@pytest.mark.parametrize("image", ["btrfs_bare", "iso"])
def test_a_streamed_boot_sends_whole_frames(
    images: disk_images.ImageFactory, image: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Files that do not map (btrfs, ISO 9660 here) are streamed after the
    plan, each read under the readers' own guards, as before."""
    disk = getattr(images, image)().path
    out = tmp_path / "frames"
    assert _serve(disk, out, monkeypatch) > 1
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    frames = _frames(out)
    assert frames[0][0] == wire.PLAN and frames[-1][0] == wire.END
    plan = plan_from_json(json.loads(frames[0][1]), disk.name)
    sizes: list[int] = []
    got: list[int] = []
    for kind, payload in frames[1:-1]:
        if kind == wire.START:
            sizes.append(json.loads(payload)["size"])
            got.append(0)
        else:
            assert kind == wire.DATA
            got[-1] += len(payload)
    assert len(sizes) == len(plan.files) and got == sizes


def test_a_file_over_its_cap_fails_before_the_plan_is_sent(
    images: disk_images.ImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The maps (and their caps) are made before the first frame: a kernel
    over its cap ends the child before the parent reads any plan."""
    from pvgrub_py.disk.limits import Limits

    disk = images.debian_gpt().path
    opts = parse_options(["-q", str(disk)])
    disk_fd = os.open(disk, os.O_RDONLY)
    out = tmp_path / "frames"
    out_fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with pytest.raises(InputError, match=r"kernel of .* exceeds the 16 bytes cap"):
            depriv._serve(opts, disk_fd, out_fd, Limits(kernel=16), 120.0)
    finally:
        os.close(out_fd)
        os.close(disk_fd)
    assert out.read_bytes() == b""
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


