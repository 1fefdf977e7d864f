"""The disk's volumes as the boot-config parsers see them.

`pvgrub_py.bootcfg.files` defines the read-only ``ConfigFiles`` protocol
(``identity``, ``read(path, max_bytes)``, ``stat``, ``list_dir``) and a
``VolumeSet`` that resolves GRUB device names, UUIDs and labels.  This
module adapts a `Volume` to that protocol and builds the ``VolumeSet`` of a
disk with the config's volume as the initial ``$root``.

Only regular files are readable through it: a config path that names a
directory, a device node or a FIFO reads as absent (``None``), which the
parsers treat as a missing file.  Corrupt filesystems still raise
`InputError`: a damaged ``/boot`` must not look like an empty one.
"""

from __future__ import annotations

from pvgrub_py.bootcfg.files import PathInfo, VolumeIdentity, VolumeSet
from pvgrub_py.disk.budget import BudgetExceeded
from pvgrub_py.disk.errors import disk_error
from pvgrub_py.disk.filesystems import FileInfo
from pvgrub_py.disk.readers.base import FileKind
from pvgrub_py.disk.volumes import Disk, Volume
from pvgrub_py.errors import InputError


class VolumeFiles:
    """A `Volume`'s filesystem as a ``bootcfg.files.ConfigFiles``."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self._fs = volume.filesystem()
        self._identity = VolumeIdentity(
            name=volume.grub_name,
            uuid=self._fs.uuid,
            label=self._fs.label,
            fs_type=self._fs.fs_type,
        )

    @property
    def identity(self) -> VolumeIdentity:
        return self._identity

    def _stat(self, path: str) -> FileInfo | None:
        return self._fs.stat(path)

    def read(self, path: str, max_bytes: int) -> bytes | None:
        info = self._stat(path)
        if info is None or not info.is_file:
            return None
        want = min(info.size, max_bytes + 1)
        parts: list[bytes] = []
        got = 0
        with self._fs.open(path) as stream:
            while got < want:
                chunk = stream.read(min(1 << 20, want - got))
                if not chunk:
                    raise disk_error(
                        stream.source,
                        f"short read: the filesystem declares {info.size} bytes "
                        f"but only {got} could be read",
                    )
                parts.append(chunk)
                got += len(chunk)
        return b"".join(parts)

    def stat(self, path: str) -> PathInfo | None:
        info = self._stat(path)
        if info is None or info.kind not in (FileKind.REGULAR, FileKind.DIRECTORY):
            return None
        return PathInfo(is_dir=info.is_dir, size=0 if info.is_dir else info.size)

    def list_dir(self, path: str) -> list[str] | None:
        info = self._stat(path)
        if info is None or not info.is_dir:
            return None
        return self._fs.list_dir(path)


def volume_set(disk: Disk, config_volume: Volume) -> VolumeSet:
    """Every readable volume of *disk*, with *config_volume* as ``$root``.

    Volumes whose filesystem cannot be opened are left out (GRUB cannot
    ``search`` them either); the config volume itself must open.
    """
    files: list[VolumeFiles] = []
    primary = 0
    for vol in disk.volumes:
        if not vol.has_filesystem:
            continue
        if vol is config_volume:
            primary = len(files)
            files.append(VolumeFiles(vol))
            continue
        try:
            files.append(VolumeFiles(vol))
        except BudgetExceeded:
            raise
        except InputError:
            continue
    if not files or files[primary].volume is not config_volume:
        files.insert(0, VolumeFiles(config_volume))
        primary = 0
    return VolumeSet(files, primary)
