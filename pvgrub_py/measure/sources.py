"""Open the files a boot measures, and stream them in chunks.

Every failure is an `InputError` naming the role and the path ("kernel
/boot/vmlinuz: no such file or directory"), because the admin reading a
bootloader log needs to know which of the three files was wrong.  Only
regular files of at most 1 GiB are accepted: a FIFO or a device would block
or never end, and the bootloader boots nothing larger, so nothing larger is
predicted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import MAX_BOOT_FILE, open_input_fd
from pvgrub_py.measure.digest import CHUNK_SIZE

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import BinaryIO


@contextmanager
def open_regular(role: str, path: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``path`` read-only (a regular file of at most `MAX_BOOT_FILE` bytes,
    never blocking: `pvgrub_py.inputs`); yield the unbuffered file and its size."""
    fd, size = open_input_fd(path, max_size=MAX_BOOT_FILE, what=role)
    try:
        f = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, size


def read_chunks(f: BinaryIO, label: str, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
    """Yield the file's bytes as views into one reused buffer.

    A consumer must finish with each view before asking for the next one.
    """
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    while True:
        try:
            n = f.readinto(view)  # type: ignore[attr-defined]
        except OSError as e:
            raise InputError(label, f"read failed: {e.strerror or e}") from None
        if not n:
            return
        yield view[:n]
