"""GUIDs as text, without the ``uuid`` module.

``import uuid`` imports ``platform`` and asks it for the system name
(~2 ms), a cost every boot's sandboxed parser paid for two things: the
GPT partition type GUIDs (UEFI 2.10 section 5.3.3, stored with their first
three fields little-endian) and the filesystem UUIDs of ext, XFS and Btrfs
superblocks (16 bytes in order).  The text is the one ``str(uuid.UUID)``
gives: 8-4-4-4-12 lowercase hex digits.
"""

from __future__ import annotations


def guid_text(raw: bytes) -> str:
    """The 16 bytes *raw*, in order, as ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``."""
    if len(raw) != 16:
        raise ValueError(f"a GUID is 16 bytes, not {len(raw)}")
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def mixed_endian_guid_text(raw: bytes) -> str:
    """A GUID stored as UEFI stores one (GPT): its first three fields
    little-endian, the last 8 bytes in order."""
    if len(raw) != 16:
        raise ValueError(f"a GUID is 16 bytes, not {len(raw)}")
    return guid_text(raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:])
