"""Open the files a boot measures, and stream them in chunks.

Every failure is an `InputError` naming the role and the path ("kernel
/boot/vmlinuz: No such file or directory"), because the admin reading a
bootloader log needs to know which of the three files was wrong.  Only
regular files are accepted: a FIFO or a device would block or never end.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from pvgrub_py.errors import InputError
from pvgrub_py.measure.digest import CHUNK_SIZE


@contextmanager
def open_regular(role: str, path: str) -> Iterator[tuple[BinaryIO, int]]:
    """Open ``path`` read-only; yield the file and its size."""
    label = f"{role} {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(label, e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise InputError(label, kind)
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


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
