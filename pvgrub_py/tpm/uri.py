"""One vTPM address format for the whole code base.

* ``swtpm:tcp:HOST:PORT``: a swtpm data socket on TCP (HOST may be ``[v6]``);
* ``swtpm:unix:PATH``: a swtpm data socket on a unix socket;
* ``xen:BACKEND[/DEVID]``: a tpmif frontend from this domain to the vTPM
  backend in domain BACKEND (a domid), device DEVID (default 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pvgrub_py.errors import UsageError
from pvgrub_py.tpm.swtpm import SocketAddress, SwtpmTransport
from pvgrub_py.tpm.transport import TpmTransport
from pvgrub_py.xen.interface import Hypervisor

if TYPE_CHECKING:
    from pvgrub_py.vtpm.attach import AttachedVtpm


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


def open_transport(
    address: VtpmAddress,
    timeout: float = 30.0,
    *,
    uuid: str | None = None,
    sim_dir: str | None = None,
) -> TpmTransport:
    """A transport to the vTPM at ``address``.

    ``xen:`` addresses attach a temporary dom0 tpmif frontend to instance
    ``uuid`` of the backend domain, on the real host or on the simulator in
    ``sim_dir``; closing the transport detaches it.  That transport is also
    `PeerLabelled`: it can tell the backend's XSM label.
    """
    if address.kind == "swtpm":
        assert address.socket is not None
        return SwtpmTransport(address.socket, timeout)
    from pvgrub_py.vtpm.attach import AttachedVtpm
    from pvgrub_py.xen.connect import open_hypervisor

    assert address.backend_domid is not None
    hv = open_hypervisor(sim_dir)
    try:
        return _OwningTransport(AttachedVtpm(hv, address.backend_domid, uuid or "", timeout), hv)
    except BaseException:
        hv.close()
        raise


class _OwningTransport:
    """An attached ``xen:`` vTPM that also closes the hypervisor handle it was
    opened with."""

    def __init__(self, inner: AttachedVtpm, owned: Hypervisor) -> None:
        self.inner = inner
        self.owned = owned

    def transmit(self, command: bytes) -> bytes:
        return self.inner.transmit(command)

    def peer_label(self) -> str:
        """The backend's XSM label (`tpm.transport.PeerLabelled`)."""
        return self.inner.peer_label()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.owned.close()
