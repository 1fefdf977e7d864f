"""Where a simulated host keeps things in its host directory.

::

    DIR/hyp.sock            the hypervisor socket (SOCK_SEQPACKET), one connection
                            per attached process
    DIR/tokens/<domid>      the secret that proves "I am domid" at attach (mode 0600);
                            dom0's exists from the start, a domU's from its creation
                            to its destruction
    DIR/xenstored/socket    xenstored's toolstack socket (dom0), and
    DIR/xenstored/socket.d/<domid>  per introduced domain (when the host started
                            its own xenstored)
    DIR/daemon.pid, DIR/daemon.log, DIR/xenstored.log

Unix socket paths are limited to 107 bytes, so keep DIR short (``/tmp/...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SUN_PATH_MAX = 107


@dataclass(frozen=True)
class HostLayout:
    root: Path

    @classmethod
    def of(cls, host_dir: str | os.PathLike[str]) -> HostLayout:
        return cls(Path(os.path.abspath(os.fspath(host_dir))))

    @property
    def socket(self) -> Path:
        return self.root / "hyp.sock"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    def token(self, domid: int) -> Path:
        return self.tokens / str(domid)

    @property
    def xenstored_socket(self) -> Path:
        return self.root / "xenstored" / "socket"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def xenstored_log(self) -> Path:
        return self.root / "xenstored.log"

    def check_socket_paths(self) -> str | None:
        """Why this directory cannot hold our sockets, or None if it can."""
        longest = f"{self.xenstored_socket}.d/32752"
        for path in (str(self.socket), longest):
            if len(os.fsencode(path)) > SUN_PATH_MAX:
                return f"socket path {path} is longer than {SUN_PATH_MAX} bytes; use a shorter DIR"
        return None
