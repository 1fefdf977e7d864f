"""GRUB's environment block (``grubenv``), read-only.

Format (GRUB manual, "Environment block"; ``grub-core/lib/envblk.c``): the
file starts with the signature line ``# GRUB Environment Block``, followed
by ``name=value`` lines; the rest is padding with ``#`` so the file keeps
a fixed size (1024 bytes as written by ``grub-editenv``).  In values a
backslash escapes the next character, which is how a newline or backslash
is stored.  Lines starting with ``#`` are skipped.

GRUB checks only the signature, not the size, so a short block (petitboot's
fixtures) is still read; we do the same and report the odd size.  We never
write the block: ``save_env`` is ignored because the guest disk is
read-only to us.
"""

from __future__ import annotations

from dataclasses import dataclass

SIGNATURE = b"# GRUB Environment Block\n"
STANDARD_SIZE = 1024


@dataclass(frozen=True)
class EnvBlock:
    variables: dict[str, str]
    size: int

    @property
    def standard_size(self) -> bool:
        return self.size == STANDARD_SIZE


def parse_envblk(data: bytes) -> EnvBlock | None:
    """Parse a grubenv file; ``None`` when the signature is missing."""
    if not data.startswith(SIGNATURE):
        return None
    text = data[len(SIGNATURE) :]
    variables: dict[str, str] = {}
    i = 0
    n = len(text)
    while i < n:
        if text[i : i + 1] == b"#":
            nl = text.find(b"\n", i)
            i = n if nl < 0 else nl + 1
            continue
        eq = text.find(b"=", i)
        nl = text.find(b"\n", i)
        if eq < 0 or (0 <= nl < eq):
            # A line without '=': GRUB's iterator skips it.
            i = n if nl < 0 else nl + 1
            continue
        name = text[i:eq]
        j = eq + 1
        value = bytearray()
        while j < n and text[j : j + 1] != b"\n":
            if text[j : j + 1] == b"\\" and j + 1 < n:
                j += 1
            value += text[j : j + 1]
            j += 1
        variables[_decode(name)] = _decode(bytes(value))
        i = j + 1
    return EnvBlock(variables, len(data))


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
