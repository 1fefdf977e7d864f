"""setuptools entry point.

The cffi extension over libxenctrl/libxenguest (cbindings/) is built only when
pkg-config finds Debian's libxen-dev; without it the package installs cleanly
and runs in simulator-only mode.
"""

from setuptools import find_packages, setup

setup(
    name="pvgrub-py",
    version="0.1.0",
    description="Measured boot for Xen PV/PVH guests: a pygrub drop-in, a vTPM transport and a simulator",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["pvgrub_py", "pvgrub_py.*"]),
    package_data={"pvgrub_py": ["py.typed"]},
    install_requires=["cffi>=1.15", "pyxs==0.4.1", "cryptography>=41"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "mypy>=1.8", "ruff>=0.4"],
    },
    entry_points={
        "console_scripts": [
            "pvgrub-py=pvgrub_py.cli.bootloader:main",
            "pvgrubctl=pvgrub_py.cli.pvgrubctl:main",
        ],
    },
)
