"""Were the Xen bindings built, against which Xen, and what do they load?

``pvgrubctl doctor`` and the tests ask here rather than importing the
extension themselves.  Two versions matter and can differ: the one the
extension was compiled against (pkg-config's ``xencontrol`` version, baked
in at build time) and the one the dynamic linker actually loaded (read from
the file name of the mapped ``libxenctrl.so.X.Y.Z``, since libxenctrl has no
version call that works without a hypervisor; ``xc_version`` is a
hypercall).  libxenctrl's SONAME carries the Xen release (Xen
tools/libs/libs.mk), so a mismatch means the extension must be rebuilt.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pvgrub_py.xen.binding import load

LIBRARY_FILE = re.compile(r"/(libxen(?:ctrl|guest))\.so\.(\d+(?:\.\d+)*)$")


@dataclass(frozen=True)
class Availability:
    built: bool
    reason: str | None  # why not built / not importable
    built_against: str | None  # "4.17.0"
    loaded: dict[str, str]  # {"libxenctrl": "4.17.0", "libxenguest": "4.17.0"}
    hidden_symbols: tuple[str, ...]  # names this release lacks (see _conditional.py)

    @property
    def simulator_only(self) -> bool:
        return not self.built


def loaded_library_versions(maps: Path = Path("/proc/self/maps")) -> dict[str, str]:
    """Versions of libxenctrl/libxenguest mapped into this process, from their real names."""
    found: dict[str, str] = {}
    try:
        text = maps.read_text()
    except OSError:
        return found
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        path = os.path.realpath(parts[5])
        match = LIBRARY_FILE.search(path)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def availability() -> Availability:
    result = load()
    if result.binding is None:
        return Availability(False, result.error, None, {}, ())
    lib, ffi = result.binding.lib, result.binding.ffi
    built_against = ffi.string(lib.pvgrub_libxen_version()).decode()
    return Availability(
        True, None, built_against, loaded_library_versions(), tuple(sorted(result.binding.hidden))
    )
