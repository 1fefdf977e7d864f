"""`XenEventChannels`: libxenevtchn (xenevtchn.h) through ``/dev/xen/evtchn``.

Implements `interface.EventChannels`.  ``wait`` selects on the handle's fd
and only then calls ``xenevtchn_pending`` (which would otherwise block);
the port it returns is masked until ``unmask``, as tpmfront/tpmback expect.
"""

from __future__ import annotations

import errno as errno_mod
import select
from typing import Any

from pvgrub_py.xen.binding import Binding, call_error, fail, require
from pvgrub_py.xen.interface import XenError
from pvgrub_py.xen.toollog import ToolLog

EVTCHN_HINT = "needs /dev/xen/evtchn: run in a Xen domain with the xen-evtchn driver"


class XenEventChannels:
    def __init__(self) -> None:
        self._b: Binding = require("xenevtchn_open")
        self.log = ToolLog(binding=self._b)
        handle = self._b.lib.xenevtchn_open(self.log.handle, 0)
        if handle == self._b.ffi.NULL:
            error = call_error(self._b, "xenevtchn_open", EVTCHN_HINT)
            self.log.close()
            raise error
        self._h: Any = handle

    def _handle(self) -> Any:
        if self._h is None:
            raise XenError(errno_mod.EBADF, "xenevtchn", "handle is closed")
        return self._h

    def _port(self, rc: int, function: str, message: str) -> int:
        if rc < 0:
            fail(self._b, function, message)
        return rc

    def alloc_unbound(self, remote_domid: int) -> int:
        rc = self._b.lib.xenevtchn_bind_unbound_port(self._handle(), remote_domid)
        return self._port(rc, "xenevtchn_bind_unbound_port", f"for domain {remote_domid}")

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        rc = self._b.lib.xenevtchn_bind_interdomain(self._handle(), remote_domid, remote_port)
        return self._port(
            rc, "xenevtchn_bind_interdomain", f"domain {remote_domid} port {remote_port}"
        )

    def notify(self, port: int) -> None:
        if self._b.lib.xenevtchn_notify(self._handle(), port) != 0:
            fail(self._b, "xenevtchn_notify", f"port {port}")

    def wait(self, timeout: float | None) -> int | None:
        ready, _, _ = select.select([self.fileno()], [], [], timeout)
        if not ready:
            return None
        return self._port(self._b.lib.xenevtchn_pending(self._handle()), "xenevtchn_pending", "")

    def unmask(self, port: int) -> None:
        if self._b.lib.xenevtchn_unmask(self._handle(), port) != 0:
            fail(self._b, "xenevtchn_unmask", f"port {port}")

    def unbind(self, port: int) -> None:
        if self._b.lib.xenevtchn_unbind(self._handle(), port) != 0:
            fail(self._b, "xenevtchn_unbind", f"port {port}")

    def fileno(self) -> int:
        fd = self._b.lib.xenevtchn_fd(self._handle())
        if fd < 0:
            fail(self._b, "xenevtchn_fd")
        return int(fd)

    def close(self) -> None:
        if self._h is not None:
            self._b.lib.xenevtchn_close(self._h)
            self._h = None
            self.log.close()

    def abandon(self) -> None:
        """Forget the handle, open, its ports bound (`interface.EventChannels.abandon`):
        its descriptor and its small allocation are left to the process's exit."""
        self._h = None

    def __enter__(self) -> XenEventChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
