"""One vTPM address format for the whole code base.

* ``swtpm:tcp:HOST:PORT``: a swtpm data socket on TCP (HOST may be ``[v6]``);
* ``swtpm:unix:PATH``: a swtpm data socket on a unix socket;
* ``xen:BACKEND[/DEVID]``: a tpmif frontend from this domain to the vTPM
  backend in domain BACKEND (a domid), device DEVID (default 0).

What reaches the vTPM at an address (a swtpm socket, or a dom0 tpmif attach
on the real host or the simulator) is wired by the program:
`pvgrub_py.cli.connect`.
"""

from __future__ import annotations

from pvgrub_py.errors import UsageError
from pvgrub_py.record import record
from pvgrub_py.tpm.socket_address import SocketAddress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal


@record(frozen=True)
class VtpmAddress:
    kind: Literal["swtpm", "xen"]
    socket: SocketAddress | None = None
    backend_domid: int | None = None
    devid: int = 0

    def __str__(self) -> str:
        if self.kind == "xen":
            return f"xen:{self.backend_domid}/{self.devid}"
        return f"swtpm:{self.socket}"


#: Domain ids below DOMID_FIRST_RESERVED (xen/include/public/xen.h, 0x7FF0).
MAX_DOMID = 0x7FEF
#: A tpmif device id is a xenstore path component; libxl numbers them from 0.
MAX_DEVID = 0xFFFF
#: sun_path holds 108 bytes with the terminating NUL (unix(7)).
MAX_UNIX_PATH = 107


def _number(text: str, lo: int, hi: int) -> int | None:
    """*text* as a decimal in [lo, hi]: ASCII digits only (``"²"``.isdigit() is true)."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > len(str(hi)):
        return None
    value = int(text)
    return value if lo <= value <= hi else None


def parse_vtpm_uri(text: str) -> VtpmAddress:
    scheme, _, rest = text.partition(":")
    if scheme == "swtpm":
        kind, _, where = rest.partition(":")
        if (
            kind == "unix" and where and "\0" not in where
            and len(where.encode("utf-8", "surrogateescape")) <= MAX_UNIX_PATH
        ):  # fmt: skip
            return VtpmAddress("swtpm", socket=SocketAddress(path=where))
        if kind == "tcp" and where:
            host, _, port_text = where.rpartition(":")
            if host.startswith("[") or host.endswith("]"):
                bracketed = host.startswith("[") and host.endswith("]")
                host = host[1:-1] if bracketed and ":" in host else ""
            port = _number(port_text, 1, 65535)
            if host and port is not None and host.isprintable() and " " not in host:
                return VtpmAddress("swtpm", socket=SocketAddress(host=host, port=port))
    elif scheme == "xen":
        backend_text, _, devid_text = rest.partition("/")
        backend = _number(backend_text, 0, MAX_DOMID)
        devid = _number(devid_text, 0, MAX_DEVID) if devid_text else 0
        if backend is not None and devid is not None:
            return VtpmAddress("xen", backend_domid=backend, devid=devid)
    raise UsageError(
        f"bad vTPM address {text!r}: expected swtpm:tcp:HOST:PORT, swtpm:unix:PATH "
        "or xen:BACKEND[/DEVID]"
    )
