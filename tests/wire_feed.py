"""A pipe that delivers wire frames, as a parser child would send them."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from pvgrub_py.bootloader import wire


def frames_pipe(frames: Sequence[tuple[bytes, bytes]]) -> int:
    """The read end of a pipe a thread writes *frames* into, then closes."""
    r, w = os.pipe()

    def write() -> None:
        try:
            for kind, payload in frames:
                os.write(w, wire.encode_header(kind, len(payload)) + payload)
        finally:
            os.close(w)

    threading.Thread(target=write, daemon=True).start()
    return r
