"""A simulated guest's frontends, read from a minios.cfg-style profile.

``CONFIG_NAME=y|n`` lines, ``#`` comments; unknown names are refused so a
typo cannot silently drop a device.  See stubdom/sim-guest.cfg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pvgrub_py.errors import InputError

DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "stubdom" / "sim-guest.cfg"
KNOWN = (
    "CONFIG_XENBUS",
    "CONFIG_CONSFRONT",
    "CONFIG_TPMFRONT",
    "CONFIG_BLKFRONT",
    "CONFIG_NETFRONT",
)


@dataclass(frozen=True)
class GuestProfile:
    xenbus: bool = True
    console: bool = True
    tpmfront: bool = True


def load_profile(path: Path = DEFAULT_PROFILE) -> GuestProfile:
    values: dict[str, bool] = {}
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(str(path), f"cannot read the guest profile: {e.strerror}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or name not in KNOWN or value not in ("y", "n"):
            raise InputError(f"{path}:{number}", f"expected one of {', '.join(KNOWN)} = y|n")
        values[name] = value == "y"
    if not values.get("CONFIG_XENBUS", True):
        raise InputError(str(path), "CONFIG_XENBUS=n: a PV guest without xenstore cannot boot")
    return GuestProfile(
        xenbus=True,
        console=values.get("CONFIG_CONSFRONT", True),
        tpmfront=values.get("CONFIG_TPMFRONT", True),
    )
