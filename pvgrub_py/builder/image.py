"""The ``xc_dom_*`` steps as an interface, so one orchestrator drives both
the real libxenguest and the simulator's rendering of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class MagicFrames:
    """Frames the toolstack hands to xenstored and xenconsoled."""

    console_pfn: int
    console_mfn: int
    xenstore_pfn: int
    xenstore_mfn: int


class ImageLayout(Protocol):
    """Where a builder put the guest's pieces (the simulator's `GuestLayout`,
    what libxenguest reports back), for the build report."""

    def to_json(self) -> dict[str, object]: ...


class DomainImageSteps(Protocol):
    backend: str
    #: ms of the build spent copying the kernel and modules in (0 where not timed apart).
    copy_ms: float
    #: the grant entries `gnttab_seed` wrote, for the report (empty where not recorded).
    seeded: list[dict[str, int]]

    def kernel_mem(self, data: bytes) -> None: ...
    def module_mem(self, data: bytes) -> None: ...
    def set_ports(self, console_port: int, xenstore_port: int) -> None: ...
    def boot_xen_init(self, domid: int) -> None: ...
    def parse_image(self) -> str: ...  # the guest type
    def mem_init(self, mem_mb: int) -> None: ...
    def boot_mem_init(self) -> None: ...
    def build_image(self) -> None: ...
    def boot_image(self) -> None: ...
    def gnttab_seed(self, console_domid: int, xenstore_domid: int) -> None: ...
    def magic_frames(self) -> MagicFrames: ...
    def layout(self) -> ImageLayout: ...
    def release(self, destroyed: bool) -> None: ...
