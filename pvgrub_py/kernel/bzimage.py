"""The x86 Linux boot protocol setup header (Documentation/arch/x86/boot.rst).

A bzImage is a real-mode setup sector block followed by a protected-mode
part; from protocol 2.08 the header says where the compressed vmlinux
("payload") sits: ``(setup_sects + 1) * 512 + payload_offset``, for
``payload_length`` bytes.  Xen's bzImage loader (libxenguest
xg_dom_bzimageloader.c) requires the "HdrS" signature, protocol >= 2.08 and
a payload inside the file; we check the same, naming the field and offset.

``setup_sects == 0`` means 4 only for pre-2.00 images (boot.rst); every
image Xen accepts (>= 2.08) stores the real count, so it is used as stored,
as Xen does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pvgrub_py.errors import InputError

HDRS_MAGIC = b"HdrS"
HDRS_OFFSET = 0x202
#: End of the fields Xen's loader reads (``payload_length``), i.e. the
#: smallest file that can hold the header.
HEADER_END = 0x250
MIN_XEN_PROTOCOL = 0x0208

#: (name, offset, struct format, first protocol version that has it)
FIELDS: tuple[tuple[str, int, str, int], ...] = (
    ("setup_sects", 0x1F1, "B", 0),
    ("syssize", 0x1F4, "I", 0x0204),
    ("boot_flag", 0x1FE, "H", 0),
    ("version", 0x206, "H", 0x0200),
    ("kernel_version", 0x20E, "H", 0x0200),
    ("loadflags", 0x211, "B", 0x0200),
    ("code32_start", 0x214, "I", 0x0200),
    ("initrd_addr_max", 0x22C, "I", 0x0203),
    ("kernel_alignment", 0x230, "I", 0x0205),
    ("relocatable_kernel", 0x234, "B", 0x0205),
    ("min_alignment", 0x235, "B", 0x0210),
    ("xloadflags", 0x236, "H", 0x020C),
    ("cmdline_size", 0x238, "I", 0x0206),
    ("hardware_subarch", 0x23C, "I", 0x0207),
    ("payload_offset", 0x248, "I", 0x0208),
    ("payload_length", 0x24C, "I", 0x0208),
    ("pref_address", 0x258, "Q", 0x020A),
    ("init_size", 0x260, "I", 0x020A),
    ("handover_offset", 0x264, "I", 0x020B),
    ("kernel_info_offset", 0x268, "I", 0x020F),
)
OFFSETS = {name: offset for name, offset, _, _ in FIELDS}


@dataclass(frozen=True)
class SetupHeader:
    """The header fields this protocol version defines, and where the payload is."""

    protocol: int  # e.g. 0x020F
    fields: dict[str, int]
    kernel_version_string: str | None
    payload_start: int  # file offset
    payload_length: int

    @property
    def protocol_text(self) -> str:
        return f"{self.protocol >> 8}.{self.protocol & 0xFF:02d}"


def is_bzimage(data: bytes | memoryview) -> bool:
    return bytes(data[HDRS_OFFSET : HDRS_OFFSET + 4]) == HDRS_MAGIC


def parse_setup_header(data: bytes | memoryview, label: str) -> SetupHeader:
    """The setup header of a bzImage (caller checked `is_bzimage`)."""
    size = len(data)
    if size < HEADER_END:
        raise InputError(
            label,
            f"truncated bzImage: {size} bytes, but the setup header runs to offset "
            f"{HEADER_END:#x} (payload_length)",
        )
    (protocol,) = struct.unpack_from("<H", data, OFFSETS["version"])
    if protocol < MIN_XEN_PROTOCOL:
        raise InputError(
            label,
            f"bzImage field version at offset {OFFSETS['version']:#x}: boot protocol "
            f"{protocol >> 8}.{protocol & 0xFF:02d} is older than 2.08, the oldest Xen's "
            "bzImage loader accepts",
        )
    fields: dict[str, int] = {}
    for name, offset, fmt, since in FIELDS:
        end = offset + struct.calcsize(fmt)
        if protocol >= since and end <= size:
            (fields[name],) = struct.unpack_from("<" + fmt, data, offset)
    start = (fields["setup_sects"] + 1) * 512 + fields["payload_offset"]
    length = fields["payload_length"]
    if start >= size:
        raise InputError(
            label,
            f"bzImage field payload_offset at offset {OFFSETS['payload_offset']:#x}: the "
            f"payload would start at byte {start} ((setup_sects {fields['setup_sects']} + 1) "
            f"* 512 + {fields['payload_offset']}), past the end of the {size}-byte file",
        )
    if start + length > size:
        raise InputError(
            label,
            f"bzImage field payload_length at offset {OFFSETS['payload_length']:#x}: "
            f"{length} bytes from byte {start} run {start + length - size} bytes past the "
            f"end of the {size}-byte file",
        )
    return SetupHeader(protocol, fields, _kernel_version(data, fields), start, length)


def _kernel_version(data: bytes | memoryview, fields: dict[str, int]) -> str | None:
    """boot.rst: ``kernel_version`` points (minus 0x200) at a NUL-terminated string."""
    pointer = fields.get("kernel_version", 0)
    if not pointer:
        return None
    start = pointer + 0x200
    window = bytes(data[start : start + 256])
    text, nul, _ = window.partition(b"\0")
    if not nul or not text:
        return None
    return text.decode("ascii", "replace")
