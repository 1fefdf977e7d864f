"""`DomainImage`: libxenguest's ``struct xc_dom_image`` lifecycle (xenguest.h).

The order is libxenguest's (Xen tools/libs/guest/xg_dom_compat_linux.c,
``xc_linux_build``):
allocate -> kernel/module -> boot_xen_init -> parse_image -> mem_init ->
boot_mem_init -> build_image -> boot_image -> gnttab_init -> release.
From ``boot_xen_init`` on, calls need a hypervisor (Xen
tools/libs/guest/xg_dom_boot.c: ``xc_dom_boot_xen_init`` calls
``xc_version``; xg_dom_x86.c's ``meminit_pv`` populates the physmap); on a
dummy `XenCtrl` we stop after ``parse_image``, providing ``xen_caps``
ourselves (``set_xen_caps``) since ``parse_image`` ends with
``xc_dom_compat_check`` against them.

pv-grub measures the kernel before it parses it (Xen stubdom/grub/kexec.c,
``kexec()``: ``tpm_hash2pcr`` comes before ``xc_dom_boot_xen_init`` and
``xc_dom_parse_image``);
callers do the same: hash the bytes, then hand these very bytes to
`kernel_mem`, so what was measured is what libxenguest parses.

The image is a context manager and ``xc_dom_release`` always runs on exit.
libxenguest keeps pointers to the kernel and module buffers we pass, so we
hold references to them until release.
"""

from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import dataclass
from typing import Any

from pvgrub_py.xen.binding import c_string, function
from pvgrub_py.xen.interface import XenError
from pvgrub_py.xen.xenctrl import NO_HYPERCALLS, XenCtrl

#: elf_dom_parms' UNSET_ADDR: the note was absent.
UNSET_ADDR = (1 << 64) - 1
#: XENVER_capabilities of an x86_64 Xen host with HVM support: what a dummy
#: handle parses against.
X86_64_HOST_CAPS = "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"


@dataclass(frozen=True)
class Segment:
    """``struct xc_dom_seg``: guest virtual range and the pfns it occupies."""

    vstart: int
    vend: int
    pfn: int
    pages: int


@dataclass(frozen=True)
class MagicPages:
    """Where ``xc_dom_build_image`` put start_info, console and xenstore."""

    start_info_pfn: int
    console_pfn: int
    xenstore_pfn: int
    shared_info_pfn: int
    console_mfn: int | None
    xenstore_mfn: int | None
    total_pages: int


