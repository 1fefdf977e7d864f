"""One vTPM address format for the whole code base.

* ``swtpm:tcp:HOST:PORT``: a swtpm data socket on TCP (HOST may be ``[v6]``);
* ``swtpm:unix:PATH``: a swtpm data socket on a unix socket;
* ``xen:BACKEND[/DEVID]``: a tpmif frontend from this domain to the vTPM
  backend in domain BACKEND (a domid), device DEVID (default 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pvgrub_py.errors import UsageError
from pvgrub_py.tpm.swtpm import SocketAddress, SwtpmTransport
from pvgrub_py.tpm.transport import TpmTransport


@dataclass(frozen=True)
class VtpmAddress:
    kind: Literal["swtpm", "xen"]
    socket: SocketAddress | None = None
    backend_domid: int | None = None
    devid: int = 0

    def __str__(self) -> str:
        if self.kind == "xen":
            return f"xen:{self.backend_domid}/{self.devid}"
        return f"swtpm:{self.socket}"


def parse_vtpm_uri(text: str) -> VtpmAddress:
    scheme, _, rest = text.partition(":")
    if scheme == "swtpm":
        kind, _, where = rest.partition(":")
        if kind == "unix" and where:
            return VtpmAddress("swtpm", socket=SocketAddress(path=where))
        if kind == "tcp" and where:
            host, _, port = where.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if host and port.isdigit() and 0 < int(port) < 65536:
                return VtpmAddress("swtpm", socket=SocketAddress(host=host, port=int(port)))
    elif scheme == "xen":
        backend, _, devid = rest.partition("/")
        if backend.isdigit() and (devid == "" or devid.isdigit()):
            return VtpmAddress("xen", backend_domid=int(backend), devid=int(devid or 0))
    raise UsageError(
        f"bad vTPM address {text!r}: expected swtpm:tcp:HOST:PORT, swtpm:unix:PATH "
        "or xen:BACKEND[/DEVID]"
    )


def open_transport(address: VtpmAddress, timeout: float = 30.0) -> TpmTransport:
    if address.kind == "swtpm":
        assert address.socket is not None
        return SwtpmTransport(address.socket, timeout)
    raise UsageError(f"{address}: the Xen tpmif frontend is not available in this build")
