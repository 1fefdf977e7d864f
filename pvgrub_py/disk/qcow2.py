"""qcow2 disk images through dissect.hypervisor.

A qcow2 file (QEMU ``docs/interop/qcow2.txt``) maps a virtual disk of
``size`` bytes onto clusters of the file through two levels of tables.
dissect.hypervisor decodes the tables and compressed clusters (bounded to
one cluster per decompression).  Everything the guest disk needs must be
inside the one file: a backing file or an external data file would be a
path on the *host*, chosen by the guest, so both are refused.

The virtual disk is put behind its own `BoundedFile` (bounded by the
virtual size) and discovery starts over on it.  The file itself is read
through the outer `BoundedFile`, so a table pointing past the end of the
qcow2 file is refused too.
"""

from __future__ import annotations

import struct
from typing import Any

from pvgrub_py.disk.bounded import BoundedFile, StreamSource
from pvgrub_py.disk.budget import cpu_deadline
from pvgrub_py.disk.errors import disk_error, reader_boundary

#: qcow2 header: backing_file_offset (u64 BE) at byte 8; incompatible
#: feature bit 2 is "external data file" (version 3 header, byte 72).
_BACKING_OFFSET = 8
_INCOMPAT = 72
_INCOMPAT_DATA_FILE = 1 << 2


def open_qcow2(fh: BoundedFile) -> BoundedFile:
    """The virtual disk inside the qcow2 image *fh*."""
    head = fh.pread(0, 104)
    if len(head) < 80:
        raise disk_error(fh.name, "qcow2 header is truncated")
    (backing,) = struct.unpack_from(">Q", head, _BACKING_OFFSET)
    (version,) = struct.unpack_from(">I", head, 4)
    if backing:
        raise disk_error(
            fh.name, "qcow2 image has a backing file; only self-contained images are read"
        )
    if version >= 3:
        (incompat,) = struct.unpack_from(">Q", head, _INCOMPAT)
        if incompat & _INCOMPAT_DATA_FILE:
            raise disk_error(fh.name, "qcow2 image uses an external data file; not supported")
    with cpu_deadline(fh.budget), reader_boundary(fh.name, "reading the qcow2 tables"):
        from dissect.hypervisor.disk.qcow2 import QCow2  # type: ignore[import-untyped]

        image: Any = QCow2(fh)
        stream: Any = image.open()
        size = int(image.size)
    return BoundedFile(
        StreamSource(stream, size),
        name=f"{fh.name} (qcow2 virtual disk)",
        budget=fh.budget,
        stats=fh.stats,
    )
