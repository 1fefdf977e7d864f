"""The pipe protocol between the deprivileged parser child and its parent.

The child (which reads the guest disk, and which a hostile disk may have
taken over) sends; the parent (root, which measures and writes) receives
and trusts nothing it is told.  One direction, one stream of frames::

    frame   = kind (1 byte) | length (4 bytes, big-endian) | payload
    session = PLAN  (START (DATA* | MAP))*  END
            | ... FAIL                  (at any point; the child then exits 1)

* ``PLAN``: the `BootPlan` as UTF-8 JSON (`plan.plan_to_json`), once, first.
* ``START``: JSON ``{"index": i, "size": n}``: file *i* of ``plan.files``
  (kernel, then each initrd, strictly in that order) begins; exactly *n*
  bytes follow in DATA frames.  The parent checks *n* against its own
  caps before it reads a byte of it.
* ``DATA``: the next bytes of the current file, at most `MAX_DATA`.
* ``MAP``: instead of DATA, when START says ``"mapped": true``: where the
  file's bytes lie in the disk image (`encode_extents`); the parent reads,
  hashes and writes them itself from its own descriptor of the image,
  after checking that they cover exactly the announced size and lie
  inside the image (`pvgrub_py.disk.extents`).
* ``END``: the child has sent everything; empty payload.
* ``FAIL``: one line of UTF-8 saying what went wrong (scrubbed again by
  the parent before it is printed).

Lengths are announced and checked twice: each frame's payload against
the per-kind cap in the frame header, each file's bytes against its
START.  The parent hashes and writes the DATA it receives, so the bytes
measured are exactly the bytes it writes, whatever the child does.  The
codec is pure (bytes in, values out); the parent's reader adds the
deadline (`FrameReader`).
"""

from __future__ import annotations

import os
import select
import struct
import time
from collections.abc import Sequence

from pvgrub_py.errors import PvgrubError

HEADER = struct.Struct(">cI")

PLAN = b"P"
START = b"S"
DATA = b"D"
MAP = b"M"
END = b"Z"
FAIL = b"F"

#: Largest payload per kind.  DATA is a few chunks (the copy chunk is 1 MiB);
#: MAP holds `pvgrub_py.disk.extents.MAX_EXTENTS` extents of 16 bytes;
#: a plan carries at most 4096 menu lines with 1 MiB cmdlines in theory,
#: but 16 MiB is far above any real menu and bounds the parent's buffer.
MAX_PAYLOAD = {PLAN: 16 << 20, START: 256, DATA: 8 << 20, MAP: 1 << 20, END: 0, FAIL: 4096}

EXTENT = struct.Struct(">QQ")
#: The image offset that stands for a run of zeros (a sparse run).
ZEROS = (1 << 64) - 1


class ProtocolError(PvgrubError):
    """The child broke the protocol: a compromised or crashed parser."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        #: The pipe ended early (the child may simply have died).
        self.truncated = truncated


class ChildTimeout(PvgrubError):
    """The child did not finish within the bootloader time limit."""


def encode_header(kind: bytes, length: int) -> bytes:
    if kind not in MAX_PAYLOAD or not 0 <= length <= MAX_PAYLOAD[kind]:
        raise ValueError(f"bad frame {kind!r} of {length} bytes")
    return HEADER.pack(kind, length)


def decode_header(raw: bytes) -> tuple[bytes, int]:
    """(kind, payload length) of a frame header, checked against the caps."""
    if len(raw) != HEADER.size:
        raise ProtocolError(f"deprivileged parser: truncated frame header ({len(raw)} bytes)")
    kind, length = HEADER.unpack(raw)
    cap = MAX_PAYLOAD.get(kind)
    if cap is None:
        raise ProtocolError(f"deprivileged parser: unknown frame kind {kind!r}")
    if length > cap:
        raise ProtocolError(
            f"deprivileged parser: {kind.decode('latin-1')} frame of {length} bytes "
            f"exceeds its {cap}-byte cap"
        )
    return kind, length


def write_frame(fd: int, kind: bytes, payload: bytes | memoryview = b"") -> None:
    """Send one frame, however many ``writev`` calls it takes."""
    parts: list[bytes | memoryview] = [encode_header(kind, len(payload))]
    if payload:
        parts.append(memoryview(payload))
    while parts:
        done = os.writev(fd, parts)
        while parts and done >= len(parts[0]):
            done -= len(parts[0])
            parts.pop(0)
        if parts and done:
            parts[0] = memoryview(parts[0])[done:]


def encode_extents(extents: Sequence[tuple[int | None, int]]) -> bytes:
    """A MAP payload: (image offset or `ZEROS`, length) pairs, big-endian."""
    pack = EXTENT.pack
    return b"".join(pack(ZEROS if where is None else where, n) for where, n in extents)


def decode_extents(payload: bytes) -> list[tuple[int | None, int]]:
    if len(payload) % EXTENT.size:
        raise ProtocolError(f"deprivileged parser: a MAP frame of {len(payload)} bytes")
    return [(None if where == ZEROS else where, n) for where, n in EXTENT.iter_unpack(payload)]


class Deadline:
    """A point on the monotonic clock; None means no limit (libxl's 0)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        if self._end is None:
            return None
        return self._end - time.monotonic()


class FrameReader:
    """Frames from the child's pipe, each read bounded by the deadline."""

    def __init__(self, fd: int, deadline: Deadline) -> None:
        self.fd = fd
        self.deadline = deadline
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def _wait(self) -> None:
        left = self.deadline.remaining()
        timeout_ms = -1 if left is None else max(0, int(left * 1000) + 1)
        if (left is not None and left <= 0) or not self._poll.poll(timeout_ms):
            raise ChildTimeout(
                f"deprivileged parser: no result after {self.deadline.seconds:g} s: killed it"
            )

    def read_exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            self._wait()
            k = os.readv(self.fd, [view[got:]])
            if k == 0:
                raise ProtocolError(
                    f"deprivileged parser: pipe closed after {got} of {n} bytes of a frame",
                    truncated=True,
                )
            got += k
        return bytes(buf)

    def read_frame(self, allowed: Sequence[bytes]) -> tuple[bytes, bytes]:
        """The next frame, which must be one of *allowed* (or FAIL)."""
        self._wait()
        head = os.read(self.fd, HEADER.size)
        if not head:
            raise ProtocolError("deprivileged parser: exited without a result", truncated=True)
        if len(head) < HEADER.size:
            head += self.read_exact(HEADER.size - len(head))
        kind, length = decode_header(head)
        payload = self.read_exact(length) if length else b""
        if kind == FAIL:
            return kind, payload
        if kind not in allowed:
            want = "/".join(k.decode("latin-1") for k in allowed)
            raise ProtocolError(
                f"deprivileged parser: sent a {kind.decode('latin-1')} frame where {want} was due"
            )
        return kind, payload
