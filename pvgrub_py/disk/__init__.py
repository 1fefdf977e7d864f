"""Guest disk images: volumes, filesystems, the boot config, the boot files.

The data flow, each step its own module::

    open_disk(path | fd)                    volumes.py   (bounded.py, sniff.py,
      -> Disk.volumes: [Volume, ...]                     partitions.py, lvm.py, qcow2.py)
    Volume.filesystem() -> Filesystem       filesystems.py (readers/*)
    locate_config(disk) -> ConfigLocation   locate.py
    volume_set(disk, loc.volume)            configfiles.py (for pvgrub_py.bootcfg)
    resolve_boot_file(disk, path, ...)      locate.py
    stream_file(fs, path, sink, role=...)   extract.py   (caps: limits.py)

**Why these readers.**  The Dissect modules (dissect.xfs, .btrfs, .fat,
.volume for LVM2, .hypervisor for qcow2) are well-kept, pure-Python
readers covering every format issue 3 asks for except ISO 9660, which
pycdlib reads, and ext2/3/4, which `readers.ext4` reads: importing
dissect.extfs cost every boot 20-30 ms (cstruct compiles its structure
definitions at import), ours under 1 ms, and dissect.extfs remains the
tests' oracle for it.  They are AGPL-3.0-or-later, hence the project's
GPL-3.0-or-later licence.  The alternatives measured on this machine
(pytsk3 and libyal's pyfsext, pyfsxfs, pyvslvm) are native code and miss
btrfs (libyal, pytsk3) or multi-segment LVs (libyal).  Dissect's weak
points on hostile input are handled here, not patched there: every byte goes
through `bounded.BoundedFile` (no zero-filled reads past the end, no read
larger than `bounded.MAX_SINGLE_READ`), every call runs under the disk's
time `budget.Budget`, btrfs tree nodes are validated before use, FAT
cluster chains are bounded, and each reader is imported only when the
superblock sniff selects it.  MBR and GPT are decoded in
`partitions` directly (GRUB's numbering, bounded loops).

Every failure caused by the disk is an `pvgrub_py.errors.InputError` whose
source names the disk, the volume and the file.
"""

from pvgrub_py._lazy import lazy_exports

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.disk.bounded import BoundedFile, ByteSource, FdSource, ReadStats
    from pvgrub_py.disk.budget import Budget, BudgetExceeded
    from pvgrub_py.disk.extract import read_small_file, stream_file
    from pvgrub_py.disk.filesystems import FileInfo, FileStream, Filesystem
    from pvgrub_py.disk.limits import Limits
    from pvgrub_py.disk.locate import (
        BootFile,
        ConfigLocation,
        VolumeSelector,
        locate_config,
        resolve_boot_file,
        select_volume,
    )
    from pvgrub_py.disk.readers.base import FileKind
    from pvgrub_py.disk.volumes import Disk, Volume, open_disk

__all__ = [
    "BootFile",
    "BoundedFile",
    "Budget",
    "BudgetExceeded",
    "ByteSource",
    "ConfigLocation",
    "Disk",
    "FdSource",
    "FileInfo",
    "FileKind",
    "FileStream",
    "Filesystem",
    "Limits",
    "ReadStats",
    "Volume",
    "VolumeSelector",
    "locate_config",
    "open_disk",
    "read_small_file",
    "resolve_boot_file",
    "select_volume",
    "stream_file",
]

# Imported on first use (pvgrub_py._lazy): importing one submodule does not
# import its siblings.
__getattr__ = lazy_exports(
    __name__,
    {
        "BoundedFile": "bounded",
        "ByteSource": "bounded",
        "FdSource": "bounded",
        "ReadStats": "bounded",
        "Budget": "budget",
        "BudgetExceeded": "budget",
        "Limits": "limits",
        "read_small_file": "extract",
        "stream_file": "extract",
        "FileInfo": "filesystems",
        "FileStream": "filesystems",
        "Filesystem": "filesystems",
        "BootFile": "locate",
        "ConfigLocation": "locate",
        "VolumeSelector": "locate",
        "locate_config": "locate",
        "resolve_boot_file": "locate",
        "select_volume": "locate",
        "FileKind": "readers.base",
        "Disk": "volumes",
        "Volume": "volumes",
        "open_disk": "volumes",
    },
)
