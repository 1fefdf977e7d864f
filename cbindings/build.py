"""The one cffi builder: every Xen library into ``pvgrub_py._xen_cffi``.

setup.py names ``cbindings/build.py:ffibuilder`` in ``cffi_modules`` only
when ``pkg-config --exists xencontrol xenguest`` succeeds.  API mode: the
C compiler checks every declaration against the installed headers (libxen-dev),
so a layout or signature that differs in this Xen release fails the build
instead of corrupting memory at run time.

One module per C library (xentoollog, xenctrl, xenguest, xengnttab,
xenevtchn, xenstore), each exporting INCLUDES, TYPES, OWN_TYPES (our plain
structs, compiled on both sides), FUNCTIONS and CUSTOMIZATIONS as
pyca/cryptography's ``_cffi_src`` does; release differences are gated
through ``pvgrub_py/xen/_conditional.py``.

Run directly (``python3 cbindings/build.py``) to compile in place.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from cbindings import xenctrl, xenevtchn, xengnttab, xenguest, xenstore, xentoollog  # noqa: E402
from pvgrub_py.xen._conditional import CONDITIONAL_NAMES  # noqa: E402

MODULE_NAME = "pvgrub_py._xen_cffi"
#: pkg-config names (Debian libxen-dev) and the libraries they link.
PKG_CONFIG_NAMES = ("xencontrol", "xenguest", "xengnttab", "xenevtchn", "xenstore", "xentoollog")
FALLBACK_LIBRARIES = ("xenctrl", "xenguest", "xengnttab", "xenevtchn", "xenstore", "xentoollog")
#: Order matters: later cdefs use types declared by earlier ones.
MODULES = (xentoollog, xenctrl, xenguest, xengnttab, xenevtchn, xenstore)


def pkg_config(*args: str) -> str:
    try:
        done = subprocess.run(["pkg-config", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def libxen_version() -> str:
    return pkg_config("--modversion", "xencontrol") or "unknown"


def version_hex(version: str) -> int:
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    return (parts[0] << 16) | (parts[1] << 8) | parts[2]


VERSION_CDEF = """
const char *pvgrub_libxen_version(void);
static const long PVGRUB_LIBXEN_VERSION_HEX;
"""


def build_ffi() -> FFI:
    version = libxen_version()
    cflags = shlex.split(pkg_config("--cflags", *PKG_CONFIG_NAMES))
    libs = shlex.split(pkg_config("--libs", *PKG_CONFIG_NAMES))
    libraries = [a[2:] for a in libs if a.startswith("-l")] or list(FALLBACK_LIBRARIES)
    library_dirs = [a[2:] for a in libs if a.startswith("-L")]
    include_dirs = [a[2:] for a in cflags if a.startswith("-I")]

    cdef = "".join(m.TYPES + m.OWN_TYPES for m in MODULES)
    cdef += "".join(m.FUNCTIONS for m in MODULES)
    cdef += VERSION_CDEF
    for flag, names in CONDITIONAL_NAMES.items():
        if flag not in cdef:
            raise SystemExit(f"cbindings: {flag} is in _conditional.py but in no cdef")
        for name in names:
            if not re.search(rf"\b{name}\(", cdef):
                raise SystemExit(f"cbindings: {name} is in _conditional.py but in no cdef")

    source = "".join(m.INCLUDES for m in MODULES)
    source += "".join(m.OWN_TYPES for m in MODULES)
    source += f"""
static const char *pvgrub_libxen_version(void) {{ return "{version}"; }}
static const long PVGRUB_LIBXEN_VERSION_HEX = {version_hex(version):#x};
"""
    source += "".join(m.CUSTOMIZATIONS for m in MODULES)

    ffi = FFI()
    ffi.cdef(cdef)
    ffi.set_source(
        MODULE_NAME,
        source,
        libraries=libraries,
        library_dirs=library_dirs,
        include_dirs=include_dirs,
        extra_compile_args=[a for a in cflags if not a.startswith("-I")] + ["-Wno-unused-function"],
    )
    return ffi


ffibuilder = build_ffi()

if __name__ == "__main__":
    os.chdir(ROOT)
    ffibuilder.compile(verbose=True)
