"""GRUB 2 ``grub.cfg``: the public entry point of the interpreter.

See `grub2_interp` for the execution model and `select` for how the
default entry is resolved.  This module wires the two halves: the
interpreter (`grub2_interp`) gets the command table (`grub2_commands`)
through its constructor, and each command sees it as a `grub2_shell.Shell`.
"""

from __future__ import annotations

from collections.abc import Mapping

from pvgrub_py.bootcfg.dialect import Dialect
from pvgrub_py.bootcfg.entry import BootMenu
from pvgrub_py.bootcfg.files import VolumeSet
from pvgrub_py.bootcfg.grub2_commands import COMMANDS
from pvgrub_py.bootcfg.grub2_interp import Interpreter
from pvgrub_py.bootcfg.limits import DEFAULT_LIMITS, Limits

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.bootcfg.files import ConfigFiles


def parse_grub2(
    volumes: VolumeSet | ConfigFiles,
    path: str,
    *,
    env: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    dialect: Dialect = Dialect.GRUB,
) -> BootMenu:
    """Run the grub.cfg at *path* on the config volume and return its menu.

    *volumes* is the guest's `VolumeSet` whose primary volume holds *path*
    (a single `ConfigFiles` is accepted for one-volume guests).  *env*
    presets variables on top of the ones GRUB's normal mode sets (``root``,
    ``prefix``, ``config_directory``, ``config_file``, ``grub_platform=xen``,
    the ``feature_*`` flags); they are exported.  *dialect* picks GRUB's or
    petitboot's reading where the two differ (`dialect.Dialect`).
    """
    vols = volumes if isinstance(volumes, VolumeSet) else VolumeSet.single(volumes)
    return Interpreter(vols, COMMANDS, limits=limits, dialect=dialect).run(path, env)
