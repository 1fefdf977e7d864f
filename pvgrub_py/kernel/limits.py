"""Bounds every parser here honours, so hostile kernels cost bounded memory and time."""

from __future__ import annotations

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import format_size

#: libelf's ELF_MAX_TOTAL_NOTE_COUNT stops at this many notes in all; we do too.
MAX_NOTES = 65536
#: More program headers than this is not a kernel (Linux vmlinux has < 10).
MAX_PHDRS = 4096
#: Section headers (Linux vmlinux has ~100, with debug info ~ 200).
MAX_SHDRS = 65535


def decompression_bomb(label: str, kind: str, cap: int, limit: str = "") -> InputError:
    """The error for output past the cap: Xen would refuse it too (xc_dom_kernel_check_size)."""
    what = limit or f"the {format_size(cap)} cap (XC_DOM_DECOMPRESS_MAX)"
    return InputError(label, f"{kind} payload inflates past {what}; refusing a decompression bomb")
