"""The simulator's ``xc_dom_*``: what each step does to a simulated domain.

* kernel/module memory: the blobs are held, the kernel parsed only later
  (``parse_image``), after measurement, as pv-grub does;
* ``boot_xen_init``: the simulated hypervisor's capabilities (an x86_64
  host with HVM, the string ``XENVER_capabilities`` gives there);
* ``parse_image``: our Python kernel parser (pvgrub_py.kernel), which is
  held to libxenguest's verdicts by differential tests;
* ``mem_init``/``boot_mem_init``: memory accounted in pages; the guest's
  RAM is a sparse file ``<host>/mem/<domid>`` (only written pages take space);
* ``build_image``: the layout of `pvgrub_py.builder.layout`; the kernel's
  loadable ELF segments are copied to their guest addresses (the BSS
  zeroed), the initrd after them, and the start_info page written (with
  the cmdline, the console and xenstore frames and ports, the p2m list);
* ``gnttab_seed``: the reserved grant entries 0 (console) and 1 (xenstore),
  recorded for dom0; the simulator's grant tables keep refs 0-7 reserved,
  so they are reported in the build result rather than entered there;
* ``release``: the memory file goes when the domain is destroyed.

The p2m is the identity in the simulator: an "mfn" equals the pfn.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
from pathlib import Path

from pvgrub_py.builder.image import MagicFrames
from pvgrub_py.builder.layout import PAGE, GuestLayout, plan_layout
from pvgrub_py.builder.start_info import StartInfo
from pvgrub_py.errors import InputError
from pvgrub_py.kernel.dominfo import X86_64_HOST_CAPS
from pvgrub_py.kernel.elf import ElfImage
from pvgrub_py.kernel.python_backend import parse_kernel
from pvgrub_py.kernel.report import KernelReport
from pvgrub_py.kernel.source import measure_bytes

PV64 = "xen-3.0-x86_64"
SHARED_INFO_PFN = 0xFFFFF  # the simulator's shared_info frame, outside guest RAM


_PARSED: dict[bytes, tuple[KernelReport, ElfImage]] = {}


def _parse_cached(
    kernel: bytes, label: str, caps: tuple[str, ...]
) -> tuple[KernelReport, ElfImage]:
    """Parse once per distinct kernel: booting many guests of one kernel (the
    scale runs) should not decompress it again each time.  Keyed by the
    SHA-256 of the exact bytes; only the last kernel is kept."""
    key = hashlib.sha256(kernel).digest() + ",".join(caps).encode()
    hit = _PARSED.get(key)
    if hit is None:
        hit = parse_kernel(measure_bytes(kernel, label), host_caps=caps)
        _PARSED.clear()
        _PARSED[key] = hit
    return hit


class SimDomainImage:
    backend = "simulator"

    def __init__(self, host_dir: str, domid: int, cmdline: str, label: str) -> None:
        self.host_dir = host_dir
        self.domid = domid
        self.cmdline = cmdline.encode("utf-8", "surrogateescape")
        self.label = label
        self.kernel = b""
        self.modules: list[bytes] = []
        self.console_port = self.xenstore_port = -1
        self.caps: tuple[str, ...] = ()
        self.total_pages = 0
        self.guest_type: str | None = None
        self._image: ElfImage | None = None
        self._layout: GuestLayout | None = None
        self._entry = self._virt_base = self._kstart = self._kend = 0
        self._virt_offset = 0
        self._p2m_base: int | None = None
        self.seeded: list[dict[str, int]] = []
        self.copy_ms = 0.0
        self.memory_path = Path(host_dir) / "mem" / str(domid)

    # -- blobs -----------------------------------------------------------------------

    def kernel_mem(self, data: bytes) -> None:
        self.kernel = data

    def module_mem(self, data: bytes) -> None:
        if data:
            self.modules.append(data)

    def set_ports(self, console_port: int, xenstore_port: int) -> None:
        self.console_port, self.xenstore_port = console_port, xenstore_port

    # -- steps -----------------------------------------------------------------------

    def boot_xen_init(self, domid: int) -> None:
        self.caps = X86_64_HOST_CAPS

    def parse_image(self) -> str:
        report, image = _parse_cached(self.kernel, self.label, self.caps)
        verdict = report.guests.get("pv")
        if verdict is None or not verdict.bootable or verdict.layout is None:
            why = verdict.reason if verdict is not None else "no Xen PV notes"
            raise InputError(self.label, f"not bootable as a Xen PV guest: {why}")
        self.guest_type = verdict.guest_type or PV64
        if self.guest_type != PV64:
            raise InputError(self.label, f"guest type {self.guest_type}, this builder boots {PV64}")
        lay = verdict.layout
        self._image = image
        self._entry, self._virt_base = lay.virt_entry, lay.virt_base
        self._kstart, self._kend = lay.virt_kstart, lay.virt_kend
        self._virt_offset, self._p2m_base = lay.virt_offset, lay.p2m_base
        return self.guest_type

    def mem_init(self, mem_mb: int) -> None:
        self.total_pages = mem_mb * (1 << 20) // PAGE

    def boot_mem_init(self) -> None:
        self.memory_path.parent.mkdir(mode=0o700, exist_ok=True)
        with open(self.memory_path, "wb") as f:
            f.truncate(self.total_pages * PAGE)  # sparse: "populated" but costing nothing

    def build_image(self) -> None:
        assert self._image is not None
        layout = plan_layout(
            virt_base=self._virt_base, virt_kstart=self._kstart, virt_kend=self._kend,
            entry=self._entry, module_sizes=tuple(len(m) for m in self.modules),
            total_pages=self.total_pages, p2m_base=self._p2m_base, label=self.label,
        )  # fmt: skip
        self._layout = layout
        fd = os.open(self.memory_path, os.O_RDWR | os.O_CLOEXEC)
        started = time.perf_counter()
        try:
            self._load_kernel(fd)
            for region, blob in zip(layout.modules, self.modules, strict=True):
                os.pwrite(fd, blob, region.pfn * PAGE)
            if layout.p2m is not None:
                p2m = struct.pack(f"<{layout.total_pages}Q", *range(layout.total_pages))
                os.pwrite(fd, p2m, layout.p2m.pfn * PAGE)
            os.pwrite(fd, self._start_info(layout).encode(), layout.start_info.pfn * PAGE)
        finally:
            os.close(fd)
        # Copying the kernel and initrd into guest RAM is proportional to their
        # size, like hashing them; reported apart from the builder's overhead.
        self.copy_ms = (time.perf_counter() - started) * 1000

    def _load_kernel(self, fd: int) -> None:
        """Each loadable ELF segment at its guest address; the BSS stays zero
        (a fresh sparse file reads as zeros)."""
        assert self._image is not None
        limit = self.total_pages * PAGE
        for ph in self._image.phdrs:
            if not ph.loadable:
                continue
            offset = ph.paddr + self._virt_offset - self._virt_base
            if offset < 0 or offset + ph.memsz > limit:
                raise InputError(self.label, f"segment {ph.index} falls outside guest memory")
            os.pwrite(fd, self._image.data[ph.offset : ph.offset + ph.filesz], offset)

    def _start_info(self, layout: GuestLayout) -> StartInfo:
        mod = layout.modules[0] if layout.modules else None
        return StartInfo(
            magic=PV64,
            nr_pages=layout.total_pages,
            shared_info=SHARED_INFO_PFN * PAGE,
            flags=0,
            store_mfn=layout.xenstore.pfn,
            store_evtchn=self.xenstore_port,
            console_mfn=layout.console.pfn,
            console_evtchn=self.console_port,
            pt_base=layout.pagetables.vstart,
            nr_pt_frames=layout.pagetables.pages,
            mfn_list=layout.p2m.vstart if layout.p2m is not None else (self._p2m_base or 0),
            mod_start=mod.vstart if mod is not None else 0,
            mod_len=len(self.modules[0]) if self.modules else 0,
            cmd_line=self.cmdline,
        )

    def boot_image(self) -> None:
        """The vcpu context: %rip at the kernel's entry, %rsi at start_info."""
        assert self._layout is not None

    def gnttab_seed(self, console_domid: int, xenstore_domid: int) -> None:
        assert self._layout is not None
        self.seeded = [
            {"ref": 0, "domid": console_domid, "frame": self._layout.console.pfn},
            {"ref": 1, "domid": xenstore_domid, "frame": self._layout.xenstore.pfn},
        ]

    def magic_frames(self) -> MagicFrames:
        assert self._layout is not None
        c, x = self._layout.console.pfn, self._layout.xenstore.pfn
        return MagicFrames(c, c, x, x)

    def layout(self) -> GuestLayout:
        assert self._layout is not None
        return self._layout

    def read_start_info(self) -> StartInfo:
        assert self._layout is not None
        with open(self.memory_path, "rb") as f:
            f.seek(self._layout.start_info.pfn * PAGE)
            return StartInfo.decode(f.read(PAGE))

    def release(self, destroyed: bool) -> None:
        self.kernel = b""
        self.modules.clear()
        if destroyed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.memory_path)
