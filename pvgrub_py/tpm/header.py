"""The command/response header both TPM versions open every packet with.

tag u16 | size u32 | command/ordinal or return code u32, big-endian: TPM 1.2
Part 2 section 6 (``paramSize``, ``ordinal``/``returnCode``) and TPM 2.0
Part 1 "Command/Response Header" (``commandSize``/``responseSize``,
``commandCode``/``responseCode``) lay it out the same, which is how a reply
tells which version answered (its tag).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">HII")
HEADER_SIZE = HEADER.size
