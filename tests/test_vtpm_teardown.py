"""A vTPM device removed under a running backend: no error for a removal.

A successful ``pvgrubctl boot --sim`` printed ``vtpm backend: xs_read:
/local/domain/0/device/vtpm/N/state: Permission denied (EACCES)``: the dom0
frontend's device was removed frontend half first, and a backend woken in
between read the vanished frontend's state (its parent is not the backend's
to read).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pvgrub_py.sim.host import SimHost
from pvgrub_py.sim.testing import temporary_host
from pvgrub_py.vtpm.backend import VtpmBackend
from pvgrub_py.vtpm.devices import VtpmDevice, add_vtpm_device, remove_vtpm_device

UUID = "7b5b6d2e-0c5e-4c39-9a63-4f4f0e0b1c1d"


class RecordingStore:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def rm(self, path: str) -> None:
        self.removed.append(path)


def test_the_backend_half_is_removed_before_the_frontend_half() -> None:
    device = VtpmDevice(0, 3, 7, UUID)
    xs = RecordingStore()
    remove_vtpm_device(xs, device)  # type: ignore[arg-type]
    assert xs.removed == [device.backend_path, device.frontend_path]


@pytest.fixture
def host() -> Iterator[SimHost]:
    with temporary_host(prefix="vtpmtd") as h:
        yield h


@pytest.mark.integration
def test_a_device_removed_while_the_backend_looks_is_no_error(
    host: SimHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    be = host.create_domain()
    with host.dom0.xenstore() as xs:  # what the toolstack gives a driver domain
        xs.mkdir(f"/local/domain/{be}/backend/vtpm")
        xs.set_perms(f"/local/domain/{be}/backend", [f"n{be}"])
        xs.set_perms(f"/local/domain/{be}/backend/vtpm", [f"n{be}"])
    device = VtpmDevice(0, be, 9, UUID)  # a dom0 frontend, as the bootloader's attach
    with host.dom0.xenstore() as xs:
        add_vtpm_device(xs, device)
    with host.attach(be, host.token(be)) as hv:
        backend = VtpmBackend(hv, lambda link: None)  # type: ignore[arg-type,return-value]
        try:
            backend.rescan()
            assert (0, 9) in backend.links
            # The backend listed the device, then the toolstack removed both halves.
            root = backend.root
            listing = {root: ["0"], f"{root}/0": ["9"]}
            with host.dom0.xenstore() as xs:
                remove_vtpm_device(xs, device)
            monkeypatch.setattr(backend._xs, "directory", lambda path: listing.get(path))
            backend.rescan()  # raised XenError EACCES, logged after every boot
            monkeypatch.undo()
            backend.rescan()
            assert not backend.links
        finally:
            backend.stop()
