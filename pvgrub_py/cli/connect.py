"""The one place that turns the user's addresses into objects: the hypervisor
(``--sim DIR``, ``$PVGRUB_SIM`` or the real host) and the transport to a vTPM.

Lower layers get these objects, never a directory or an address to open
themselves: `tpm` knows nothing of tpmif or the simulator, `xen` nothing of
the simulator.  Everything is imported when it is used: the bootloader
imports this module on every run, measured or not (bench/bench_bootloader.py).
"""

from __future__ import annotations

import os

from pvgrub_py.errors import PvgrubError

TYPE_CHECKING = False

if TYPE_CHECKING:
    from pvgrub_py.tpm.transport import TpmTransport
    from pvgrub_py.tpm.uri import VtpmAddress
    from pvgrub_py.vtpm.attach import AttachedVtpm
    from pvgrub_py.vtpm.frontend import TpmFront
    from pvgrub_py.xen.interface import Hypervisor

#: Where a program without ``--sim`` learns of a simulated host.
SIM_ENV = "PVGRUB_SIM"


def open_hypervisor(sim_dir: str | None = None, domid: int = 0) -> Hypervisor:
    """The simulated host in *sim_dir* (or ``$PVGRUB_SIM``), else the real one,
    which needs a dom0 with privcmd."""
    sim_dir = sim_dir or os.environ.get(SIM_ENV) or None
    if sim_dir:
        from pvgrub_py.sim.client import SimHypervisor

        return SimHypervisor.attach(sim_dir, domid)
    from pvgrub_py.xen.availability import availability

    status = availability()
    if not status.built:
        raise PvgrubError(
            f"no Xen bindings ({status.reason}); use --sim DIR to run on the simulator"
        )
    from pvgrub_py.xen.libxc_host import LibxcHypervisor

    return LibxcHypervisor(domid)


def open_guest_hypervisor(sim_dir: str | None, domid: int | None) -> Hypervisor:
    """A guest's own view of its host: on the simulator in *sim_dir*, domain
    *domid*; on Xen, the domain this runs in, whose domid is xenstore's
    relative node ``domid`` (libxl writes it; a domU has no privcmd to ask
    Xen).  Nothing here needs privcmd: the xenstore, grant-share and
    event-channel devices of a domU are enough."""
    if sim_dir:
        from pvgrub_py.sim.client import SimHypervisor

        if domid is None:
            raise PvgrubError("the simulator needs the guest's domid (--domid)")
        return SimHypervisor.attach(sim_dir, domid)
    from pvgrub_py.xen.availability import availability

    status = availability()
    if not status.built:
        raise PvgrubError(f"no Xen bindings ({status.reason})")
    from pvgrub_py.xen.interface import DOMID_SELF
    from pvgrub_py.xen.libxc_host import LibxcHypervisor

    with LibxcHypervisor(DOMID_SELF) as probe, probe.xenstore() as xs:
        raw = xs.read("domid")
    text = (raw or b"").strip()
    if not text.isdigit() or len(text) > 5:
        raise PvgrubError(
            f"xenstore: this domain's 'domid' node is missing or not a number: {raw!r}"
        )
    return LibxcHypervisor(int(text))


class VtpmConnector:
    """`pvgrub_py.measure.vtpm.Connect`: a transport to the vTPM at an address.

    ``swtpm:`` addresses are sockets.  ``xen:`` addresses attach a temporary
    dom0 tpmif frontend to an instance of the backend domain, on *hv* when it
    is given (the caller's, left open), else on a hypervisor opened for that
    transport alone from *sim_dir* / ``$PVGRUB_SIM`` / the real host and
    closed with it; closing the transport detaches.  A ``xen:`` transport is
    also `PeerLabelled`: it can tell the backend's XSM label.
    """

    def __init__(self, hv: Hypervisor | None = None, *, sim_dir: str | None = None) -> None:
        self.hv = hv
        self.sim_dir = sim_dir

    def __call__(self, address: VtpmAddress, uuid: str | None, timeout: float) -> TpmTransport:
        if address.kind == "swtpm":
            from pvgrub_py.tpm.swtpm import SwtpmTransport

            assert address.socket is not None
            return SwtpmTransport(address.socket, timeout)
        from pvgrub_py.vtpm.attach import AttachedVtpm

        assert address.backend_domid is not None
        if self.hv is not None:
            return AttachedVtpm(self.hv, address.backend_domid, uuid or "", timeout)
        if not (self.sim_dir or os.environ.get(SIM_ENV)):
            # Say what this caller can do: not every program has --sim.
            from pvgrub_py.xen.availability import availability

            status = availability()
            if not status.built:
                raise PvgrubError(
                    f"no Xen bindings ({status.reason}): a xen: vTPM needs a Xen dom0 "
                    f"(or {SIM_ENV}=DIR for the simulator)"
                )
        hv = open_hypervisor(self.sim_dir)
        try:
            return _OwningTransport(
                AttachedVtpm(hv, address.backend_domid, uuid or "", timeout), hv
            )
        except BaseException:
            hv.close()
            raise


def open_transport(
    address: VtpmAddress,
    timeout: float = 30.0,
    *,
    uuid: str | None = None,
    sim_dir: str | None = None,
) -> TpmTransport:
    """A transport to the vTPM at *address* (see `VtpmConnector`)."""
    return VtpmConnector(sim_dir=sim_dir)(address, uuid, timeout)


class _OwningTransport:
    """A ``xen:`` vTPM (a dom0 attach, or a guest's own frontend) that also
    closes the hypervisor handle it was opened with."""

    def __init__(self, inner: AttachedVtpm | TpmFront, owned: Hypervisor) -> None:
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


def open_guest_transport(
    address: VtpmAddress, domid: int, sim_dir: str | None = None, timeout: float = 30.0
) -> TpmTransport:
    """The vTPM as guest *domid* itself sees it: its own tpmif frontend
    (``device/vtpm/DEVID``, to the backend the ``xen:`` address names), on the
    simulated host in *sim_dir* (or ``$PVGRUB_SIM``), where a program may act
    as any domain.  Unlike a dom0 attach (`VtpmConnector`), which vtpmd
    answers by power-cycling the instance, this is the guest's running vTPM:
    its PCRs as booted, its loaded contexts.  Closing the transport leaves the
    device ready for the guest's next frontend."""
    from pvgrub_py.errors import UsageError
    from pvgrub_py.vtpm.frontend import TpmFront

    if address.kind != "xen":
        raise UsageError(f"--domid {domid}: a guest's own vTPM is a xen: address, not {address}")
    if not (sim_dir or os.environ.get(SIM_ENV)):
        raise UsageError(f"--domid {domid} acts as that guest on the simulator: give --sim DIR")
    hv = open_hypervisor(sim_dir, domid)
    try:
        front = TpmFront(
            hv, address.devid, timeout=timeout, expected_backend=address.backend_domid
        ).connect()
    except BaseException:
        hv.close()
        raise
    return _OwningTransport(front, hv)
