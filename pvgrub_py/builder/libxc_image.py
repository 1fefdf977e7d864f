"""The real ``xc_dom_*`` sequence through our libxenguest bindings.

Each step is the libxenguest call of the same name (xenguest.h; in the order of
tools/libs/guest/xg_dom_compat_linux.c `xc_linux_build`), on a
`DomainImage` opened for an existing domain; ``gnttab_seed`` is
``xc_dom_gnttab_seed`` with the console and xenstore frames libxenguest
chose.  Needs a real hypervisor from ``boot_xen_init`` on.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvgrub_py.builder.image import MagicFrames
from pvgrub_py.xen.domain_image import DomainImage, gnttab_seed
from pvgrub_py.xen.xenctrl import XenCtrl

PV64 = "xen-3.0-x86_64"


@dataclass(frozen=True)
class LibxcLayout:
    """What libxenguest reports of the layout it chose: the kernel segment,
    the module sizes, the magic pages' pfns."""

    doc: dict[str, object]

    def to_json(self) -> dict[str, object]:
        return self.doc


class LibxcDomainImage:
    backend = "libxenguest"

    def __init__(self, xc: XenCtrl, domid: int, cmdline: str) -> None:
        self.xc = xc
        self.domid = domid
        self.image = DomainImage(xc, cmdline)
        self.image.set_container(hvm=False)
        self.copy_ms = 0.0  # libxenguest copies inside xc_dom_build_image: not timed apart
        self.seeded: list[dict[str, int]] = []  # xc_dom_gnttab_seed reports nothing back

    def kernel_mem(self, data: bytes) -> None:
        self.image.kernel_mem(data)

    def module_mem(self, data: bytes) -> None:
        if data:
            self.image.module_mem(data)

    def set_ports(self, console_port: int, xenstore_port: int) -> None:
        self.image.set_boot_params(console_evtchn=console_port, xenstore_evtchn=xenstore_port)

    def boot_xen_init(self, domid: int) -> None:
        self.image.boot_xen_init(domid)

    def parse_image(self) -> str:
        self.image.parse_image()
        return self.image.guest_type or ""

    def mem_init(self, mem_mb: int) -> None:
        self.image.mem_init(mem_mb)

    def boot_mem_init(self) -> None:
        self.image.boot_mem_init()

    def build_image(self) -> None:
        self.image.build_image()

    def boot_image(self) -> None:
        self.image.boot_image()

    def gnttab_seed(self, console_domid: int, xenstore_domid: int) -> None:
        frames = self.magic_frames()
        gnttab_seed(self.xc, self.domid, is_hvm=False, console_gfn=frames.console_pfn,
                    xenstore_gfn=frames.xenstore_pfn, console_domid=console_domid,
                    xenstore_domid=xenstore_domid)  # fmt: skip

    def magic_frames(self) -> MagicFrames:
        m = self.image.magic_pages
        return MagicFrames(m.console_pfn, m.console_mfn or 0, m.xenstore_pfn, m.xenstore_mfn or 0)

    def layout(self) -> LibxcLayout:
        seg = self.image.kernel_segment
        m = self.image.magic_pages
        return LibxcLayout({
            "kernel": {
                "vstart": hex(seg.vstart),
                "vend": hex(seg.vend),
                "pfn": seg.pfn,
                "pages": seg.pages,
            },
            "modules": self.image.module_sizes,
            "start_info_pfn": m.start_info_pfn,
            "console_pfn": m.console_pfn,
            "xenstore_pfn": m.xenstore_pfn,
            "total_pages": m.total_pages,
        })

    def release(self, destroyed: bool) -> None:
        self.image.close()
