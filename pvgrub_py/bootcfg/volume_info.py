"""What a guest volume says about itself and about a path on it.

The records of the `pvgrub_py.bootcfg.files.ConfigFiles` protocol (see
`pvgrub_py.bootcfg.files` for the protocol's rules), in a module of their
own so that the protocol (`pvgrub_py.bootcfg.config_files`) and the
volume helpers (`pvgrub_py.bootcfg.files`) can both use them.
"""

from __future__ import annotations

from pvgrub_py.record import record


@record(frozen=True)
class VolumeIdentity:
    """How GRUB names and finds a volume (``search``, ``probe``, ``(dev)/path``)."""

    name: str
    uuid: str | None = None
    label: str | None = None
    fs_type: str | None = None


@record(frozen=True)
class PathInfo:
    """What ``[ -d/-e/-f/-s ]`` needs to know about a path."""

    is_dir: bool
    size: int
