"""The kernel bytes a measurement covers: the image after a whole-file gunzip.

Both GRUB legacy (whose loader pv-grub used) and libxenguest's
``xc_dom_kernel_mem``/``xc_dom_kernel_file`` remove a gzip wrapper around the
whole kernel file before the loader sees it, so that is what PCR 4 records.
A bzImage's own internal compression is untouched.

When the file is treated as gzip is libxenguest's rule (xg_dom_core.c,
``xc_dom_check_gzip``): at least 6 bytes, the magic ``1f 8b``, and a
little-endian ISIZE trailer (the last four bytes) of at most
``XC_DOM_DECOMPRESS_MAX`` (1 GiB).  Otherwise the file is measured as stored.
Only the first gzip member is inflated, as zlib's ``inflate`` does.

We are stricter than libxenguest in one place, on purpose: the inflated
first gzip member must be exactly ISIZE bytes long.  libxenguest allocates
ISIZE + 16 zeroed bytes and accepts any stream that fits, so its
``kernel_size`` is ISIZE + 16 and a stream shorter than its trailer claims
leaves zero padding behind.  A kernel whose trailer disagrees with its
stream is refused rather than measured ambiguously.

`KernelMeasurer` is push-style, so the bootloader can feed it the same
chunks it copies out of a guest disk: the file is read once.  Whether the
file counts as gzip is known only at its end (the trailer), so a file that
starts with the gzip magic is hashed both as stored and inflated, and the
right digests are picked at `finish`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import DECOMPRESS_MAX
from pvgrub_py.measure.digest import CHUNK_SIZE, MultiHasher
from pvgrub_py.tpm.algorithms import HashAlgorithm

GZIP_MAGIC = b"\x1f\x8b"


class KernelMeasurer:
    """Hash a kernel file fed in chunks, as libxenguest will load it."""

    def __init__(
        self,
        banks: Sequence[HashAlgorithm],
        label: str,
        on_inflated: Callable[[bytes], None] | None = None,
        trailer: bytes | None = None,
    ) -> None:
        """``on_inflated`` receives the inflated bytes of a file that starts
        like gzip, for callers that need them (they count only if
        `whole_file_gzip` is true after `finish`).  ``trailer``, the file's
        last four bytes when the caller can read them first, stops a
        decompression bomb at its declared size instead of at 1 GiB."""
        self.label = label
        self.whole_file_gzip = False
        self._on_inflated = on_inflated
        self._banks = banks
        self._raw = MultiHasher(banks)
        self._head = b""
        self._tail = b""
        self._inflater: zlib._Decompress | None = None
        self._inflated: MultiHasher | None = None
        self._inflate_error: str | None = None
        self._limit = DECOMPRESS_MAX
        if trailer is not None and len(trailer) == 4:
            self._limit = min(DECOMPRESS_MAX, int(struct.unpack("<I", trailer)[0]))

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Hash ``chunk`` as stored and, for a gzip-looking file, inflated.

        Only the first two and last four bytes are kept besides the hashes;
        a chunk is copied only when it must be inflated.
        """
        self._raw.update(chunk)
        carried = b""
        if len(self._head) < 2:
            carried = self._head  # the magic's first byte, if it came alone
            self._head = (self._head + bytes(chunk[:2]))[:2]
            if self._head == GZIP_MAGIC:
                self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                self._inflated = MultiHasher(self._banks)
            else:
                carried = b""
        if len(chunk) >= 4:
            self._tail = bytes(chunk[-4:])
        else:
            self._tail = (self._tail + bytes(chunk))[-4:]
        if self._inflater is not None:
            self._inflate(
                carried + bytes(chunk) if carried or not isinstance(chunk, bytes) else chunk
            )

    def _inflate(self, data: bytes) -> None:
        inflater, out = self._inflater, self._inflated
        assert inflater is not None and out is not None
        while data and not inflater.eof and self._inflate_error is None:
            try:
                piece = inflater.decompress(data, CHUNK_SIZE)
            except zlib.error as e:
                if "incorrect length check" in str(e):
                    self._inflate_error = "gzip trailer length disagrees with the stream"
                else:
                    self._inflate_error = f"corrupt gzip stream: {e}"
                return
            out.update(piece)
            if piece and self._on_inflated is not None:
                self._on_inflated(piece)
            if out.length > self._limit:
                self._inflate_error = (
                    f"gzip stream inflates past the {self._limit} bytes its trailer declares"
                )
                return
            data = inflater.unconsumed_tail

    def finish(self) -> tuple[dict[str, bytes], int]:
        """The digests per bank and the number of bytes measured."""
        size = self._raw.length
        if not is_whole_file_gzip(self._head, size, self._tail):
            return self._raw.digests(), size
        (isize,) = struct.unpack("<I", self._tail)
        if self._inflate_error is not None:
            raise InputError(self.label, self._inflate_error)
        assert self._inflater is not None and self._inflated is not None
        if not self._inflater.eof:
            raise InputError(self.label, "truncated gzip stream")
        produced = self._inflated.length
        if produced != isize:
            raise InputError(
                self.label,
                f"gzip stream inflates to {produced} bytes but its trailer declares {isize}",
            )
        self.whole_file_gzip = True
        return self._inflated.digests(), produced


def is_whole_file_gzip(head: bytes, size: int, trailer: bytes) -> bool:
    """libxenguest's trigger, from the first two and last four bytes."""
    if size < 6 or head[:2] != GZIP_MAGIC:
        return False
    return int(struct.unpack("<I", trailer[-4:])[0]) <= DECOMPRESS_MAX
