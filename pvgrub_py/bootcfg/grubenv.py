"""GRUB's environment block (``grubenv``), read-only.

Format (GRUB manual, "Environment block"; ``grub-core/lib/envblk.c``): the
file starts with the signature line ``# GRUB Environment Block``, followed
by ``name=value`` lines; the rest is padding with ``#`` so the file keeps
a fixed size (1024 bytes as written by ``grub-editenv``).  In values a
backslash escapes the next character, which is how a newline or backslash
is stored.  Lines starting with ``#`` are skipped.

GRUB checks only the signature, not the size, so a short block (petitboot's
fixtures) is still read; we do the same and report the odd size.

`set_envblk_var` computes the block ``save_env`` leaves behind.  We never
write it back: guest disks are read-only to us, so the interpreter keeps
it in memory (a later ``load_env`` in the same run sees it) and reports it
in `BootMenu.env_writes`.
"""

from __future__ import annotations

from pvgrub_py.record import record

SIGNATURE = b"# GRUB Environment Block\n"
STANDARD_SIZE = 1024


@record(frozen=True)
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
    """Bytes as the config text holds them (`files.decode_config`: UTF-8, and
    any other byte as itself through ``surrogateescape``), so a value loaded
    into a variable and expanded into a cmdline keeps its exact bytes."""
    return raw.decode("utf-8", "surrogateescape")


def _escape(value: str) -> bytes:
    out = bytearray()
    for ch in value.encode("utf-8", "surrogateescape"):
        if ch in b"\\\n":
            out += b"\\"
        out.append(ch)
    return bytes(out)


def set_envblk_var(data: bytes, name: str, value: str) -> bytes | None:
    """The block after ``save_env`` stores *name*, or None if it has no room.

    The block keeps its size.  The new ``name=value`` line takes the place
    of, in order of preference: the first line already holding *name*; the
    last complete line that is not an assignment (a ``#`` comment or
    garbage); the start of the unterminated tail (the ``#`` padding).  Text
    after that slot moves up or down; growth is taken from the tail (None
    when the tail is too short) and a shrink is padded with ``#``.  These
    are the rules petitboot's save_env tests pin down (its
    ``test-grub2-save-env`` vectors), which GRUB's envblk also follows for
    blocks with padding.
    """
    if not data.startswith(SIGNATURE):
        return None
    body = data[len(SIGNATURE) :]
    size = len(body)
    entry = name.encode("utf-8", "surrogateescape") + b"=" + _escape(value) + b"\n"
    want = name.encode("utf-8", "surrogateescape")
    slot: tuple[int, int] | None = None  # (start, end) of the line replaced
    matched = False
    tail_start = size  # first byte of the unterminated tail
    pos = 0
    while pos < size:
        nl = body.find(b"\n", pos)
        if nl < 0:
            tail_start = pos
            break
        line = body[pos:nl]
        eq = line.find(b"=")
        if not matched and eq < 0:
            slot = (pos, nl + 1)
        elif not matched and line[:eq] == want:
            slot = (pos, nl + 1)
            matched = True
        pos = nl + 1
    room = size - tail_start
    if slot is None:
        if room < len(entry):
            return None
        slot = (tail_start, tail_start + len(entry))
    start, end = slot
    growth = len(entry) - (end - start)
    if growth > room:
        return None
    rest = body[end:]
    new = body[:start] + entry + (rest[: len(rest) - growth] if growth > 0 else rest)
    new += b"#" * (size - len(new))
    return SIGNATURE + new
