"""setuptools entry point.

The cffi extension over the Xen libraries (cbindings/, built as
``pvgrub_py._xen_cffi``) is built only when pkg-config finds Debian's
libxen-dev and a C compiler with Python's headers are there; without them the
package installs cleanly and runs in simulator-only mode (``pvgrubctl doctor``
says which).
"""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import find_packages, setup

#: pkg-config names whose presence means the Xen headers and libraries are here.
XEN_PKG_CONFIG = ("xencontrol", "xenguest")


def have_libxen() -> bool:
    try:
        done = subprocess.run(["pkg-config", "--exists", *XEN_PKG_CONFIG], check=False)
    except OSError:
        return False
    return done.returncode == 0


def can_compile() -> bool:
    """A C compiler and Python's headers: what building the extension needs beside libxen."""
    compiler = os.environ.get("CC", sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.is_file()


# setup_requires is how a PEP 517 build (pip's isolated build env) learns it
# needs cffi to run cffi_modules; pyproject.toml stays generic.
xen_build = (
    {"setup_requires": ["cffi>=1.15"], "cffi_modules": ["cbindings/build.py:ffibuilder"]}
    if have_libxen() and can_compile()
    else {}
)

setup(
    name="pvgrub-py",
    version="0.1.0",
    description="Measured boot for Xen PV/PVH guests: a pygrub drop-in, a vTPM transport and a simulator",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["pvgrub_py", "pvgrub_py.*"]),
    package_data={"pvgrub_py": ["py.typed", "_xen_cffi.pyi"]},
    install_requires=[
        "cffi>=1.15",
        "pyxs==0.4.1",
        # Quote signatures and AK public keys (pvgrub_py/attest).
        "cryptography>=41",
        # bzImage payload decompressors beyond the stdlib (gzip, bzip2, xz, lzma).
        "zstandard>=0.22",
        "lz4>=4.3",
        # Guest disk readers (pvgrub_py/disk): Dissect (AGPL-3.0-or-later) and pycdlib;
        # ext2/3/4 is our own (pvgrub_py/disk/readers/ext4.py).
        "dissect.xfs>=3.13,<4",
        "dissect.btrfs>=1.10,<2",
        "dissect.fat>=3.13,<4",
        "dissect.volume>=3.18,<4",
        "dissect.hypervisor>=3.21,<4",
        "dissect.util>=3.24,<4",
        "pycdlib>=1.14,<2",
    ],
    extras_require={
        "test": [
            "pytest>=7", "hypothesis>=6", "atheris>=2.3", "mypy>=1.8", "ruff>=0.4",
            "pyyaml>=6",  # for Keylime, the attestation oracle (see the Makefile)
            "dissect.extfs>=3.15,<4",  # the oracle of our ext2/3/4 reader
        ],
        # pvgrubctl attest challenge/activate/quote: tpm2-tss's ESAPI and MakeCredential.
        # It builds against the system's libtss2 (Debian: libtss2-dev); 2.x builds
        # against bookworm's tpm2-tss 3.2.1.
        "attest": ["tpm2-pytss>=2.3.0,<3"],
    },
    entry_points={
        "console_scripts": [
            "pvgrub-py=pvgrub_py.cli.bootloader:main",
            "pvgrubctl=pvgrub_py.cli.pvgrubctl:main",
            "pvgrub-guest-tpm=pvgrub_py.cli.guest_tpm:main",
        ],
    },
    **xen_build,
)
