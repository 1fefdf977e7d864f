"""Package exports that are imported on first use, not with the package.

``import pvgrub_py.bootcfg.entry`` runs ``pvgrub_py/bootcfg/__init__.py``
first; if that imported every parser, the bootloader would pay for all of
them (GRUB 2 interpreter, BLS, extlinux, menu.lst) before it knows which
config the disk holds.  A package instead lists its exports as
``name -> submodule`` and installs `lazy_exports`' ``__getattr__``
(PEP 562): ``from pvgrub_py.bootcfg import parse_grub2`` still works, and
imports ``pvgrub_py.bootcfg.grub2`` at that moment.  Type checkers see the
same names through the package's ``if TYPE_CHECKING:`` imports.

A name that is also a submodule's name (``bootcfg.select``) must be
imported eagerly: importing the submodule sets the package attribute to the
module, and ``__getattr__`` is never asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving *exports* (name -> submodule of *package*)."""

    def __getattr__(name: str) -> Any:
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later lookups skip __getattr__
        return value

    return __getattr__
