"""Resource accounting of a simulated host, so tests can assert that nothing leaks.

``grants`` are live grant entries a domain issued (including those whose end of
access is deferred because they are still mapped), ``mappings`` the foreign pages a
domain maps, ``ports`` the event-channel ports (unbound or bound) its processes hold
through their evtchn handles, ``toolstack_ports`` the ports dom0 allocated *in* the
domain (its xenstore port), which live as long as the domain, and ``connections`` the
processes attached as it.  A frontend/backend session that shut down cleanly leaves
grants, mappings and ports (`Counts.resources`) at zero on both sides.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Counts:
    grants: int = 0
    mappings: int = 0
    ports: int = 0
    toolstack_ports: int = 0
    connections: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.grants + other.grants,
            self.mappings + other.mappings,
            self.ports + other.ports,
            self.toolstack_ports + other.toolstack_ports,
            self.connections + other.connections,
        )

    @property
    def resources(self) -> int:
        """Grants + mappings + ports: what must return to zero after a session."""
        return self.grants + self.mappings + self.ports


@dataclass(frozen=True)
class HostStats:
    domains: dict[int, Counts] = field(default_factory=dict)
    #: Domains destroyed but still held by foreign mappings of their pages.
    zombies: tuple[int, ...] = ()
    #: memfds the daemon holds for granted pages.
    page_files: int = 0
    evtchn_handles: int = 0

    @property
    def total(self) -> Counts:
        result = Counts()
        for counts in self.domains.values():
            result = result + counts
        return result

    def of(self, domid: int) -> Counts:
        return self.domains.get(domid, Counts())

    def to_json(self) -> bytes:
        doc = {
            "domains": {str(d): asdict(c) for d, c in sorted(self.domains.items())},
            "zombies": list(self.zombies),
            "page_files": self.page_files,
            "evtchn_handles": self.evtchn_handles,
            "total": asdict(self.total),
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> HostStats:
        doc = json.loads(data)
        return cls(
            domains={int(d): Counts(**c) for d, c in doc["domains"].items()},
            zombies=tuple(int(z) for z in doc["zombies"]),
            page_files=int(doc["page_files"]),
            evtchn_handles=int(doc["evtchn_handles"]),
        )
