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
#: cluster_bits (u32) at byte 20, size (u64) at 24, l1_size (u32) at 36;
#: incompatible feature bit 4 is "extended L2 entries" (16 bytes, not 8).
_CLUSTER_BITS = 20
_SIZE = 24
_L1_SIZE = 36
_INCOMPAT_EXTL2 = 1 << 4
#: The spec's lower bound on cluster_bits, and QEMU's (and dissect's) upper one.
_MIN_CLUSTER_BITS = 9
_MAX_CLUSTER_BITS = 21


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
    incompat = struct.unpack_from(">Q", head, _INCOMPAT)[0] if version >= 3 else 0
    if incompat & _INCOMPAT_DATA_FILE:
        raise disk_error(fh.name, "qcow2 image uses an external data file; not supported")
    _check_l1_size(fh.name, head, extended_l2=bool(incompat & _INCOMPAT_EXTL2))
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


def _check_l1_size(name: str, head: bytes, *, extended_l2: bool) -> None:
    """Refuse a header whose L1 table is too short for its virtual size.

    One L1 entry points at one L2 table of ``cluster_size / entry size``
    entries, each mapping one cluster (qcow2.txt, "Host cluster
    management"), so a disk of ``size`` bytes needs
    ``ceil(size / (cluster_size * cluster_size / 8))`` L1 entries (16 for
    extended L2 entries).  dissect.hypervisor trusts ``l1_size`` and would
    index past the end of the table it read.
    """
    (cluster_bits,) = struct.unpack_from(">I", head, _CLUSTER_BITS)
    (size,) = struct.unpack_from(">Q", head, _SIZE)
    (l1_size,) = struct.unpack_from(">I", head, _L1_SIZE)
    if not _MIN_CLUSTER_BITS <= cluster_bits <= _MAX_CLUSTER_BITS:
        raise disk_error(name, f"qcow2 cluster_bits {cluster_bits} is out of range")
    cluster_size = 1 << cluster_bits
    per_l2_table = cluster_size // (16 if extended_l2 else 8)
    needed = -(-size // (cluster_size * per_l2_table))
    if l1_size < needed:
        raise disk_error(
            name,
            f"qcow2 L1 table has {l1_size} entries; the virtual size of {size} bytes "
            f"needs {needed}",
        )
