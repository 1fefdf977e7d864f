"""Where a PV x86_64 guest's boot pieces go, in libxenguest's order.

``xc_dom_build_image`` (tools/libs/guest/xg_dom_core.c) and the x86 hooks
(xg_dom_x86.c) lay out a PV guest's initial memory, in guest-virtual space
starting at the kernel's VIRT_BASE, one page-aligned segment after another:

1. the kernel, at [virt_kstart, virt_kend) from its ELF notes and segments;
2. the modules (the initrd), right after it;
3. the p2m list (``phys2mach``: 8 bytes per guest page), unless the kernel
   asks for it elsewhere (INIT_P2M);
4. the start_info page, then the xenstore and console rings;
5. the initial page tables, enough to map everything above plus 512 KiB,
   rounded up to 4 MiB (``count_pgtables``' rule);
6. the boot stack page.

A guest pfn here is ``(vaddr - virt_base) >> 12``.  This is the simulator's
rendering of that algorithm: it follows the order and the sizes, and the
page-table count with the same fixed-point idea; the real builder (the
libxc backend) is the reference, and nested-Xen runs compare the two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pvgrub_py.errors import InputError

PAGE = 4096
MIB = 1 << 20


def pages_for(size: int) -> int:
    return (size + PAGE - 1) // PAGE


@dataclass(frozen=True)
class Region:
    name: str
    vstart: int
    pfn: int
    pages: int

    @property
    def vend(self) -> int:
        return self.vstart + self.pages * PAGE


@dataclass(frozen=True)
class GuestLayout:
    virt_base: int
    entry: int
    total_pages: int
    kernel: Region
    modules: tuple[Region, ...]
    p2m: Region | None
    start_info: Region
    xenstore: Region
    console: Region
    pagetables: Region
    boot_stack: Region
    used_pages: int

    def to_json(self) -> dict[str, object]:
        def region(r: Region | None) -> dict[str, int | str] | None:
            if r is None:
                return None
            return {**asdict(r), "vstart": hex(r.vstart), "vend": hex(r.vend)}

        return {
            "virt_base": hex(self.virt_base),
            "entry": hex(self.entry),
            "total_pages": self.total_pages,
            "used_pages": self.used_pages,
            "kernel": region(self.kernel),
            "modules": [region(m) for m in self.modules],
            "p2m": region(self.p2m),
            "start_info": region(self.start_info),
            "xenstore": region(self.xenstore),
            "console": region(self.console),
            "pagetables": region(self.pagetables),
            "boot_stack": region(self.boot_stack),
        }


def _pt_pages(virt_base: int, virt_end: int) -> int:
    """Page-table pages (L4..L1) to map [virt_base, virt_end) with 4 KiB pages."""
    total = 0
    for shift in (39, 30, 21):  # entries of L4, L3, L2 each cover 512 GiB, 1 GiB, 2 MiB
        first = virt_base >> shift
        last = (virt_end - 1) >> shift
        total += last - first + 1
    return total + 1  # the L4 itself


class _Allocator:
    def __init__(self, virt_base: int, start: int, total_pages: int) -> None:
        self.virt_base = virt_base
        self.cursor = start
        self.total_pages = total_pages

    def take(self, name: str, pages: int) -> Region:
        region = Region(name, self.cursor, (self.cursor - self.virt_base) // PAGE, pages)
        self.cursor += pages * PAGE
        return region


def plan_layout(
    *,
    virt_base: int,
    virt_kstart: int,
    virt_kend: int,
    entry: int,
    module_sizes: tuple[int, ...],
    total_pages: int,
    p2m_base: int | None,
    label: str,
) -> GuestLayout:
    if virt_kstart < virt_base or virt_kend < virt_kstart:
        raise InputError(label, "kernel segment lies below VIRT_BASE")
    kstart = virt_kstart & ~(PAGE - 1)
    alloc = _Allocator(virt_base, kstart, total_pages)
    kernel = alloc.take("kernel", pages_for(virt_kend - kstart))
    modules = tuple(
        alloc.take(f"module{i}", pages_for(size)) for i, size in enumerate(module_sizes)
    )
    p2m = None if p2m_base is not None else alloc.take("phys2mach", pages_for(total_pages * 8))
    start_info = alloc.take("start_info", 1)
    xenstore = alloc.take("xenstore", 1)
    console = alloc.take("console", 1)
    pt = 0
    while True:  # fixed point: the tables must also map themselves
        mapped_end = alloc.cursor + (pt + 1) * PAGE + 512 * 1024
        mapped_end = (mapped_end + 4 * MIB - 1) & ~(4 * MIB - 1)
        need = _pt_pages(virt_base, mapped_end)
        if need <= pt:
            break
        pt = need
    pagetables = alloc.take("pagetables", pt)
    boot_stack = alloc.take("boot_stack", 1)
    used = (alloc.cursor - virt_base) // PAGE
    if used > total_pages:
        raise InputError(
            label,
            f"memory too small: kernel, initrd and boot structures need {used} pages "
            f"({used * PAGE / MIB:.1f} MiB), the domain has {total_pages} "
            f"({total_pages * PAGE / MIB:.1f} MiB)",
        )
    return GuestLayout(virt_base, entry, total_pages, kernel, modules, p2m, start_info,
                       xenstore, console, pagetables, boot_stack, used)  # fmt: skip
