"""Read a kernel file once, measure it, and only then hand it to a parser.

pv-grub hashes the kernel into PCR 4 before libxenguest parses it
(Xen stubdom/grub/kexec.c, ``kexec()``: ``tpm_hash2pcr`` runs before
``xc_dom_parse_image``): parsers of hostile images are where
exploits live, and measuring first means an exploited parser still leaves
its input recorded.  Both backends parse exactly the bytes measured here,
read once, so nothing can change between the two.

The measured bytes follow `pvgrub_py.measure.kernel`: a whole-file gzip is
removed first, as GRUB and ``xc_dom_kernel_mem`` do.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvgrub_py.errors import InputError
from pvgrub_py.inputs import MAX_BOOT_FILE, describe_open_error, format_size, open_input
from pvgrub_py.measure.digest import CHUNK_SIZE
from pvgrub_py.measure.kernel import KernelMeasurer
from pvgrub_py.tpm.algorithms import SHA1, SHA256


@dataclass(frozen=True)
class KernelSource:
    label: str  # the path, for messages
    raw: bytes  # the file as stored
    loaded: bytes  # after a whole-file gunzip: what is measured and parsed
    whole_file_gzip: bool
    measurement: dict[str, str]  # bank -> hex digest of ``loaded`` (PCR 4's input)


def read_kernel(path: str, max_size: int = MAX_BOOT_FILE) -> KernelSource:
    """Read the kernel at *path* once, never blocking (a FIFO, a device are
    refused before the first read) and never past *max_size* bytes."""
    with open_input(path, max_size=max_size) as f:
        try:
            raw = f.read(max_size + 1)
        except OSError as e:
            raise InputError(path, f"read failed: {describe_open_error(e)}") from None
    if len(raw) > max_size:
        raise InputError(path, f"grew past the {format_size(max_size)} kernel cap while reading")
    return measure_bytes(raw, path)


def measure_bytes(raw: bytes, label: str) -> KernelSource:
    """Measure, then expose: the digests exist before anything parses ``loaded``."""
    parts: list[bytes] = []
    measurer = KernelMeasurer((SHA1, SHA256), label, on_inflated=parts.append)
    view = memoryview(raw)
    for start in range(0, len(raw), CHUNK_SIZE):
        measurer.update(view[start : start + CHUNK_SIZE])
    digests, _ = measurer.finish()
    gzipped = measurer.whole_file_gzip
    loaded = b"".join(parts) if gzipped else raw
    return KernelSource(label, raw, loaded, gzipped, {n: d.hex() for n, d in digests.items()})
