"""`extract_session_files`: the kernel's hashers finish while the initrds stream.

The overlap must change nothing but the speed: the same bytes written, the
same digests as `extract_session_kernel` then `extract_session_initrds`,
the files asked for in plan order, and errors still surfacing with no
hashing thread left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections.abc import Callable

import pytest

from pvgrub_py.bootloader.extract import (
    extract_session_files,
    extract_session_initrds,
    extract_session_kernel,
)
from pvgrub_py.bootloader.plan import BootPlan, FileSpec
from pvgrub_py.disk.extract import Limits
from pvgrub_py.errors import InputError
from pvgrub_py.tpm.algorithms import SHA1, SHA256

BANKS = (SHA1, SHA256)
MIB = 1 << 20


class FakeSession:
    """A `GuestSession` serving in-memory files in 1 MiB chunks."""

    def __init__(self, files: list[bytes], fail_at: int | None = None) -> None:
        self.files = files
        self.fail_at = fail_at
        self.asked: list[int] = []
        specs = [FileSpec(f"/boot/f{i}", f"disk.img: /boot/f{i}") for i in range(len(files))]
        self._plan = BootPlan("grub.cfg", (), 0, None, 0, specs[0], tuple(specs[1:]), "ro")

    @property
    def plan(self) -> BootPlan:
        return self._plan

    def stream(self, index: int, sink: Callable[[bytes], object], cap: int) -> int:
        self.asked.append(index)
        if index == self.fail_at:
            raise InputError(f"/boot/f{index}", "short read")
        data = self.files[index]
        for at in range(0, len(data), MIB):
            sink(data[at : at + MIB])
        return len(data)

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _out(tmp_path: object, name: str) -> int:
    return os.open(os.path.join(str(tmp_path), name), os.O_WRONLY | os.O_CREAT, 0o600)


def test_same_bytes_and_digests_as_one_file_after_the_other(tmp_path: object) -> None:
    files = [os.urandom(3 * MIB + 5), os.urandom(2 * MIB), os.urandom(MIB + 1)]
    session = FakeSession(files)
    kernel_fd, initrd_fd = _out(tmp_path, "k"), _out(tmp_path, "i")
    try:
        kernel, initrd = extract_session_files(session, kernel_fd, initrd_fd, BANKS, Limits())
    finally:
        os.close(kernel_fd)
        os.close(initrd_fd)
    assert session.asked == [0, 1, 2]
    with open(os.path.join(str(tmp_path), "k"), "rb") as f:
        assert f.read() == files[0]
    with open(os.path.join(str(tmp_path), "i"), "rb") as f:
        assert f.read() == files[1] + files[2]
    separate = FakeSession(files)
    assert kernel == extract_session_kernel(separate, None, BANKS, Limits())
    assert initrd == extract_session_initrds(separate, None, BANKS, Limits())
    assert kernel.digests["sha256"] == hashlib.sha256(files[0]).digest()
    assert initrd.digests["sha1"] == hashlib.sha1(files[1] + files[2]).digest()


def test_a_corrupt_gzip_kernel_still_fails_and_threads_end() -> None:
    bad = bytearray(gzip.compress(os.urandom(MIB)))
    bad[len(bad) // 2] ^= 0xFF  # the trailer still says gzip; the stream is corrupt
    session = FakeSession([bytes(bad), os.urandom(MIB)])
    before = threading.active_count()
    with pytest.raises(InputError, match="gzip"):
        extract_session_files(session, None, None, BANKS, Limits())
    assert threading.active_count() == before


def test_an_initrd_error_wins_and_threads_end() -> None:
    session = FakeSession([os.urandom(2 * MIB), os.urandom(MIB)], fail_at=1)
    before = threading.active_count()
    with pytest.raises(InputError, match="short read"):
        extract_session_files(session, None, None, BANKS, Limits())
    assert threading.active_count() == before
