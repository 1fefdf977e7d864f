"""The toolstack's half of a vTPM device: the xenstore nodes libxl writes.

Before a frontend and a backend can meet, the toolstack (dom0) creates both
directories (Xen tools/libs/light/libxl_vtpm.c, ``libxl__set_xenstore_vtpm``,
and libxl_device.c, ``libxl__device_generic_add``):

* frontend ``/local/domain/<fe>/device/vtpm/<devid>/``: ``backend``,
  ``backend-id``, ``state = 1``, ``handle``; permissions ``n<fe>, r<be>``;
* backend ``/local/domain/<be>/backend/vtpm/<fe>/<devid>/``: ``frontend``,
  ``frontend-id``, ``online = 1``, ``state = 1``, ``handle``, ``uuid``,
  ``resume = False``; permissions ``n<be>, r<fe>``.

The bootloader uses this to attach a dom0 frontend to a guest's vTPM
instance (what ``xl vtpm-attach 0 ...`` does, Xen tools/xl/xl_vtpm.c
``main_vtpmattach``, done directly), and the domain builder to give a new
guest its vTPM.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvgrub_py.xen.interface import XenStore


@dataclass(frozen=True)
class VtpmDevice:
    frontend_domid: int
    backend_domid: int
    devid: int
    uuid: str

    @property
    def frontend_path(self) -> str:
        return f"/local/domain/{self.frontend_domid}/device/vtpm/{self.devid}"

    @property
    def backend_path(self) -> str:
        return f"/local/domain/{self.backend_domid}/backend/vtpm/{self.frontend_domid}/{self.devid}"


def add_vtpm_device(xs: XenStore, dev: VtpmDevice) -> None:
    """Write both halves of the device, backend first (the backend watches for it)."""
    fe, be = dev.frontend_domid, dev.backend_domid
    # ``frontend`` goes last: a backend adopts a device once it is there, so
    # every other key (the uuid above all) must already be readable.
    back = {
        "frontend-id": str(fe),
        "online": "1",
        "state": "1",
        "handle": str(dev.devid),
        "uuid": dev.uuid,
        "resume": "False",
        "frontend": dev.frontend_path,
    }
    front = {
        "backend": dev.backend_path,
        "backend-id": str(be),
        "state": "1",
        "handle": str(dev.devid),
    }
    xs.mkdir(dev.frontend_path)
    xs.set_perms(dev.frontend_path, [f"n{fe}", f"r{be}"])
    for key, value in front.items():
        xs.write(f"{dev.frontend_path}/{key}", value.encode())
    xs.mkdir(dev.backend_path)
    xs.set_perms(dev.backend_path, [f"n{be}", f"r{fe}"])
    for key, value in back.items():
        xs.write(f"{dev.backend_path}/{key}", value.encode())


def remove_vtpm_device(xs: XenStore, dev: VtpmDevice) -> None:
    """Remove both halves, backend first (the mirror of `add_vtpm_device`).

    The backend domain may read the frontend's nodes only while they exist:
    once the frontend directory is gone, a read of its ``state`` is checked
    against ``/local/domain/<fe>/device/vtpm``, which the backend may not
    read, and fails with EACCES.  Removed frontend first, a backend woken
    between the two removals found its device still listed and logged
    ``xs_read: .../device/vtpm/N/state: Permission denied`` after every
    successful boot.  With the backend half gone first, the backend only ever
    sees a device disappear (libxl removes both in one transaction,
    ``libxl__device_destroy``; our XenStore has no transactions)."""
    xs.rm(dev.backend_path)
    xs.rm(dev.frontend_path)
