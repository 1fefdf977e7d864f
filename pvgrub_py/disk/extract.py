"""Stream one file out of a guest filesystem: capped, timed, length-checked.

This is the single pass in which the bootloader both copies a kernel or
initrd to the output directory and hashes it for every PCR bank: the
caller passes a *sink* that does both, so the bytes booted are the bytes
measured.  The stream is cut into 1 MiB chunks (pygrub's ``FS_READ_MAX``)
and held to three rules:

* **caps** - the size the filesystem declares is checked against the cap
  *before* the first byte is read (kernel and initrd 1 GiB, config 1 MiB,
  as issue 3 and pygrub's 1 MiB config read require; callers may lower
  them);
* **budget** - the disk's time `Budget` is checked before every chunk, and
  an optional *progress* hook can abort (e.g. a parent's overall deadline);
* **exact length** - the bytes delivered must equal the declared size.  A
  reader that comes up short (a truncated image, an extent list shorter
  than the inode's size) is an `InputError`, never a silently short file.
"""

from __future__ import annotations

from collections.abc import Callable

from pvgrub_py.disk.errors import disk_error
from pvgrub_py.disk.filesystems import FileStream, Filesystem
from pvgrub_py.disk.limits import CONFIG_CAP as CONFIG_CAP
from pvgrub_py.disk.limits import INITRD_CAP as INITRD_CAP
from pvgrub_py.disk.limits import KERNEL_CAP as KERNEL_CAP
from pvgrub_py.disk.limits import MIB
from pvgrub_py.disk.limits import Limits as Limits
from pvgrub_py.inputs import format_size

CHUNK_SIZE = MIB

Sink = Callable[[bytes], object]
Progress = Callable[[int, int], None]


DEFAULT_LIMITS = Limits()


def stream_file(
    fs: Filesystem,
    path: str,
    sink: Sink,
    *,
    role: str,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Feed the regular file *path* on *fs* to *sink* in chunks; return its size.

    *role* is ``"kernel"``, ``"initrd"`` or ``"config"`` and selects the
    cap.  *progress(done, total)* runs after each chunk and may raise to
    abort.  On any error the sink has received a prefix of the file at most
    and the caller must discard what it wrote.
    """
    cap = limits.cap(role)
    with fs.open(path) as stream:
        return stream_open_file(
            stream, sink, role=role, cap=cap, progress=progress, chunk_size=chunk_size
        )


def check_cap(stream: FileStream, role: str, cap: int) -> None:
    if stream.size > cap:
        raise disk_error(
            stream.source, f"{role} of {format_size(stream.size, keep_zero=True)} exceeds the "
            f"{format_size(cap, keep_zero=True)} cap"
        )


def copy_open_file(stream: FileStream, sink: Sink, *, role: str, cap: int) -> int:
    """`stream_open_file`, reading straight from the image where the file
    maps onto it (`extents.map_file`): the same bytes, without the reader."""
    from pvgrub_py.disk.extents import copy_extents, map_file

    fmap = map_file(stream)
    if fmap is None:
        return stream_open_file(stream, sink, role=role, cap=cap)
    check_cap(stream, role, cap)
    budget = stream.fs.budget
    return copy_extents(fmap.fd, fmap.extents, sink, source=stream.source,
                        check=None if budget is None else budget.check)  # fmt: skip


def stream_open_file(
    stream: FileStream,
    sink: Sink,
    *,
    role: str,
    cap: int,
    progress: Progress | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """`stream_file` for a file already opened with `Filesystem.open`."""
    size = stream.size
    check_cap(stream, role, cap)
    done = 0
    budget = stream.fs.budget
    while done < size:
        if budget is not None:
            budget.check()
        chunk = stream.read(min(chunk_size, size - done))
        if not chunk:
            raise disk_error(
                stream.source,
                f"short read: the filesystem declares {size} bytes but only {done} could be read",
            )
        done += len(chunk)
        sink(chunk)
        if progress is not None:
            progress(done, size)
    if done != size or stream.read(1):
        raise disk_error(stream.source, f"length mismatch: read {done} bytes, declared {size}")
    return done


def read_small_file(
    fs: Filesystem, path: str, *, role: str = "config", limits: Limits = DEFAULT_LIMITS
) -> bytes:
    """The whole of a small file (a config), under the same rules."""
    parts: list[bytes] = []
    stream_file(fs, path, parts.append, role=role, limits=limits)
    return b"".join(parts)
