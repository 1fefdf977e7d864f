"""vTPM instances for ``pvgrubctl vtpmd``: one swtpm per guest vTPM uuid.

A vTPM instance is named by the ``uuid`` libxl writes into the vtpm backend
node (Xen tools/libs/light/libxl_vtpm.c, ``libxl__set_xenstore_vtpm``); its
state lives in ``<state-root>/<uuid>/`` so it
survives daemon restarts, like the Xen vTPM's state does.

Power cycles: a frontend in the toolstack domain (dom0: the bootloader about
to measure a boot) gets a fresh boot of the instance (TPM_Init, then
TPM_Startup), so the PCRs describe that boot only, as the Xen vTPM docs
require ("every vTPM launch must be paired with a fresh guest launch").  A
frontend of any other domain (the guest's own xen-tpmfront, after the
bootloader measured it) never resets it.
"""

from __future__ import annotations

import logging
import os
import re
import threading

from pvgrub_py.errors import PvgrubError
from pvgrub_py.inputs import describe_open_error
from pvgrub_py.tpm.launcher import SwtpmProcess
from pvgrub_py.tpm.swtpm import SwtpmTransport
from pvgrub_py.vtpm.backend import FrontendLink

log = logging.getLogger(__name__)

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TOOLSTACK_DOMID = 0


class VtpmInstanceError(PvgrubError):
    pass


class Instance:
    def __init__(self, uuid: str, state_dir: str, tpm2: bool) -> None:
        self.uuid = uuid
        self.tpm_version = "2.0" if tpm2 else "1.2"
        self.process = SwtpmProcess(tpm2=tpm2, state_dir=state_dir).start()
        self.transport: SwtpmTransport = self.process.transport()
        self.power_cycles = 0

    def power_cycle(self) -> None:
        self.transport.close()  # the TPM forgets its connections on init anyway
        self.process.power_cycle()
        self.power_cycles += 1

    def stop(self) -> None:
        self.transport.close()
        self.process.stop()


class InstanceTransport:
    """An instance's swtpm connection as the backend sees it: labelled with
    the instance's TPM version, so that the answers the backend makes itself
    (a failed TPM, an answer too large for the page) are in that version."""

    def __init__(self, instance: Instance) -> None:
        self._instance = instance
        self.tpm_version = instance.tpm_version

    def transmit(self, command: bytes) -> bytes:
        return self._instance.transport.transmit(command)

    def close(self) -> None:
        self._instance.transport.close()


class VtpmInstances:
    def __init__(self, state_root: str, tpm2: bool = False) -> None:
        self.state_root = state_root
        self.tpm2 = tpm2
        self._instances: dict[str, Instance] = {}
        self._lock = threading.Lock()
        try:
            os.makedirs(state_root, mode=0o700, exist_ok=True)
        except OSError as e:
            raise VtpmInstanceError(
                f"{state_root}: cannot hold vTPM state: {describe_open_error(e)}"
            ) from None
        if not os.path.isdir(state_root):
            raise VtpmInstanceError(f"{state_root}: not a directory; cannot hold vTPM state")

    def get(self, uuid: str) -> Instance:
        if not UUID.match(uuid):
            raise VtpmInstanceError(f"vTPM uuid {uuid!r} is not a UUID; refusing it as a name")
        key = uuid.lower()
        with self._lock:
            inst = self._instances.get(key)
            if inst is None:
                state = os.path.join(self.state_root, key)
                os.makedirs(state, mode=0o700, exist_ok=True)
                inst = self._instances[key] = Instance(key, state, self.tpm2)
                log.info("vTPM %s: started swtpm (TPM %s)", key, "2.0" if self.tpm2 else "1.2")
            return inst

    # -- VtpmBackend hooks ---------------------------------------------------------------

    def transport_for(self, link: FrontendLink) -> InstanceTransport:
        return InstanceTransport(self.get(link.uuid))

    def on_connect(self, link: FrontendLink) -> None:
        inst = self.get(link.uuid)
        if link.frontend_domid == TOOLSTACK_DOMID:
            inst.power_cycle()
            log.info("vTPM %s: power-cycled for a new boot (dom0 frontend)", inst.uuid)

    def stop(self) -> None:
        with self._lock:
            for inst in self._instances.values():
                inst.stop()
            self._instances.clear()
