"""Where on a guest volume the boot configuration is looked for.

pygrub's ``Grub.read_config`` (``tools/pygrub/src/pygrub``) tries, on each
partition in turn (the active one first), a fixed list of paths and uses
the first that exists: the GRUB 2 configs, then the ExtLinux/ISOLINUX ones,
then GRUB legacy's.  We keep that order and add:

* ``loader/entries`` (a BLS-only volume, no grub.cfg) right after the
  GRUB 2 configs, since a grub.cfg would have read those entries itself;
* the ``/boot``-less forms a separate ``/boot`` partition has
  (``/isolinux/isolinux.cfg``; pygrub's list already carries
  ``/grub/grub.cfg``, ``/grub2/grub.cfg``, ``/extlinux.conf`` ...);
* ``syslinux.cfg`` locations (``/boot/syslinux``, ``/syslinux``, ``/``),
  after pygrub's ExtLinux names.

The first volume of the `VolumeSet` (in its order) with any candidate
wins; that volume becomes the config volume (GRUB's initial ``$root``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.entry import BootMenu
from pvgrub_py.bootcfg.errors import BootConfigError
from pvgrub_py.bootcfg.files import VolumeSet
from pvgrub_py.bootcfg.limits import DEFAULT_LIMITS, Limits
from pvgrub_py.record import record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.files import ConfigFiles


@record(frozen=True)
class Candidate:
    path: str
    kind: str  # "grub2" | "bls" | "extlinux" | "grub-legacy"


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("/boot/grub/grub.cfg", "grub2"),
    Candidate("/grub/grub.cfg", "grub2"),
    Candidate("/boot/grub2/grub.cfg", "grub2"),
    Candidate("/grub2/grub.cfg", "grub2"),
    Candidate("/loader/entries", "bls"),
    Candidate("/boot/loader/entries", "bls"),
    Candidate("/boot/isolinux/isolinux.cfg", "extlinux"),
    Candidate("/isolinux/isolinux.cfg", "extlinux"),
    Candidate("/boot/extlinux/extlinux.conf", "extlinux"),
    Candidate("/boot/extlinux.conf", "extlinux"),
    Candidate("/extlinux/extlinux.conf", "extlinux"),
    Candidate("/extlinux.conf", "extlinux"),
    Candidate("/boot/syslinux/syslinux.cfg", "extlinux"),
    Candidate("/syslinux/syslinux.cfg", "extlinux"),
    Candidate("/syslinux.cfg", "extlinux"),
    Candidate("/boot/grub/menu.lst", "grub-legacy"),
    Candidate("/boot/grub/grub.conf", "grub-legacy"),
    Candidate("/grub/menu.lst", "grub-legacy"),
    Candidate("/grub/grub.conf", "grub-legacy"),
)


@record(frozen=True)
class FoundConfig:
    volume: ConfigFiles
    path: str
    kind: str


def _present(volume: ConfigFiles, cand: Candidate) -> bool:
    if cand.kind == "bls":
        names = volume.list_dir(cand.path)
        return bool(names) and any(n.endswith(".conf") for n in names or ())
    info = volume.stat(cand.path)
    return info is not None and not info.is_dir


def find_config(volumes: Iterable[ConfigFiles]) -> FoundConfig | None:
    """The first (volume, candidate) that exists, in volume then list order."""
    for volume in volumes:
        for cand in CANDIDATES:
            if _present(volume, cand):
                return FoundConfig(volume, cand.path, cand.kind)
    return None


def parse_config(
    volumes: VolumeSet,
    found: FoundConfig,
    *,
    env: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    dialect: Dialect = Dialect.GRUB,
) -> BootMenu:
    """Run the parser for *found* with its volume as the config volume.

    *dialect* matters to grub.cfg and syslinux configs (`dialect.Dialect`).
    """
    # Each parser is imported only when its config is the one found, on
    # purpose: measured after this module, the GRUB 2 interpreter takes 25 ms
    # to import, BLS 2.7, extlinux 2.4, menu.lst 1.3.  Importing all four at
    # the top would cost every GRUB 2 guest 3 ms and every other one 25 ms.
    vols = volumes.with_primary(found.volume)
    if found.kind == "grub2":
        from pvgrub_py.bootcfg.grub2 import parse_grub2

        return parse_grub2(vols, found.path, env=env, limits=limits, dialect=dialect)
    if found.kind == "bls":
        from pvgrub_py.bootcfg.bls import parse_bls_dir

        return parse_bls_dir(vols, found.path, limits=limits)
    if found.kind == "extlinux":
        from pvgrub_py.bootcfg.extlinux import parse_extlinux

        return parse_extlinux(vols, found.path, limits=limits, dialect=dialect)
    from pvgrub_py.bootcfg.grub_legacy import parse_grub_legacy

    return parse_grub_legacy(vols, found.path, limits=limits)


def load_menu(
    volumes: VolumeSet,
    *,
    env: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    dialect: Dialect = Dialect.GRUB,
) -> BootMenu:
    """Find the boot config on the guest's volumes and parse it."""
    found = find_config(volumes)
    if found is None:
        names = ", ".join(v.identity.name for v in volumes)
        raise BootConfigError(
            f"guest volumes ({names})",
            "no boot configuration found (looked for grub.cfg, loader/entries, "
            "extlinux/isolinux/syslinux configs, menu.lst)",
        )
    return parse_config(volumes, found, env=env, limits=limits, dialect=dialect)
