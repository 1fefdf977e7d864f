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
    return lazy_attributes(package, {name: f"{package}.{sub}" for name, sub in exports.items()})


def lazy_attributes(owner: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for the module *owner*: each name of *exports* is
    imported from the module it maps to (a full name) when first asked for.

    Also what keeps a `typing.Protocol` off a boot's critical path: the
    module defining it (which imports `typing`) is run only by the first
    run-time use of the name (an ``isinstance``, a test); annotations name
    it under ``if TYPE_CHECKING:`` only.
    """

    def __getattr__(name: str) -> Any:
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {owner!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        importlib.import_module(owner).__dict__[name] = value  # later lookups skip this
        return value

    return __getattr__
