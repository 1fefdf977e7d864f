"""``struct start_info`` for an x86_64 PV guest (xen/include/public/xen.h).

The page libxenguest's ``start_info`` hook fills in and points the guest's
%rsi at on entry.  Offsets are those of the x86_64 ABI (natural alignment,
8-byte ``unsigned long`` and ``xen_pfn_t``)::

      0  char magic[32]            "xen-3.0-x86_64"
     32  unsigned long nr_pages
     40  unsigned long shared_info  (machine address)
     48  uint32_t flags             SIF_*
     56  xen_pfn_t store_mfn
     64  uint32_t store_evtchn
     72  xen_pfn_t console.domU.mfn
     80  uint32_t console.domU.evtchn
     88  unsigned long pt_base      (virtual address of the top page table)
     96  unsigned long nr_pt_frames
    104  unsigned long mfn_list     (virtual address of the p2m list)
    112  unsigned long mod_start    (virtual address, or pfn with SIF_MOD_START_PFN)
    120  unsigned long mod_len
    128  int8_t cmd_line[1024]      MAX_GUEST_CMDLINE, NUL-terminated
   1152  unsigned long first_p2m_pfn
   1160  unsigned long nr_p2m_frames
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_GUEST_CMDLINE = 1024
SIF_PRIVILEGED = 1 << 0
SIF_INITDOMAIN = 1 << 1
SIF_MULTIBOOT_MOD = 1 << 2
SIF_MOD_START_PFN = 1 << 3
SIZE = 1168

_HEAD = struct.Struct("<32sQQI4xQI4xQI4xQQQQQ")
_TAIL = struct.Struct("<QQ")


@dataclass(frozen=True)
class StartInfo:
    magic: str
    nr_pages: int
    shared_info: int
    flags: int
    store_mfn: int
    store_evtchn: int
    console_mfn: int
    console_evtchn: int
    pt_base: int
    nr_pt_frames: int
    mfn_list: int
    mod_start: int
    mod_len: int
    cmd_line: bytes
    first_p2m_pfn: int = 0
    nr_p2m_frames: int = 0

    def encode(self) -> bytes:
        if len(self.cmd_line) >= MAX_GUEST_CMDLINE:
            raise ValueError(f"cmdline of {len(self.cmd_line)} bytes exceeds MAX_GUEST_CMDLINE-1")
        head = _HEAD.pack(
            self.magic.encode(), self.nr_pages, self.shared_info, self.flags,
            self.store_mfn, self.store_evtchn, self.console_mfn, self.console_evtchn,
            self.pt_base, self.nr_pt_frames, self.mfn_list, self.mod_start, self.mod_len,
        )  # fmt: skip
        cmd = self.cmd_line.ljust(MAX_GUEST_CMDLINE, b"\0")
        return head + cmd + _TAIL.pack(self.first_p2m_pfn, self.nr_p2m_frames)

    @classmethod
    def decode(cls, data: bytes) -> StartInfo:
        if len(data) < SIZE:
            raise ValueError(f"start_info needs {SIZE} bytes, got {len(data)}")
        h = _HEAD.unpack_from(data, 0)
        cmd = bytes(data[_HEAD.size : _HEAD.size + MAX_GUEST_CMDLINE]).split(b"\0", 1)[0]
        first, nr = _TAIL.unpack_from(data, _HEAD.size + MAX_GUEST_CMDLINE)
        (magic, nr_pages, shared, flags, store_mfn, store_ev, con_mfn, con_ev,
         pt_base, nr_pt, mfn_list, mod_start, mod_len) = h  # fmt: skip
        return cls(magic.rstrip(b"\0").decode(), nr_pages, shared, flags, store_mfn, store_ev,
                   con_mfn, con_ev, pt_base, nr_pt, mfn_list, mod_start, mod_len, cmd,
                   first, nr)  # fmt: skip
