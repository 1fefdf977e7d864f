"""The size caps of the files a boot reads from a guest disk.

A module of its own, without the filesystem layer, because the parent of a
``--runas`` boot needs the caps to check what its sandboxed child announces
but never reads a filesystem itself (`pvgrub_py.disk.extract` re-exports
these names for the guest side).
"""

from __future__ import annotations

from pvgrub_py.inputs import MAX_BOOT_FILE
from pvgrub_py.named_tuple import NamedTuple

MIB = 1 << 20

#: Per-role size caps in bytes.
KERNEL_CAP = MAX_BOOT_FILE
INITRD_CAP = MAX_BOOT_FILE
CONFIG_CAP = MIB


# Records on the bootloader's path are NamedTuples, not frozen dataclasses:
# creating a frozen dataclass costs ~0.6 ms at import (bench/bench_bootloader.py).
class Limits(NamedTuple):
    """Size caps per role; lower them for tests or a stricter policy."""

    kernel: int = KERNEL_CAP
    initrd: int = INITRD_CAP
    config: int = CONFIG_CAP

    def cap(self, role: str) -> int:
        caps = {"kernel": self.kernel, "initrd": self.initrd, "config": self.config}
        if role not in caps:
            raise ValueError(f"unknown role {role!r}")
        return caps[role]
