"""`ConfigFiles`: the read-only volume every boot-config parser reads through.

Its rules are in `pvgrub_py.bootcfg.files`, which also exports it.  It is a
`typing.Protocol`, so it lives here: a boot only needs it as an annotation
(``if TYPE_CHECKING:``), and importing `typing` would cost every boot
~1.7 ms.  ``pvgrub_py.bootcfg.files.ConfigFiles`` imports this module on
first use (tests check ``isinstance(volume, ConfigFiles)``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pvgrub_py.bootcfg.volume_info import PathInfo, VolumeIdentity


@runtime_checkable
class ConfigFiles(Protocol):
    """A read-only filesystem as the boot-config parsers see it."""

    @property
    def identity(self) -> VolumeIdentity:
        """Name, UUID and label of this volume."""
        ...

    def read(self, path: str, max_bytes: int) -> bytes | None:
        """Contents of the regular file at *path* (at most ``max_bytes + 1`` bytes)."""
        ...

    def stat(self, path: str) -> PathInfo | None:
        """Type and size of *path*, ``None`` if nothing is there."""
        ...

    def list_dir(self, path: str) -> list[str] | None:
        """Names in the directory *path*, ``None`` if it is not a directory."""
        ...
