"""The tpmif shared page (xen/include/public/io/tpmif.h, "tpmif_shared_page").

One granted 4 KiB page, native endianness (little-endian on x86)::

    0  u32 length          request or response length in bytes
    4  u8  state           IDLE 0, SUBMIT 1, FINISH 2, CANCEL 3
    5  u8  locality        of the current request
    6  u8  pad
    7  u8  nr_extra_pages  0 in every known implementation
    8  u32 extra_pages[n]
    8+4n   data

The header comment in tpmif.h says the data starts at offset 16; every
implementation (Mini-OS tpmfront/tpmback, Linux xen-tpmfront) puts it at
``8 + 4 * nr_extra_pages``, which is what we do.  With no extra pages the
largest packet is 4096 - 8 = 4088 bytes.

Only the frontend writes SUBMIT and CANCEL; only the backend writes IDLE and
FINISH.  The data and the length are written before the state, and the
state last: the state byte is the commit point the peer polls.
"""

from __future__ import annotations

import enum
import struct

from pvgrub_py.errors import PvgrubError
from pvgrub_py.xen.interface import PAGE_SIZE

HEADER = struct.Struct("<IBBBB")
DATA_OFFSET = HEADER.size  # 8, with nr_extra_pages == 0
MAX_PACKET = PAGE_SIZE - DATA_OFFSET  # 4088


class TpmifState(enum.IntEnum):
    IDLE = 0
    SUBMIT = 1
    FINISH = 2
    CANCEL = 3


class SharedPageError(PvgrubError):
    """The peer left the page in a state we must not act on."""


class SharedPage:
    """Typed access to a mapped tpmif page (a writable memoryview)."""

    def __init__(self, memory: memoryview) -> None:
        if len(memory) < PAGE_SIZE:
            raise ValueError(f"a tpmif page is {PAGE_SIZE} bytes, got {len(memory)}")
        self.memory = memory

    # -- header fields -------------------------------------------------------------------

    @property
    def state(self) -> int:
        return self.memory[4]

    @state.setter
    def state(self, value: TpmifState) -> None:
        self.memory[4] = int(value)

    @property
    def length(self) -> int:
        return int(struct.unpack_from("<I", self.memory, 0)[0])

    @property
    def locality(self) -> int:
        return self.memory[5]

    @property
    def nr_extra_pages(self) -> int:
        return self.memory[7]

    def data_offset(self) -> int:
        """Where the packet starts; extra pages are refused, as Mini-OS does."""
        extra = self.nr_extra_pages
        if extra:
            raise SharedPageError(f"tpmif page announces {extra} extra pages; none are supported")
        return DATA_OFFSET

    # -- packets -------------------------------------------------------------------------

    def write_packet(self, data: bytes, locality: int = 0) -> None:
        """Place a packet and its length; the caller then sets the state."""
        if len(data) > MAX_PACKET:
            raise SharedPageError(
                f"{len(data)}-byte packet exceeds the {MAX_PACKET}-byte tpmif page"
            )
        self.memory[DATA_OFFSET : DATA_OFFSET + len(data)] = data
        # Everything but the state byte: that one is only ever written on its
        # own, as the commit point.  (CPython's struct.pack_into zero-fills
        # its target before writing the fields, so packing the whole header
        # made the state read IDLE for an instant: a peer polling the page
        # took that for a cancel.)
        struct.pack_into("<I", self.memory, 0, len(data))
        self.memory[5] = locality
        self.memory[6:8] = b"\0\0"

    def read_packet(self) -> bytes:
        """The current packet, its length checked against the page."""
        offset = self.data_offset()
        length = self.length
        if length > PAGE_SIZE - offset:
            raise SharedPageError(
                f"tpmif length {length} exceeds the {PAGE_SIZE - offset}-byte page"
            )
        return bytes(self.memory[offset : offset + length])

    def reset(self) -> None:
        self.memory[:DATA_OFFSET] = bytes(DATA_OFFSET)
