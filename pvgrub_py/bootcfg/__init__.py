"""Boot configuration parsers: guest volumes in, a boot menu out.

Data flow::

    VolumeSet (files.py) --search.find_config--> (volume, path, kind)
        --grub2 / bls / extlinux / grub_legacy--> BootMenu (entry.py)
        --select.select--> BootEntry (kernel, initrds, args)

Parsers are pure: they read only through the `ConfigFiles` protocol, never
write, and raise only `BootConfigError` (one line: file, line, problem);
an error a volume implementation raises itself (a corrupt filesystem, an
`InputError`) passes through unchanged.

Typical use::

    volumes = VolumeSet([...], primary=0)      # the disk layer builds this
    menu = load_menu(volumes)                  # find + parse the config
    entry = select(menu, entry=args.entry)     # --entry, else the default
    kernel_volume = volumes.resolve(entry.kernel.device)
    # read entry.kernel.path / entry.initrds from kernel_volume; boot with entry.args
"""

from typing import TYPE_CHECKING

from pvgrub_py._lazy import lazy_exports

# Imported eagerly: a lazy name equal to a submodule's name would be shadowed
# by that submodule once anything imports it (`pvgrub_py.bootcfg.select`).
from pvgrub_py.bootcfg.select import select

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.bls import parse_bls_dir
    from pvgrub_py.bootcfg.entry import BootEntry, BootMenu, FileRef, SubmenuInfo
    from pvgrub_py.bootcfg.errors import BootConfigError
    from pvgrub_py.bootcfg.extlinux import parse_extlinux
    from pvgrub_py.bootcfg.files import (
        ConfigFiles,
        DictVolume,
        PathInfo,
        VolumeIdentity,
        VolumeSet,
    )
    from pvgrub_py.bootcfg.grub2 import parse_grub2
    from pvgrub_py.bootcfg.grub_legacy import parse_grub_legacy
    from pvgrub_py.bootcfg.limits import DEFAULT_LIMITS, Limits
    from pvgrub_py.bootcfg.search import find_config, load_menu, parse_config

__all__ = [
    "DEFAULT_LIMITS",
    "BootConfigError",
    "BootEntry",
    "BootMenu",
    "ConfigFiles",
    "DictVolume",
    "FileRef",
    "Limits",
    "PathInfo",
    "SubmenuInfo",
    "VolumeIdentity",
    "VolumeSet",
    "find_config",
    "load_menu",
    "parse_bls_dir",
    "parse_config",
    "parse_extlinux",
    "parse_grub2",
    "parse_grub_legacy",
    "select",
]

# Imported on first use (pvgrub_py._lazy): importing one submodule does not
# import its siblings.
__getattr__ = lazy_exports(
    __name__,
    {
        "parse_bls_dir": "bls",
        "BootEntry": "entry",
        "BootMenu": "entry",
        "FileRef": "entry",
        "SubmenuInfo": "entry",
        "BootConfigError": "errors",
        "parse_extlinux": "extlinux",
        "ConfigFiles": "files",
        "DictVolume": "files",
        "PathInfo": "files",
        "VolumeIdentity": "files",
        "VolumeSet": "files",
        "parse_grub2": "grub2",
        "parse_grub_legacy": "grub_legacy",
        "DEFAULT_LIMITS": "limits",
        "Limits": "limits",
        "find_config": "search",
        "load_menu": "search",
        "parse_config": "search",
    },
)
