"""An in-memory xentoollog logger for every Xen library handle we open.

With a NULL logger the Xen libraries print to stderr; a bootloader's stderr
is read by libxl (Xen tools/libs/light/libxl_bootloader.c,
``bootloader_gotptys``: it is the pty libxl relays to the console), and our
CLIs promise one-line errors, so
each handle gets one of these instead.  `text` is also how the libxenguest
backend learns what libelf found (see cbindings/xentoollog.py).
"""

from __future__ import annotations

from typing import Any

from pvgrub_py.xen.binding import Binding, require

#: xentoollog.h levels, without importing the extension.
XTL_DEBUG, XTL_VERBOSE, XTL_DETAIL, XTL_PROGRESS, XTL_INFO = 1, 2, 3, 4, 5
XTL_NOTICE, XTL_WARN, XTL_ERROR, XTL_CRITICAL = 6, 7, 8, 9


class ToolLog:
    """A bounded buffer of ``level<TAB>context<TAB>message`` lines."""

    def __init__(self, min_level: int = XTL_DETAIL, binding: Binding | None = None) -> None:
        self._b = binding or require("xtl_createlogger")
        self._logger: Any = self._b.lib.pvgrub_log_new(min_level)
        if self._logger == self._b.ffi.NULL:
            raise MemoryError("pvgrub_log_new")

    @property
    def handle(self) -> Any:
        """The ``xentoollog_logger *`` to pass to ``*_open`` (package-internal)."""
        if self._logger is None:
            raise ValueError("logger is closed")
        return self._logger

    def text(self) -> str:
        if self._logger is None:
            return ""
        ffi = self._b.ffi
        size, truncated = ffi.new("size_t *"), ffi.new("int *")
        ptr = self._b.lib.pvgrub_log_text(self._logger, size, truncated)
        data: bytes = ffi.unpack(ptr, size[0]) if size[0] else b""
        return data.decode("utf-8", "replace")

    def lines(self) -> list[tuple[int, str, str]]:
        """(level, context, message) per logged line."""
        out = []
        for line in self.text().splitlines():
            level, _, rest = line.partition("\t")
            context, _, message = rest.partition("\t")
            out.append((int(level) if level.isdigit() else 0, context, message))
        return out

    def errors(self) -> list[str]:
        return [m for level, _, m in self.lines() if level >= XTL_ERROR]

    def clear(self) -> None:
        if self._logger is not None:
            self._b.lib.pvgrub_log_clear(self._logger)

    def close(self) -> None:
        if self._logger is not None:
            self._b.lib.xtl_logger_destroy(self._logger)
            self._logger = None
