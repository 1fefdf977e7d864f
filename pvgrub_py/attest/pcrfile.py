"""PCR selections and the PCR value files of ``tpm2_quote -o`` (tpm2-tools 5).

A selection is written as tpm2-tools writes it: ``sha256:4,5`` or
``sha1:4,5+sha256:4,5`` (banks in that order, each PCR list ascending).

``tpm2_quote -o FILE -F FORMAT`` writes the PCR values two ways (tpm2-tools'
``lib/pcr.c``; ``tpm2_checkquote -f FILE -F FORMAT`` reads both):

* ``values``: the digests, concatenated in selection order;
* ``serialized`` (the default): the C structures as the host lays them out,
  little-endian here: a TPML_PCR_SELECTION (u32 count, then 16
  TPMS_PCR_SELECTION of u16 hash, u8 sizeofSelect, 4 bytes pcrSelect and one
  byte of padding), a u32 count of TPML_DIGEST, and that many TPML_DIGEST
  (u32 count, then 8 TPM2B_DIGEST of u16 size and 64 bytes), one per
  TPM2_PCR_Read answer, as tpm2-tools reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pvgrub_py.errors import UsageError
from pvgrub_py.tpm.algorithms import BY_NAME, HashAlgorithm, computable

#: TPM2_NUM_PCR_BANKS, TPM2_PCR_SELECT_MAX, sizeof(TPMU_HA), TPML_DIGEST's 8 (tpm2-tss).
NUM_BANKS = 16
PCR_SELECT_MAX = 4
MAX_DIGEST = 64
DIGESTS_PER_LIST = 8
#: PC TPMs have 24 PCRs.
NUM_PCRS = 24
FORMATS = ("serialized", "values")


def parse_selection(text: str) -> tuple[tuple[HashAlgorithm, tuple[int, ...]], ...]:
    """``sha256:4,5+sha1:0`` -> ((SHA256, (4, 5)), (SHA1, (0,))); usage errors otherwise."""
    banks: list[tuple[HashAlgorithm, tuple[int, ...]]] = []
    for part in text.split("+"):
        name, sep, pcr_text = part.partition(":")
        alg = BY_NAME.get(name.strip().lower())
        if not sep or alg is None or not computable(alg):
            raise UsageError(f"PCR selection {text!r}: {part!r} is not BANK:PCR[,PCR...] "
                             "with a bank such as sha1 or sha256")  # fmt: skip
        if any(a is alg for a, _ in banks):
            raise UsageError(f"PCR selection {text!r}: bank {alg.name} given twice")
        pcrs: set[int] = set()
        for word in pcr_text.split(","):
            word = word.strip()
            if not (word.isascii() and word.isdigit() and int(word) < NUM_PCRS):
                raise UsageError(f"PCR selection {text!r}: {word!r} is not a PCR 0-{NUM_PCRS - 1}")
            pcrs.add(int(word))
        banks.append((alg, tuple(sorted(pcrs))))
    if len(banks) > NUM_BANKS:
        raise UsageError(f"PCR selection {text!r}: more than {NUM_BANKS} banks")
    return tuple(banks)


def values_file(reads: Sequence[Sequence[bytes]]) -> bytes:
    return b"".join(d for read in reads for d in read)


def serialized_file(
    banks: Sequence[tuple[HashAlgorithm, Sequence[int]]], reads: Sequence[Sequence[bytes]]
) -> bytes:
    out = bytearray(len(banks).to_bytes(4, "little"))
    for i in range(NUM_BANKS):
        if i < len(banks):
            alg, pcrs = banks[i]
            bits = bytearray(PCR_SELECT_MAX)
            for n in pcrs:
                bits[n // 8] |= 1 << (n % 8)
            out += alg.alg_id.to_bytes(2, "little") + b"\x03" + bytes(bits) + b"\x00"
        else:
            out += bytes(8)
    out += len(reads).to_bytes(4, "little")
    for read in reads:
        if len(read) > DIGESTS_PER_LIST:
            raise ValueError(f"a TPML_DIGEST holds {DIGESTS_PER_LIST} digests, not {len(read)}")
        out += len(read).to_bytes(4, "little")
        for j in range(DIGESTS_PER_LIST):
            d = read[j] if j < len(read) else b""
            out += len(d).to_bytes(2, "little") + d.ljust(MAX_DIGEST, b"\x00")
    return bytes(out)
