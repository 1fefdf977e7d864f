"""Hash algorithms known to TPM 2.0 (TPM_ALG_ID, TCG Algorithm Registry).

TPM 1.2 and the TCG SHA1 event-log format only know SHA-1.  The crypto-agile
log and TPM2_PCR_Extend name each bank by its TPM_ALG_ID.
"""

from __future__ import annotations

import hashlib

from pvgrub_py.errors import UsageError
from pvgrub_py.record import record

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any


@record(frozen=True)
class HashAlgorithm:
    name: str  # the name tpm2-tools uses: sha1, sha256, ...
    alg_id: int  # TPM_ALG_ID
    digest_size: int

    def new(self) -> Any:
        """A fresh hashlib object for this bank."""
        return hashlib.new(self.name)

    def zero_pcr(self) -> bytes:
        return bytes(self.digest_size)


SHA1 = HashAlgorithm("sha1", 0x0004, 20)
SHA256 = HashAlgorithm("sha256", 0x000B, 32)
SHA384 = HashAlgorithm("sha384", 0x000C, 48)
SHA512 = HashAlgorithm("sha512", 0x000D, 64)
# SM3_256 (0x0012) is a valid TPM bank but hashlib cannot compute it on every
# build of OpenSSL, so it is recognised in logs and TPM replies only.
SM3_256 = HashAlgorithm("sm3_256", 0x0012, 32)

SHA3_256 = HashAlgorithm("sha3_256", 0x0027, 32)
SHA3_384 = HashAlgorithm("sha3_384", 0x0028, 48)
SHA3_512 = HashAlgorithm("sha3_512", 0x0029, 64)

ALGORITHMS: tuple[HashAlgorithm, ...] = (
    SHA1, SHA256, SHA384, SHA512, SM3_256, SHA3_256, SHA3_384, SHA3_512,
)  # fmt: skip
BY_NAME: dict[str, HashAlgorithm] = {a.name: a for a in ALGORITHMS}
BY_ID: dict[int, HashAlgorithm] = {a.alg_id: a for a in ALGORITHMS}

DEFAULT_BANKS: tuple[HashAlgorithm, ...] = (SHA1, SHA256)


def computable(alg: HashAlgorithm) -> bool:
    try:
        hashlib.new(alg.name)
    except ValueError:
        return False
    return True


def parse_banks(text: str) -> tuple[HashAlgorithm, ...]:
    """Parse a tpm2-tools style bank list such as ``sha1,sha256``."""
    banks: list[HashAlgorithm] = []
    for word in text.split(","):
        name = word.strip().lower()
        if not name:
            continue
        alg = BY_NAME.get(name)
        if alg is None:
            known = ",".join(a.name for a in ALGORITHMS)
            raise UsageError(f"unknown hash bank {word.strip()!r} (known: {known})")
        if not computable(alg):
            raise UsageError(f"hash bank {name} is not available in this Python's OpenSSL")
        if alg not in banks:
            banks.append(alg)
    if not banks:
        raise UsageError("empty bank list")
    return tuple(banks)


def extend(alg: HashAlgorithm, pcr: bytes, digest: bytes) -> bytes:
    """PCR_new = H(PCR_old || digest): the extend rule of both TPM versions."""
    h = alg.new()
    h.update(pcr)
    h.update(digest)
    return bytes(h.digest())
