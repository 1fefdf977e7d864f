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

from pvgrub_py._lazy import lazy_exports

# Imported eagerly: a lazy name equal to a submodule's name would be shadowed
# by that submodule once anything imports it (`pvgrub_py.bootcfg.select`).
from pvgrub_py.bootcfg.select import select

#: The package's other exports by the submodule that defines them.  They are
#: imported on first use (`pvgrub_py._lazy`), so importing one submodule, as
#: the bootloader does, does not import every parser: the GRUB 2 interpreter
#: alone takes 25 ms.  The same names are imported for type checkers below.
_EXPORTS = {
    "bls": ("parse_bls_dir",),
    "entry": ("BootEntry", "BootMenu", "FileRef", "SubmenuInfo"),
    "errors": ("BootConfigError",),
    "extlinux": ("parse_extlinux",),
    "files": ("ConfigFiles", "DictVolume", "PathInfo", "VolumeIdentity", "VolumeSet"),
    "grub2": ("parse_grub2",),
    "grub_legacy": ("parse_grub_legacy",),
    "limits": ("DEFAULT_LIMITS", "Limits"),
    "search": ("find_config", "load_menu", "parse_config"),
}

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.bls import parse_bls_dir as parse_bls_dir
    from pvgrub_py.bootcfg.entry import BootEntry as BootEntry
    from pvgrub_py.bootcfg.entry import BootMenu as BootMenu
    from pvgrub_py.bootcfg.entry import FileRef as FileRef
    from pvgrub_py.bootcfg.entry import SubmenuInfo as SubmenuInfo
    from pvgrub_py.bootcfg.errors import BootConfigError as BootConfigError
    from pvgrub_py.bootcfg.extlinux import parse_extlinux as parse_extlinux
    from pvgrub_py.bootcfg.files import ConfigFiles as ConfigFiles
    from pvgrub_py.bootcfg.files import DictVolume as DictVolume
    from pvgrub_py.bootcfg.files import PathInfo as PathInfo
    from pvgrub_py.bootcfg.files import VolumeIdentity as VolumeIdentity
    from pvgrub_py.bootcfg.files import VolumeSet as VolumeSet
    from pvgrub_py.bootcfg.grub2 import parse_grub2 as parse_grub2
    from pvgrub_py.bootcfg.grub_legacy import parse_grub_legacy as parse_grub_legacy
    from pvgrub_py.bootcfg.limits import DEFAULT_LIMITS as DEFAULT_LIMITS
    from pvgrub_py.bootcfg.limits import Limits as Limits
    from pvgrub_py.bootcfg.search import find_config as find_config
    from pvgrub_py.bootcfg.search import load_menu as load_menu
    from pvgrub_py.bootcfg.search import parse_config as parse_config

__all__ = ["select", *(name for names in _EXPORTS.values() for name in names)]
__getattr__ = lazy_exports(__name__, {n: mod for mod, names in _EXPORTS.items() for n in names})
