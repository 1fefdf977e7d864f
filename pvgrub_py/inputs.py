"""Opening the files a user names, without ever blocking or reading without bound.

A path on a command line may name anything: a FIFO with no writer (a plain
``open()`` waits for one forever), a character device that never ends
(``/dev/zero``), a directory, a 2 TiB sparse file.  Every input is therefore
opened with ``O_NONBLOCK`` (which makes ``open`` of a FIFO return at once),
checked with ``fstat`` on the descriptor that will be read (no window between
check and use), and refused unless it is a regular file or, where a disk is
expected, a block device.  Its size is checked against a cap before the first
byte is read.
"""

from __future__ import annotations

import fcntl
import os
import stat

from pvgrub_py.errors import InputError, PvgrubError

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import BinaryIO

#: libxenguest's ``XC_DOM_DECOMPRESS_MAX`` (xenguest.h, 1 GiB): the cap on a kernel
#: as decompressed; a gzip trailer claiming more makes libxenguest load the file as stored.
DECOMPRESS_MAX = 1 << 30

#: The largest kernel or initrd file pvgrub-py reads, boots or predicts: libxenguest's
#: default ``max_kernel_size`` and ``max_module_size`` (xc_dom_allocate in
#: xen/tools/libs/guest/xg_dom_core.c), which it sets to ``XC_DOM_DECOMPRESS_MAX``.
MAX_BOOT_FILE = DECOMPRESS_MAX


def format_size(n: int, *, keep_zero: bool = False) -> str:
    """``1.3 GiB``, ``512 KiB``, ``17 bytes``: sizes as an admin reads them.

    With *keep_zero* a whole number keeps its decimal (``3.0 MiB``), as the
    disk extractor's messages print it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            whole = value == int(value) and not keep_zero
            return f"{value:.0f} {unit}" if whole else f"{value:.1f} {unit}"
    return f"{n} bytes"


def describe_open_error(e: OSError) -> str:
    """The problem in a one-line error: ``no such file or directory``, not ``[Errno 2] ...``.

    One of our own errors that is also an OSError (``XenError``: a simulated
    host that cannot start, a hypervisor that refuses an attach) already says
    what failed and why in its line; its bare ``strerror`` would drop that."""
    text = str(e) if isinstance(e, PvgrubError) else (e.strerror or str(e))
    return text[:1].lower() + text[1:]


def open_input(
    path: str | os.PathLike[str],
    *,
    allow_block_device: bool = False,
    max_size: int | None = MAX_BOOT_FILE,
    what: str = "",
) -> BinaryIO:
    """Open *path* for reading, refusing what could block or never end.

    Raises `InputError` (one line: the path and the problem) when the path is
    missing or unreadable, is not a regular file (or a block device where
    *allow_block_device*), or is larger than *max_size* bytes.  *what*
    ("kernel", "initrd", ...) prefixes the path in messages.
    """
    fd, _size = open_input_fd(
        path, allow_block_device=allow_block_device, max_size=max_size, what=what
    )
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_input_fd(
    path: str | os.PathLike[str],
    *,
    allow_block_device: bool = False,
    max_size: int | None = MAX_BOOT_FILE,
    what: str = "",
) -> tuple[int, int]:
    """`open_input`, as a raw blocking descriptor (close-on-exec) and its size.

    For callers that hand the descriptor on (a disk to the sandboxed parser,
    a reader that uses ``pread``).  The caller owns the descriptor.
    """
    name = os.fspath(path)
    source = f"{what} {name}" if what else name
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(source, describe_open_error(e)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            size = st.st_size
        elif allow_block_device and stat.S_ISBLK(st.st_mode):
            size = os.lseek(fd, 0, os.SEEK_END)
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            kind = file_kind(st.st_mode)
            wanted = "a regular file or a block device" if allow_block_device else "a regular file"
            raise InputError(source, f"is {kind}, not {wanted}")
        if max_size is not None and size > max_size:
            raise InputError(
                source, f"{format_size(size)} exceeds the {format_size(max_size)} cap"
            )
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return fd, size
    except BaseException:
        os.close(fd)
        raise


def open_named_input(path: str, what: str, *, allow_block_device: bool = False,
                     max_size: int | None = MAX_BOOT_FILE) -> int:  # fmt: skip
    """`open_input_fd`'s descriptor, its errors worded ``PATH: cannot open the
    WHAT: PROBLEM`` (``disk.img: cannot open the disk image: no such file or
    directory``)."""
    try:
        fd, _size = open_input_fd(path, allow_block_device=allow_block_device, max_size=max_size)
    except InputError as e:
        raise InputError(path, f"cannot open the {what}: {e.problem}") from None
    return fd


def file_kind(mode: int) -> str:
    """``a directory``, ``a FIFO``, ... : what a file that is not regular is, for messages."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"
