"""`XenStoreC`: the `interface.XenStore` operations through libxenstore (xenstore.h).

A second client beside pyxs, linked to the library every Xen tool uses, so
our xenstored is held to what C clients send and expect.  ``xs_open(0)``
connects to ``$XENSTORED_PATH`` (default ``/var/run/xenstored/socket``)
and falls back to ``/dev/xen/xenbus``.

libxenstore reports failure as NULL/false with errno set (ENOENT for a
missing node, EACCES, EINVAL...); reads of a missing node return None as
the interface asks, everything else raises `XenError`.  Permissions use
xs_wire's text form: a letter (``n``, ``r``, ``w``, ``b``) and a domid.
"""

from __future__ import annotations

import errno as errno_mod
import os
import re
import select
import time
from collections.abc import Sequence
from typing import Any

from pvgrub_py.xen.binding import Binding, call_error, fail, last_errno, require
from pvgrub_py.xen.interface import WatchEvent, XenError

DEFAULT_SOCKET = "/var/run/xenstored/socket"
_PERM = re.compile(r"([nrwb])(\d{1,5})")
_LETTERS = {0: "n", 1: "r", 2: "w", 3: "b"}


def socket_path() -> str:
    """Where libxenstore will connect, as ``xs_daemon_socket()`` decides."""
    return os.environ.get("XENSTORED_PATH", DEFAULT_SOCKET)


class XenStoreC:
    """One ``struct xs_handle``; close it (or use ``with``)."""

    def __init__(self) -> None:
        self._b: Binding = require("xs_open")
        handle = self._b.lib.xs_open(0)
        if handle == self._b.ffi.NULL:
            raise call_error(
                self._b, "xs_open", f"no xenstored at {socket_path()} and no /dev/xen/xenbus"
            )
        self._h: Any = handle
        self._xbt = self._b.lib.XBT_NULL

    def _handle(self) -> Any:
        if self._h is None:
            raise XenError(errno_mod.EBADF, "xs_handle", "handle is closed")
        return self._h

    def _take_string(self, pointer: Any, size: int | None = None) -> bytes:
        ffi = self._b.ffi
        try:
            data: bytes = (
                ffi.unpack(ffi.cast("char *", pointer), size)
                if size is not None
                else ffi.string(pointer)
            )
        finally:
            self._b.lib.free(pointer)
        return data

    def read(self, path: str) -> bytes | None:
        length = self._b.ffi.new("unsigned int *")
        value = self._b.lib.xs_read(self._handle(), self._xbt, path.encode(), length)
        if value == self._b.ffi.NULL:
            if last_errno(self._b) == errno_mod.ENOENT:
                return None
            fail(self._b, "xs_read", path)
        return self._take_string(value, length[0])

    def write(self, path: str, value: bytes) -> None:
        if not self._b.lib.xs_write(self._handle(), self._xbt, path.encode(), value, len(value)):
            fail(self._b, "xs_write", path)

    def mkdir(self, path: str) -> None:
        if not self._b.lib.xs_mkdir(self._handle(), self._xbt, path.encode()):
            fail(self._b, "xs_mkdir", path)

    def rm(self, path: str) -> None:
        if not self._b.lib.xs_rm(self._handle(), self._xbt, path.encode()):
            fail(self._b, "xs_rm", path)

    def directory(self, path: str) -> list[str] | None:
        num = self._b.ffi.new("unsigned int *")
        entries = self._b.lib.xs_directory(self._handle(), self._xbt, path.encode(), num)
        if entries == self._b.ffi.NULL:
            if last_errno(self._b) == errno_mod.ENOENT:
                return None
            fail(self._b, "xs_directory", path)
        try:
            return [self._b.ffi.string(entries[i]).decode() for i in range(num[0])]
        finally:
            self._b.lib.free(entries)  # one allocation holds the array and the strings

    def get_perms(self, path: str) -> list[str]:
        num = self._b.ffi.new("unsigned int *")
        perms = self._b.lib.xs_get_permissions(self._handle(), self._xbt, path.encode(), num)
        if perms == self._b.ffi.NULL:
            fail(self._b, "xs_get_permissions", path)
        try:
            return [f"{_LETTERS[perms[i].perms & 3]}{perms[i].id}" for i in range(num[0])]
        finally:
            self._b.lib.free(perms)

    def set_perms(self, path: str, perms: Sequence[str]) -> None:
        parsed = [_PERM.fullmatch(p) for p in perms]
        if not perms or not all(parsed):
            raise XenError(errno_mod.EINVAL, "xs_set_permissions", f"{path}: bad perms {perms!r}")
        array = self._b.ffi.new("struct xs_permissions[]", len(perms))
        letter_bits = {v: k for k, v in _LETTERS.items()}
        for i, match in enumerate(parsed):
            assert match is not None
            array[i].id = int(match.group(2))
            array[i].perms = letter_bits[match.group(1)]
        if not self._b.lib.xs_set_permissions(
            self._handle(), self._xbt, path.encode(), array, len(perms)
        ):
            fail(self._b, "xs_set_permissions", path)

    def get_domain_path(self, domid: int) -> str:
        path = self._b.lib.xs_get_domain_path(self._handle(), domid)
        if path == self._b.ffi.NULL:
            fail(self._b, "xs_get_domain_path", f"domain {domid}")
        return self._take_string(path).decode()

    def introduce_domain(self, domid: int, mfn: int, port: int) -> None:
        if not self._b.lib.xs_introduce_domain(self._handle(), domid, mfn, port):
            fail(self._b, "xs_introduce_domain", f"domain {domid}")

    def release_domain(self, domid: int) -> None:
        if not self._b.lib.xs_release_domain(self._handle(), domid):
            fail(self._b, "xs_release_domain", f"domain {domid}")

    def watch(self, path: str, token: str) -> None:
        if not self._b.lib.xs_watch(self._handle(), path.encode(), token.encode()):
            fail(self._b, "xs_watch", path)

    def unwatch(self, path: str, token: str) -> None:
        if not self._b.lib.xs_unwatch(self._handle(), path.encode(), token.encode()):
            fail(self._b, "xs_unwatch", path)

    def fileno(self) -> int:
        fd = self._b.lib.xs_fileno(self._handle())
        if fd < 0:
            fail(self._b, "xs_fileno")
        return int(fd)

    def wait_event(self, timeout: float | None) -> WatchEvent | None:
        """The next watch event: ``xs_check_watch``, sleeping on ``xs_fileno`` between tries."""
        lib, ffi = self._b.lib, self._b.ffi
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.fileno()
        while True:
            vec = lib.xs_check_watch(self._handle())
            if vec != ffi.NULL:
                try:
                    path = ffi.string(vec[lib.XS_WATCH_PATH]).decode()
                    token = ffi.string(vec[lib.XS_WATCH_TOKEN]).decode()
                finally:
                    lib.free(vec)
                return WatchEvent(path, token)
            if last_errno(self._b) != errno_mod.EAGAIN:
                fail(self._b, "xs_check_watch")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready and remaining is not None:
                return None

    def close(self) -> None:
        if self._h is not None:
            self._b.lib.xs_close(self._h)
            self._h = None

    def __enter__(self) -> XenStoreC:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
