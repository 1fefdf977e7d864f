"""The disk -> boot request step: what the bootloader would boot from a disk,
copied out of it, for a caller that measures and builds the domain itself
(``pvgrubctl boot``, on the simulator and on a real host alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootloader.choose import BootChoice, choose
from pvgrub_py.bootloader.extract import extract_initrds, extract_kernel
from pvgrub_py.bootloader.options import BootloaderOptions
from pvgrub_py.disk.extract import Limits
from pvgrub_py.disk.volumes import open_disk


def files_from_disk(
    disk: str,
    entry: str | None,
    workdir: Path,
    dialect: Dialect = Dialect.GRUB,
    extra_args: str = "",
) -> tuple[BootChoice, Path, Path | None]:
    """The bootloader's choice, copied out of the disk (measured later by the builder);
    *extra_args* is appended to its cmdline, as pvgrub-py's (and pygrub's) --args."""
    opts = BootloaderOptions(
        disk=disk, interactive=False, entry=entry, dialect=dialect, args=extra_args
    )
    with open_disk(disk) as d:
        choice = choose(d, opts)
        kernel = workdir / "kernel"
        with open(kernel, "wb") as out:
            extract_kernel(choice.kernel, out, (), Limits())
        initrd: Path | None = None
        if choice.initrds:
            initrd = workdir / "initrd"
            with open(initrd, "wb") as out:
                extract_initrds(choice.initrds, out, (), Limits())
    return choice, kernel, initrd


@dataclass(frozen=True)
class DiskBoot:
    """The files to build a domain from, and how the measurements name them:
    the paths on the guest disk, as the bootloader's own measurements do."""

    kernel: str
    initrd: str | None
    cmdline: str
    kernel_source: str
    initrd_source: str | None
    entry: str | None  # the entry's title (its submenu path for GRUB 2)
    config: str | None  # the boot config it came from


def boot_from_disk(
    disk: str, entry: str | None, workdir: Path, dialect: Dialect = Dialect.GRUB,
    extra_args: str = "",
) -> DiskBoot:  # fmt: skip
    """`files_from_disk`, as the request a domain builder takes."""
    choice, kernel, initrd = files_from_disk(disk, entry, workdir, dialect, extra_args)
    return DiskBoot(
        kernel=str(kernel),
        initrd=str(initrd) if initrd else None,
        cmdline=choice.args,
        kernel_source=choice.kernel.path,
        initrd_source=" ".join(i.path for i in choice.initrds) or None,
        entry=choice.entry.title_path or choice.entry.title if choice.entry else None,
        config=choice.config,
    )
