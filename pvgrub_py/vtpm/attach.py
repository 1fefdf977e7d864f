"""Reach a guest's vTPM instance from dom0: a temporary dom0 tpmif frontend.

This is the ``xen:BACKEND[/DEVID]`` vTPM address.  libxl has not created
the guest's own vtpm device while a bootloader runs (it attaches devices
after the build), and dom0 could not use the guest's frontend anyway, so
the measuring tool does what ``xl vtpm-attach 0 backend=...,uuid=U`` would:
it writes a dom0 vtpm device for the guest's instance uuid, connects a
frontend, measures, and removes the device again (as ``xl vtpm-attach``
and ``xl vtpm-detach`` would, Xen tools/xl/xl_vtpm.c).

The backend daemon power-cycles the instance when a dom0 frontend
connects, so the measurements start a fresh boot record.
"""

from __future__ import annotations

import secrets

from pvgrub_py.errors import UsageError
from pvgrub_py.tpm.errors import TpmTransportError
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device, remove_vtpm_device
from pvgrub_py.vtpm.frontend import TpmFront
from pvgrub_py.xen.interface import Hypervisor, XenError

#: How long a backend may take to answer the handshake: a live vtpmd takes
#: milliseconds; a dead one should fail a boot quickly, not after 30 s.
CONNECT_TIMEOUT = 10.0
#: Devids below this are left to the toolstack for dom0's own vTPMs.
FIRST_TEMPORARY_DEVID = 100
MAX_DEVID = 1 << 31


def free_devid(hv: Hypervisor) -> int:
    """A devid for a temporary dom0 frontend that no concurrent attach picks.

    The XenStore interface has no exclusive create, and several bootloaders
    (or builder threads) may attach at once, so the devid is random over a
    large range and checked against the ones in use: two picks collide with
    odds of about n^2 / 2^31 for n concurrent attaches.
    """
    with hv.xenstore() as xs:
        base = f"/local/domain/{hv.domid}/device/vtpm"
        used = {int(d) for d in xs.directory(base) or [] if d.isdigit()}
    while True:
        devid = FIRST_TEMPORARY_DEVID + secrets.randbelow(MAX_DEVID - FIRST_TEMPORARY_DEVID)
        if devid not in used:
            return devid


class AttachedVtpm:
    """A `TpmTransport` to instance ``uuid`` behind ``backend_domid``; close() detaches."""

    def __init__(
        self, hv: Hypervisor, backend_domid: int, uuid: str, timeout: float = 30.0
    ) -> None:
        if not uuid:
            raise UsageError("a xen: vTPM address needs the instance uuid (--vtpm-uuid)")
        try:
            hv.domains().info(backend_domid)
        except XenError as e:
            raise TpmTransportError(
                f"vTPM backend domain {backend_domid} does not exist ({e})"
            ) from None
        self.hv = hv
        self.device = VtpmDevice(hv.domid, backend_domid, free_devid(hv), uuid)
        with hv.xenstore() as xs:
            add_vtpm_device(xs, self.device)
        try:
            self.front = TpmFront(
                hv,
                self.device.devid,
                timeout=timeout,
                connect_timeout=min(timeout, CONNECT_TIMEOUT),
                expected_backend=backend_domid,
            ).connect()
        except BaseException:
            self._remove_device()
            raise

    def transmit(self, command: bytes) -> bytes:
        return self.front.transmit(command)

    def peer_label(self) -> str:
        """The backend's XSM label, read on the frontend's event channel."""
        return self.front.peer_label()

    def close(self) -> None:
        try:
            self.front.close()
        finally:
            self._remove_device()

    def _remove_device(self) -> None:
        try:
            with self.hv.xenstore() as xs:
                remove_vtpm_device(xs, self.device)
        except XenError:
            pass
