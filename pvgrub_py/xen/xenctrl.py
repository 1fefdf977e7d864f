"""`XenCtrl`: libxenctrl's interface handle and domain calls (xenctrl.h).

It implements `interface.DomainControl`, and the two FLASK calls behind
`interface.Hypervisor.evtchn_peer_label`.  A real handle needs
``/dev/xen/privcmd`` (dom0); ``XenCtrl.dummy()`` opens an
``XC_OPENFLAG_DUMMY`` handle, which libxenguest accepts for parsing
kernels without a hypervisor (Xen tools/libs/guest/xg_dom_core.c:
``xc_dom_parse_image`` makes no hypercall), and on which every
hypercall here raises ENODEV instead of reaching libxencall's NULL handle.

Errors: libxc records a last error (``xc_get_last_error``: code and message)
besides errno.  We clear it before each call and, on failure, raise
`XenError` with errno (or, when libxc reported a code but left errno
meaningless, the errno matching the code) and libxc's message.
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pvgrub_py.xen.binding import Binding, c_string, call_error, fail, last_errno, require
from pvgrub_py.xen.interface import (
    PAGE_SIZE,
    XSM_NOT_ENABLED,
    DomainConfig,
    DomainInfo,
    XenError,
    XsmNotEnabledError,
)
from pvgrub_py.xen.toollog import XTL_DETAIL, ToolLog

#: xenctrl.h ``enum xc_error_code`` -> the errno we report when errno is unset.
XC_INTERNAL_ERROR = 1
XC_CODE_ERRNO = {1: errno_mod.EIO, 2: errno_mod.ENOEXEC, 3: errno_mod.EINVAL, 4: errno_mod.ENOMEM}
NO_HYPERCALLS = "a dummy xc_interface makes no hypercalls"
PRIVCMD_HINT = "needs /dev/xen/privcmd: run on a Xen dom0 as root"
#: Room for a FLASK context: Xen copies contexts in and out of at most a page
#: (``safe_copy_string_from_guest(..., PAGE_SIZE)`` in xen/xsm/flask/flask_op.c).
FLASK_CONTEXT_MAX = PAGE_SIZE


@dataclass(frozen=True)
class PhysInfo:
    """``xc_physinfo`` (sysctl physinfo): what ``xl info`` shows."""

    nr_cpus: int
    nr_nodes: int
    threads_per_core: int
    cores_per_socket: int
    cpu_khz: int
    capabilities: int
    total_pages: int
    free_pages: int
    max_mfn: int


class XenCtrl:
    """One ``xc_interface``; close it (or use ``with``) to release it."""

    def __init__(self, *, dummy: bool = False, log_level: int = XTL_DETAIL) -> None:
        self._b: Binding = require("xc_interface_open")
        self.dummy = dummy
        self.log = ToolLog(log_level, self._b)
        flags = self._b.lib.XC_OPENFLAG_DUMMY if dummy else 0
        handle = self._b.lib.xc_interface_open(self.log.handle, self.log.handle, flags)
        if handle == self._b.ffi.NULL:
            error = call_error(self._b, "xc_interface_open", "" if dummy else PRIVCMD_HINT)
            self.log.close()
            raise error
        self._xch: Any = handle

    @classmethod
    def open(cls) -> XenCtrl:
        return cls()

    @classmethod
    def open_dummy(cls) -> XenCtrl:
        return cls(dummy=True)

    # -- plumbing for this package ------------------------------------------------------

    @property
    def binding(self) -> Binding:
        return self._b

    @property
    def handle(self) -> Any:
        if self._xch is None:
            raise XenError(errno_mod.EBADF, "xc_interface", "handle is closed")
        return self._xch

    def begin(self) -> None:
        """Forget libxc's last error before a call, so a failure reports its own."""
        self._b.lib.xc_clear_last_error(self.handle)

    def fail(self, function: str, message: str = "") -> NoReturn:
        """Raise XenError for the call that just failed, with libxc's own message."""
        err = last_errno(self._b)
        buf = self._b.ffi.new("char[1024]")
        code = self._b.lib.pvgrub_xc_last_error(self.handle, buf, 1024)
        detail = self._b.ffi.string(buf).decode("utf-8", "replace")
        if code and (code != XC_INTERNAL_ERROR or not err):
            # libxenguest's loaders fail with a code and leave errno stale.
            err = XC_CODE_ERRNO.get(code, errno_mod.EIO)
        parts = [p for p in (message, detail) if p]
        fail(self._b, function, "; ".join(parts), err)

    def _hypercall(self, function: str) -> Any:
        if self.dummy:
            raise XenError(errno_mod.ENODEV, function, NO_HYPERCALLS)
        self.begin()
        return self.handle

    # -- host -------------------------------------------------------------------------

    def version(self) -> str:
        """The hypervisor's version, e.g. ``4.17.3-pre`` (XENVER_version + extraversion)."""
        xch = self._hypercall("xc_version")
        ffi, lib = self._b.ffi, self._b.lib
        major, minor = ffi.new("int *"), ffi.new("int *")
        if lib.pvgrub_xc_version(xch, major, minor) != 0:
            self.fail("xc_version", "XENVER_version")
        return f"{major[0]}.{minor[0]}{self._version_string(lib.XENVER_extraversion)}"

    def capabilities(self) -> list[str]:
        """XENVER_capabilities: the guest types this host runs (``xen-3.0-x86_64`` ...)."""
        return self._version_string(self._b.lib.XENVER_capabilities).split()

    def _version_string(self, cmd: int) -> str:
        xch = self._hypercall("xc_version")
        buf = self._b.ffi.new("char[1024]")
        if self._b.lib.pvgrub_xc_version_string(xch, cmd, buf, 1024) != 0:
            self.fail("xc_version")
        return c_string(self._b, buf) or ""

    def physinfo(self) -> PhysInfo:
        xch = self._hypercall("xc_physinfo")
        out = self._b.ffi.new("struct pvgrub_physinfo *")
        if self._b.lib.pvgrub_xc_physinfo(xch, out) != 0:
            self.fail("xc_physinfo")
        return PhysInfo(
            out.nr_cpus,
            out.nr_nodes,
            out.threads_per_core,
            out.cores_per_socket,
            out.cpu_khz,
            out.capabilities,
            out.total_pages,
            out.free_pages,
            out.max_mfn,
        )

    # -- DomainControl ----------------------------------------------------------------

    def create(self, config: DomainConfig) -> int:
        """``xc_domain_create``, then max vCPUs and max memory, as libxl does
        (``libxl__domain_make``, then ``libxl__build_pre``); the domain is destroyed
        if either fails.

        ``max_vcpus`` in the create call only sizes the vCPU array; the vCPUs
        themselves are allocated by ``XEN_DOMCTL_max_vcpus``.  Without it vCPU 0
        does not exist, and on real Xen 4.17 the build ended in
        ``vcpu_x86_64: SETVCPUCONTEXT failed: EINVAL`` (``xc_dom_boot_image``).

        PVH is an HVM container with HAP and only the local APIC emulated
        (as libxl creates it); PV has no flags.  ``config.name`` is not a
        hypervisor property: the toolstack writes it to xenstore.
        """
        if len(config.handle) != 16:
            raise XenError(errno_mod.EINVAL, "xc_domain_create", "handle must be 16 bytes")
        xch = self._hypercall("xc_domain_create")
        lib = self._b.lib
        flags = (lib.XEN_DOMCTL_CDF_hvm | lib.XEN_DOMCTL_CDF_hap) if config.pvh else 0
        emulation = lib.PVGRUB_PVH_EMULATION_FLAGS if config.pvh else 0
        domid = self._b.ffi.new("uint32_t *", 0)
        if (
            lib.pvgrub_xc_domain_create(
                xch, domid, flags, config.max_vcpus, config.handle, emulation
            )
            != 0
        ):
            self.fail("xc_domain_create")
        try:
            self.set_max_vcpus(domid[0], config.max_vcpus)
            self.set_max_memory(domid[0], config.max_memkb)
        except XenError:
            lib.xc_domain_destroy(xch, domid[0])
            raise
        return int(domid[0])

    def destroy(self, domid: int) -> None:
        if self._b.lib.xc_domain_destroy(self._hypercall("xc_domain_destroy"), domid) != 0:
            self.fail("xc_domain_destroy", f"domain {domid}")

    def pause(self, domid: int) -> None:
        if self._b.lib.xc_domain_pause(self._hypercall("xc_domain_pause"), domid) != 0:
            self.fail("xc_domain_pause", f"domain {domid}")

    def unpause(self, domid: int) -> None:
        if self._b.lib.xc_domain_unpause(self._hypercall("xc_domain_unpause"), domid) != 0:
            self.fail("xc_domain_unpause", f"domain {domid}")

    def set_max_memory(self, domid: int, max_memkb: int) -> None:
        xch = self._hypercall("xc_domain_setmaxmem")
        if self._b.lib.xc_domain_setmaxmem(xch, domid, max_memkb) != 0:
            self.fail("xc_domain_setmaxmem", f"domain {domid}")

    def alloc_unbound_in(self, domid: int, remote_domid: int) -> int:
        """``xc_evtchn_alloc_unbound``: a port in ``domid`` for ``remote_domid``
        to bind (the toolstack's console and xenstore ports)."""
        xch = self._hypercall("xc_evtchn_alloc_unbound")
        port = int(self._b.lib.xc_evtchn_alloc_unbound(xch, domid, remote_domid))
        if port < 0:
            self.fail("xc_evtchn_alloc_unbound", f"domain {domid} for {remote_domid}")
        return port

    def set_max_vcpus(self, domid: int, max_vcpus: int) -> None:
        xch = self._hypercall("xc_domain_max_vcpus")
        if self._b.lib.xc_domain_max_vcpus(xch, domid, max_vcpus) != 0:
            self.fail("xc_domain_max_vcpus", f"domain {domid}")

    def info(self, domid: int) -> DomainInfo:
        batch = self._list_from(domid, 1)
        if not batch or batch[0].domid != domid:
            raise XenError(errno_mod.ESRCH, "xc_domain_getinfolist", f"no domain {domid}")
        return batch[0]

    def list_domains(self) -> Sequence[DomainInfo]:
        found: list[DomainInfo] = []
        first = 0
        while True:
            batch = self._list_from(first, 64)
            found.extend(batch)
            if len(batch) < 64:
                return found
            first = batch[-1].domid + 1

    def _list_from(self, first: int, count: int) -> list[DomainInfo]:
        xch = self._hypercall("xc_domain_getinfolist")
        lib, ffi = self._b.lib, self._b.ffi
        out = ffi.new("struct pvgrub_domain_info[]", count)
        n = lib.pvgrub_xc_domain_list(xch, first, count, out)
        if n < 0:
            self.fail("xc_domain_getinfolist")
        return [
            DomainInfo(
                domid=out[i].domid,
                paused=bool(out[i].flags & lib.XEN_DOMINF_paused),
                dying=bool(out[i].flags & lib.XEN_DOMINF_dying),
                shutdown=bool(out[i].flags & lib.XEN_DOMINF_shutdown),
                max_memkb=out[i].max_pages * (PAGE_SIZE // 1024),
                tot_pages=out[i].tot_pages,
                max_vcpus=out[i].max_vcpu_id + 1,
                handle=bytes(ffi.buffer(out[i].handle, 16)),
            )
            for i in range(n)
        ]

    # -- FLASK (xsm_op) ----------------------------------------------------------------

    def flask_get_peer_sid(self, port: int) -> int:
        """``FLASK_GET_PEER_SID``: the SID of the domain at the other end of
        ``port``, a bound interdomain port of the calling domain (EINVAL
        otherwise); `XsmNotEnabledError` on a host without FLASK."""
        xch = self._hypercall("xc_flask_op")
        sid = self._b.ffi.new("uint32_t *")
        if self._b.lib.pvgrub_xc_flask_get_peer_sid(xch, port, sid) != 0:
            self._flask_fail("xc_flask_op", f"FLASK_GET_PEER_SID on port {port}")
        return int(sid[0])

    def flask_sid_to_context(self, sid: int) -> str:
        """``FLASK_SID_TO_CONTEXT`` (``xc_flask_sid_to_context``): the
        security context, e.g. ``system_u:system_r:vtpm_t``.  Xen writes it
        with its NUL; the buffer has one more zero byte so it always ends."""
        if not 0 <= sid <= 0x7FFFFFFF:  # the C call takes an int
            raise XenError(errno_mod.EINVAL, "xc_flask_sid_to_context", f"sid {sid}")
        xch = self._hypercall("xc_flask_sid_to_context")
        buf = self._b.ffi.new("char[]", FLASK_CONTEXT_MAX + 1)
        if self._b.lib.xc_flask_sid_to_context(xch, sid, buf, FLASK_CONTEXT_MAX) != 0:
            self._flask_fail("xc_flask_sid_to_context", f"FLASK_SID_TO_CONTEXT of sid {sid}")
        return c_string(self._b, buf) or ""

    def evtchn_peer_label(self, port: int) -> str:
        """The peer's context, as Mini-OS ``evtchn_get_peercontext`` reads it."""
        return self.flask_sid_to_context(self.flask_get_peer_sid(port))

    def _flask_fail(self, function: str, message: str) -> NoReturn:
        """ENOSYS is Xen's dummy XSM answering ``xsm_op`` (no FLASK): say so."""
        if last_errno(self._b) == errno_mod.ENOSYS:
            raise XsmNotEnabledError(function, f"{XSM_NOT_ENABLED} ({message})")
        self.fail(function, message)

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        if self._xch is not None:
            self._b.lib.xc_interface_close(self._xch)
            self._xch = None
            self.log.close()

    def __enter__(self) -> XenCtrl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
