"""The one place that imports the cffi extension and turns failures into XenError.

Like xattr's single ``OSError(ffi.errno, ...)`` call site and pynacl's
``ensure``: every wrapper in this package calls `check` (or `fail`, or
`call_error` when it must clean up before raising) right after the C call, while
``ffi.errno`` still holds the errno that call left (cffi saves it per thread
after each call).  `last_errno` is the only reader of ``ffi.errno``: a
wrapper that branches on the errno (libxenstore's ENOENT for a missing node)
asks it too.  Names that this Xen release lacks
(`_conditional.CONDITIONAL_NAMES`) are hidden from `Binding.lib`, so using
one raises `XenError(ENOSYS)` instead of calling through NULL.

`Binding.ffi` and `Binding.lib` are typed by the extension's stub
(``pvgrub_py/_xen_cffi.pyi``), so mypy checks every C call's name and arity.
Nothing outside ``pvgrub_py.xen`` imports this module's ``ffi``.
"""

from __future__ import annotations

import errno as errno_mod
import importlib
import types
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn, cast

from pvgrub_py.xen._conditional import CONDITIONAL_NAMES
from pvgrub_py.xen.interface import XenError

if TYPE_CHECKING:
    from pvgrub_py._xen_cffi import FFI, Lib

MODULE_NAME = "pvgrub_py._xen_cffi"
NOT_BUILT_HINT = (
    "pvgrub-py was installed without its Xen bindings; install Debian's libxen-dev "
    "and pkg-config, then reinstall (pip install .)"
)


@dataclass(frozen=True)
class Binding:
    """The compiled module: ``ffi`` and a ``lib`` without this release's missing names."""

    ffi: FFI
    lib: Lib
    hidden: frozenset[str]


@dataclass(frozen=True)
class LoadResult:
    binding: Binding | None
    error: str | None  # why it is None


def _conditional_lib(lib: object) -> tuple[Lib, frozenset[str]]:
    hidden = {
        name
        for flag, names in CONDITIONAL_NAMES.items()
        if not getattr(lib, flag, 0)
        for name in names
    }
    filtered = types.ModuleType(f"{MODULE_NAME}.lib")
    for name in dir(lib):
        if name not in hidden:
            setattr(filtered, name, getattr(lib, name))
    return cast("Lib", filtered), frozenset(hidden)


@cache
def load() -> LoadResult:
    """Import the extension once; remember why not if it fails."""
    try:
        _xen_cffi = importlib.import_module(MODULE_NAME)
    except ImportError as e:
        return LoadResult(None, f"{MODULE_NAME} is not importable: {e}")
    lib, hidden = _conditional_lib(_xen_cffi.lib)
    return LoadResult(Binding(_xen_cffi.ffi, lib, hidden), None)


def require(function: str) -> Binding:
    """The binding, or XenError(ENOSYS) naming what could not run and why."""
    result = load()
    if result.binding is None:
        raise XenError(errno_mod.ENOSYS, function, f"{result.error}; {NOT_BUILT_HINT}")
    return result.binding


def function(binding: Binding, name: str) -> Any:
    """``lib.name``, or XenError(ENOSYS) when this Xen release does not have it."""
    if name in binding.hidden or not hasattr(binding.lib, name):
        raise XenError(errno_mod.ENOSYS, name, "not provided by this Xen release's libraries")
    return getattr(binding.lib, name)


def last_errno(binding: Binding) -> int:
    """The errno the last C call on this thread left: the one read of ``ffi.errno``."""
    return binding.ffi.errno


def call_error(
    binding: Binding, function: str, message: str = "", err: int | None = None
) -> XenError:
    """The XenError for the C call that just failed: ``err``, or the errno it left
    (EIO if it left none).  Build it before any clean-up call that may change errno."""
    code = last_errno(binding) if err is None else err
    return XenError(code or errno_mod.EIO, function, message)


def fail(binding: Binding, function: str, message: str = "", err: int | None = None) -> NoReturn:
    """Raise `call_error` for the C call that just failed."""
    raise call_error(binding, function, message, err)


def check(binding: Binding, ok: bool, function: str, message: str = "") -> None:
    if not ok:
        fail(binding, function, message)


def c_string(binding: Binding, pointer: Any) -> str | None:
    """A NUL-terminated C string as text (None for NULL); bytes kept by surrogateescape."""
    if pointer == binding.ffi.NULL:
        return None
    text: str = binding.ffi.string(pointer).decode("utf-8", "surrogateescape")
    return text
