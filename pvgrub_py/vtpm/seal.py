"""An export archive sealed for transport with a migration key.

The file is a one-line header, a nonce and the archive encrypted with
AES-256-GCM (`cryptography`'s AESGCM; NIST SP 800-38D), the 16-byte tag last::

    pvgrub-vtpm-export 2 aes-256-gcm <uuid> <ms>\\n   the header (ASCII; ``head -1`` shows it)
    <12 random bytes>                                 the nonce (96 bits, fresh per export)
    <ciphertext><16-byte tag>                         the tar archive `migrate` writes

``<ms>`` is when the export was made (Unix time in milliseconds, the
exporting host's clock): the importer refuses an archive older than its
``--max-age`` or not newer than the last one it imported of that vTPM
(`pvgrub_py.vtpm.import_ledger`), so an old export cannot be replayed to roll
a vTPM back.  Format 1 had no time and is refused.

The header and the nonce are the associated data: a header changed to name
another uuid, another version or another cipher fails authentication like
any other changed byte.  Opening authenticates everything before a byte of
the archive is returned (AESGCM decrypts only once the tag verifies), so an
importer parses nothing that the holder of the migration key did not write.
The archive inside must then be the header's uuid's (`migrate` checks).

The migration key only protects the archive in transit; the vTPM state
inside stays as swtpm stores it (encrypted with the host key, AES-256-CBC,
for an encrypted instance).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pvgrub_py.errors import UsageError
from pvgrub_py.vtpm.manufacture import VtpmServiceError, canonical_uuid

MAGIC = b"pvgrub-vtpm-export "
VERSION = 2
CIPHER = "aes-256-gcm"
NONCE = 12
TAG = 16
KEY = 32
MAX_HEADER = 128
HEADER = re.compile(
    rb"pvgrub-vtpm-export ([0-9]{1,3}) ([a-z0-9-]{1,32}) ([0-9a-f-]{36})(?: ([0-9]{1,15}))?\n"
)


@dataclass(frozen=True)
class Opened:
    """A sealed file, authenticated: whose it is, when it was made, its archive."""

    uuid: str
    created_ms: int
    nonce: bytes
    archive: bytes


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def header(uuid: str, created_ms: int) -> bytes:
    return MAGIC + f"{VERSION} {CIPHER} {canonical_uuid(uuid)} {created_ms}\n".encode("ascii")


def is_sealed(data: bytes) -> bool:
    """Whether *data* starts as a sealed archive does (a tar never does: its
    first member's name is a uuid)."""
    return data.startswith(MAGIC)


def seal(uuid: str, archive: bytes, key: bytes, *, created_ms: int | None = None) -> bytes:
    """*archive* (of vTPM *uuid*) sealed with the 32-byte migration *key*,
    stamped *created_ms* (default: now)."""
    if len(key) != KEY:
        raise ValueError("the migration key is 32 bytes")
    nonce = os.urandom(NONCE)
    head = header(uuid, now_ms() if created_ms is None else created_ms) + nonce
    return head + AESGCM(key).encrypt(nonce, archive, head)


def open_sealed(source: str, data: bytes, key: bytes) -> Opened:
    """Sealed *data* (read from *source*) once authenticated with *key*: the
    uuid and time its header names, and the archive; one line naming
    *source* otherwise."""
    end = data.find(b"\n", 0, MAX_HEADER)
    found = HEADER.fullmatch(data[: end + 1]) if end >= 0 else None
    if found is None:
        raise VtpmServiceError(f"{source}: damaged header; not a sealed vTPM export")
    version, cipher, uuid_text = (g.decode("ascii") for g in found.groups()[:3])
    created = found.group(4)
    if int(version) != VERSION or cipher != CIPHER:
        raise VtpmServiceError(
            f"{source}: sealed with format {version} ({cipher}); this version reads "
            f"format {VERSION} ({CIPHER})"
        )
    if created is None:
        raise VtpmServiceError(f"{source}: damaged header (no export time)")
    try:
        uuid = canonical_uuid(uuid_text)
    except UsageError:  # the file's fault, not the caller's
        raise VtpmServiceError(f"{source}: header names no canonical uuid") from None
    start = end + 1
    if len(data) < start + NONCE + TAG:
        raise VtpmServiceError(f"{source}: truncated (no room for the nonce and the tag)")
    nonce = data[start : start + NONCE]
    try:
        archive = AESGCM(key).decrypt(nonce, data[start + NONCE :], data[: start + NONCE])
    except InvalidTag:
        raise VtpmServiceError(
            f"{source}: does not authenticate with this migration key: wrong key, or the "
            "file was truncated or modified"
        ) from None
    return Opened(uuid, int(created), nonce, archive)