class DomainImage:
    """A ``struct xc_dom_image *`` owned by Python; release on ``close``/exit."""

    def __init__(self, xc: XenCtrl, cmdline: str = "", features: str = "") -> None:
        self._xc = xc
        self._b = xc.binding
        self._buffers: list[Any] = []  # kept alive: libxenguest points into them
        xc.begin()
        dom = self._b.lib.xc_dom_allocate(xc.handle, cmdline.encode(), features.encode())
        if dom == self._b.ffi.NULL:
            xc.fail("xc_dom_allocate")
        self._dom: Any = dom

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """``xc_dom_release``: frees libxenguest's memory, unmaps guest pages."""
        if self._dom is not None:
            self._b.lib.xc_dom_release(self._dom)
            self._dom = None
            self._buffers.clear()

    release = close

    def __enter__(self) -> DomainImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _handle(self) -> Any:
        if self._dom is None:
            raise XenError(errno_mod.EBADF, "xc_dom_image", "image already released")
        return self._dom

    def _call(self, name: str, *args: Any, message: str = "") -> int:
        fn = function(self._b, name)
        self._xc.begin()
        rc: int = fn(self._handle, *args)
        if rc != 0:
            self._xc.fail(name, message)
        return rc

    # -- inputs -----------------------------------------------------------------------

    def kernel_max_size(self, size: int) -> None:
        """Cap on the kernel as loaded and decompressed (0: none; default 1 GiB)."""
        self._call("xc_dom_kernel_max_size", size)

    def module_max_size(self, size: int) -> None:
        self._call("xc_dom_module_max_size", size)

    def kernel_mem(self, data: bytes | bytearray | memoryview) -> None:
        """Load from memory; a whole-file gzip is inflated (``xc_dom_try_gunzip``)."""
        buf = self._b.ffi.from_buffer(data)
        self._buffers.append(buf)
        self._call("xc_dom_kernel_mem", buf, len(buf))

    def kernel_file(self, path: str | os.PathLike[str]) -> None:
        self._call("xc_dom_kernel_file", os.fsencode(path), message=os.fspath(path))

    def module_mem(self, data: bytes | bytearray | memoryview, cmdline: str = "") -> None:
        """The initrd (modules[0]); before Xen 4.13 the single ramdisk."""
        buf = self._b.ffi.from_buffer(data)
        self._buffers.append(buf)
        if self._b.lib.PVGRUB_HAS_XC_DOM_MODULE_MEM:
            self._call("xc_dom_module_mem", buf, len(buf), cmdline.encode() or self._b.ffi.NULL)
        elif cmdline:
            raise XenError(errno_mod.ENOSYS, "xc_dom_ramdisk_mem", "no module cmdline before 4.13")
        else:
            self._call("xc_dom_ramdisk_mem", buf, len(buf))

    def module_file(self, path: str | os.PathLike[str], cmdline: str = "") -> None:
        name = os.fsencode(path)
        if self._b.lib.PVGRUB_HAS_XC_DOM_MODULE_MEM:
            self._call(
                "xc_dom_module_file",
                name,
                cmdline.encode() or self._b.ffi.NULL,
                message=os.fspath(path),
            )
        elif cmdline:
            raise XenError(errno_mod.ENOSYS, "xc_dom_ramdisk_file", "no module cmdline before 4.13")
        else:
            self._call("xc_dom_ramdisk_file", name, message=os.fspath(path))

    def set_container(self, hvm: bool) -> None:
        """PV container, or HVM (what a PVH guest is built in: ``hvm-3.0-x86_32``)."""
        self._b.lib.pvgrub_dom_set_container(self._handle, 1 if hvm else 0)

    def set_xen_caps(self, caps: str = X86_64_HOST_CAPS) -> None:
        """Stand in for ``boot_xen_init``'s XENVER_capabilities on a dummy handle."""
        if self._b.lib.pvgrub_dom_set_xen_caps(self._handle, caps.encode()) != 0:
            raise XenError(errno_mod.E2BIG, "xen_caps", "capabilities string too long")

    def set_boot_params(
        self,
        *,
        flags: int = 0,
        console_evtchn: int = 0,
        xenstore_evtchn: int = 0,
        console_domid: int = 0,
        xenstore_domid: int = 0,
        max_vcpus: int = 1,
    ) -> None:
        """The fields libxl and pv-grub assign directly.

        Xen stubdom/grub/kexec.c ``kexec()`` (flags and event channels);
        tools/libs/light/libxl_dom.c ``libxl__build_pv`` (also the console and
        xenstore domids and ``max_vcpus``).
        """
        self._b.lib.pvgrub_dom_set_boot_params(
            self._handle,
            flags,
            console_evtchn,
            xenstore_evtchn,
            console_domid,
            xenstore_domid,
            max_vcpus,
        )

    # -- the build sequence -----------------------------------------------------------

    def boot_xen_init(self, domid: int) -> None:
        """Reads the hypervisor's version and capabilities (a hypercall)."""
        if self._xc.dummy:
            raise XenError(errno_mod.ENODEV, "xc_dom_boot_xen_init", NO_HYPERCALLS)
        fn = function(self._b, "xc_dom_boot_xen_init")
        self._xc.begin()
        if fn(self._handle, self._xc.handle, domid) != 0:
            self._xc.fail("xc_dom_boot_xen_init", f"domain {domid}")

    def parse_image(self) -> None:
        """Find a loader (bzImage, ELF), decompress, read the Xen notes, check compat."""
        self._call("xc_dom_parse_image")

    def mem_init(self, mem_mb: int) -> None:
        self._call("xc_dom_mem_init", mem_mb)

    def boot_mem_init(self) -> None:
        self._call("xc_dom_boot_mem_init")

    def build_image(self) -> None:
        self._call("xc_dom_build_image")

    def boot_image(self) -> None:
        self._call("xc_dom_boot_image")

    def gnttab_init(self) -> None:
        self._call("xc_dom_gnttab_init")

    # -- what libxenguest found -------------------------------------------------------

    @property
    def guest_type(self) -> str | None:
        return c_string(self._b, self._b.lib.pvgrub_dom_guest_type(self._handle))

    @property
    def kernel_segment(self) -> Segment:
        out = self._b.ffi.new("struct pvgrub_seg *")
        self._b.lib.pvgrub_dom_kernel_seg(self._handle, out)
        return Segment(out.vstart, out.vend, out.pfn, out.pages)

    @property
    def kernel_size(self) -> int:
        size = self._b.ffi.new("size_t *")
        self._b.lib.pvgrub_dom_kernel_blob(self._handle, size)
        return int(size[0])

    def kernel_bytes(self) -> bytes:
        """A copy of ``kernel_blob``: after ``parse_image``, the decompressed ELF."""
        size = self._b.ffi.new("size_t *")
        ptr = self._b.lib.pvgrub_dom_kernel_blob(self._handle, size)
        if ptr == self._b.ffi.NULL:
            return b""
        return bytes(self._b.ffi.buffer(ptr, size[0]))

    @staticmethod
    def _addr(value: int) -> int | None:
        return None if value == UNSET_ADDR else value

    @property
    def virt_base(self) -> int | None:
        return self._addr(self._b.lib.xc_dom_virt_base(self._handle))

    @property
    def virt_entry(self) -> int | None:
        return self._addr(self._b.lib.xc_dom_virt_entry(self._handle))

    @property
    def virt_hypercall(self) -> int | None:
        return self._addr(self._b.lib.xc_dom_virt_hypercall(self._handle))

    @property
    def guest_os(self) -> str | None:
        return c_string(self._b, self._b.lib.xc_dom_guest_os(self._handle))

    def feature(self, nr: int) -> bool:
        """``xc_dom_feature_get``: XENFEAT bit ``nr`` supported by the kernel."""
        return bool(self._b.lib.xc_dom_feature_get(self._handle, nr))

    @property
    def features_active(self) -> int:
        """``f_active[0]``: requested plus the kernel's required features."""
        return int(self._b.lib.pvgrub_dom_features_active(self._handle, 0))

    @property
    def magic_pages(self) -> MagicPages:
        out = self._b.ffi.new("struct pvgrub_dom_pfns *")
        self._b.lib.pvgrub_dom_pfns(self._handle, out)
        return MagicPages(
            out.start_info_pfn,
            out.console_pfn,
            out.xenstore_pfn,
            out.shared_info_pfn,
            self._addr(out.console_mfn),
            self._addr(out.xenstore_mfn),
            out.total_pages,
        )

    @property
    def module_sizes(self) -> list[int]:
        lib, dom = self._b.lib, self._handle
        return [lib.pvgrub_dom_module_size(dom, i) for i in range(lib.pvgrub_dom_num_modules(dom))]


def gnttab_seed(
    xc: XenCtrl,
    guest_domid: int,
    *,
    is_hvm: bool,
    console_gfn: int,
    xenstore_gfn: int,
    console_domid: int = 0,
    xenstore_domid: int = 0,
) -> None:
    """``xc_dom_gnttab_seed``: fill the reserved console/xenstore grant entries."""
    if xc.dummy:
        raise XenError(errno_mod.ENODEV, "xc_dom_gnttab_seed", NO_HYPERCALLS)
    xc.begin()
    rc = xc.binding.lib.xc_dom_gnttab_seed(
        xc.handle, guest_domid, is_hvm, console_gfn, xenstore_gfn, console_domid, xenstore_domid
    )
    if rc != 0:
        xc.fail("xc_dom_gnttab_seed", f"domain {guest_domid}")
