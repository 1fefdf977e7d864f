"""Grant tables: who granted which page to whom, who maps it, and when it is freed.

The rules are Xen's v1 grant tables (xen/include/public/grant_table.h,
xen/common/grant_table.c) as seen through Linux's gntalloc (share) and gntdev (map)
drivers, because that is what libxengntshr and libxengnttab call on a real host:

* A grant entry names exactly one grantee domain and is read-only or read-write
  (``GTF_permit_access`` with or without ``GTF_readonly``).  Refs 0..7 are reserved
  (``GNTTAB_NR_RESERVED_ENTRIES``: console, xenstore, ...), so shared pages get refs
  from 8 up.  gntalloc caps one kernel at 1024 grants (its ``limit`` parameter):
  ENOSPC beyond that.  A grant may name a domain that does not exist (yet); nothing
  in Xen checks the grantee when the entry is written.
* Mapping (``GNTTABOP_map_grant_ref``) fails with ``GNTST_bad_domain`` for an unknown
  granter, ``GNTST_bad_gntref`` for a ref not in use, and ``GNTST_general_error`` when
  the entry is for another domain or when a read-only entry is mapped writable.
  Linux's gntdev folds *every* failed status into -EINVAL (``gntdev_map_grant_pages``),
  so on a real host the caller sees EINVAL whatever the reason; so does the simulator,
  with the GNTST status in the message and in `GrantMapError.status`.
* Ending access while the grantee still maps the page cannot free it: gntalloc's
  ``__del_gref`` finds the entry in use (``gnttab_query_foreign_access``) and leaves it
  on its list, retrying later.  The entry stays valid meanwhile.  Here the entry is
  marked ``ended`` and freed the moment its last mapping goes; until then it counts as
  a live grant, and (as on Xen, where the entry is still ``GTF_permit_access``) the
  grantee may still map it.
* Destroying the granting domain revokes its grants: no new mapping succeeds, but the
  pages already mapped stay mapped (Xen keeps the page referenced) until unmapped.
"""

from __future__ import annotations

import errno
import itertools
import os
from dataclasses import dataclass, field

from pvgrub_py.sim.domains import DOMID_FIRST_RESERVED
from pvgrub_py.sim.pages import create_pages
from pvgrub_py.xen.interface import PAGE_SIZE, XenError

GNTTAB_NR_RESERVED_ENTRIES = 8
#: gntalloc's default ``limit`` module parameter: grants one domain's kernel may hold.
GNTALLOC_LIMIT = 1024
#: Xen's ``grant_status_t`` values (grant_table.h) the simulator reports.
GNTST_GENERAL_ERROR = -1
GNTST_BAD_DOMAIN = -2
GNTST_BAD_GNTREF = -4
GNTST_NAMES = {
    GNTST_GENERAL_ERROR: "GNTST_general_error",
    GNTST_BAD_DOMAIN: "GNTST_bad_domain",
    GNTST_BAD_GNTREF: "GNTST_bad_gntref",
}


class GrantMapError(XenError):
    """A refused map: errno EINVAL as gntdev reports it, plus the GNTST status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.detail = message
        super().__init__(
            errno.EINVAL, "xengnttab_map_grant_ref", f"{GNTST_NAMES[status]}: {message}"
        )


@dataclass(eq=False)
class Region:
    """The memfd behind one share_pages call; closed when its last grant is freed."""

    fd: int
    pages: int
    live: int

    def release_one(self) -> None:
        self.live -= 1
        if self.live == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(eq=False)
class Grant:
    owner: int
    ref: int
    grantee: int
    writable: bool
    region: Region
    index: int
    ended: bool = False
    maps: int = 0


@dataclass(eq=False)
class Share:
    """One ``xengntshr_share_pages`` result, owned by one client connection."""

    share_id: int
    owner: int
    conn_id: int
    grants: list[Grant]
    region: Region


@dataclass(eq=False)
class Mapping:
    """One ``xengnttab_map_grant_ref`` result, owned by one client connection."""

    map_id: int
    mapper: int
    conn_id: int
    grant: Grant
    writable: bool


@dataclass
class _Table:
    entries: dict[int, Grant] = field(default_factory=dict)

    def free_ref(self) -> int:
        ref = GNTTAB_NR_RESERVED_ENTRIES
        while ref in self.entries:
            ref += 1
        return ref


class GrantTables:
    """Every domain's grant table, plus the shares and mappings of live clients."""

    def __init__(self) -> None:
        self._tables: dict[int, _Table] = {}
        self._shares: dict[int, Share] = {}
        self._mappings: dict[int, Mapping] = {}
        self._ids = itertools.count(1)

    # -- sharing (libxengntshr over gntalloc) ------------------------------------------

    def share(self, owner: int, conn_id: int, grantee: int, count: int, writable: bool) -> Share:
        fn = "xengntshr_share_pages"
        if not 0 <= grantee < DOMID_FIRST_RESERVED:
            raise XenError(errno.EINVAL, fn, f"grantee domid {grantee} is not a domain")
        if count < 1:
            raise XenError(errno.EINVAL, fn, f"count {count} < 1")
        table = self._tables.setdefault(owner, _Table())
        if len(table.entries) + count > GNTALLOC_LIMIT:
            raise XenError(
                errno.ENOSPC,
                fn,
                f"d{owner} holds {len(table.entries)} grants; {count} more exceed "
                f"gntalloc's limit of {GNTALLOC_LIMIT}",
            )
        region = Region(create_pages(count, f"gnt-d{owner}"), count, count)
        grants = []
        for index in range(count):
            grant = Grant(owner, table.free_ref(), grantee, writable, region, index)
            table.entries[grant.ref] = grant
            grants.append(grant)
        share = Share(next(self._ids), owner, conn_id, grants, region)
        self._shares[share.share_id] = share
        return share

    def end_share(self, owner: int, share_id: int) -> None:
        """``xengntshr_unshare``: end foreign access; deferred while mapped."""
        share = self._shares.get(share_id)
        if share is None or share.owner != owner:
            raise XenError(errno.EINVAL, "xengntshr_unshare", f"no share {share_id} of d{owner}")
        del self._shares[share_id]
        for grant in share.grants:
            self._end(grant)

    def _end(self, grant: Grant) -> None:
        grant.ended = True
        if grant.maps == 0:
            self._free(grant)

    def _free(self, grant: Grant) -> None:
        table = self._tables.get(grant.owner)
        if table is not None and table.entries.get(grant.ref) is grant:
            del table.entries[grant.ref]
            if not table.entries:
                del self._tables[grant.owner]
            grant.region.release_one()

    # -- mapping (libxengnttab over gntdev) ----------------------------------------------

    def map(
        self, mapper: int, conn_id: int, granter: int, ref: int, writable: bool, granter_live: bool
    ) -> Mapping:
        """Check as GNTTABOP_map_grant_ref does, then record the mapping."""
        if not granter_live:
            raise GrantMapError(GNTST_BAD_DOMAIN, f"no live domain {granter}")
        table = self._tables.get(granter)
        grant = None if table is None else table.entries.get(ref)
        if grant is None:
            raise GrantMapError(GNTST_BAD_GNTREF, f"d{granter} has no grant {ref}")
        if grant.grantee != mapper:
            raise GrantMapError(
                GNTST_GENERAL_ERROR,
                f"grant {ref} of d{granter} is for d{grant.grantee}, not d{mapper}",
            )
        if writable and not grant.writable:
            raise GrantMapError(
                GNTST_GENERAL_ERROR, f"grant {ref} of d{granter} is read-only; mapped writable"
            )
        grant.maps += 1
        mapping = Mapping(next(self._ids), mapper, conn_id, grant, writable)
        self._mappings[mapping.map_id] = mapping
        return mapping

    def unmap(self, mapper: int, map_id: int) -> Grant:
        """``xengnttab_unmap``; returns the grant, whose owner may now be gone."""
        mapping = self._mappings.get(map_id)
        if mapping is None or mapping.mapper != mapper:
            # gntdev's IOCTL_GNTDEV_UNMAP_GRANT_REF: ENOENT for an unknown index.
            raise XenError(errno.ENOENT, "xengnttab_unmap", f"no mapping {map_id} in d{mapper}")
        del self._mappings[map_id]
        grant = mapping.grant
        grant.maps -= 1
        if grant.ended and grant.maps == 0:
            self._free(grant)
        return grant

    @staticmethod
    def page_offset(mapping: Mapping) -> int:
        return mapping.grant.index * PAGE_SIZE

    # -- teardown ----------------------------------------------------------------------

    def drop_connection(self, conn_id: int) -> set[int]:
        """A client went away (closed, killed, or its domain destroyed): end its shares
        and unmap its mappings, as closing the gntalloc/gntdev files does.  Returns the
        domains whose pages were unmapped (a zombie among them may now be gone)."""
        touched: set[int] = set()
        for mapping in [m for m in self._mappings.values() if m.conn_id == conn_id]:
            touched.add(self.unmap(mapping.mapper, mapping.map_id).owner)
        for share in [s for s in self._shares.values() if s.conn_id == conn_id]:
            self.end_share(share.owner, share.share_id)
        return touched

    def revoke_domain(self, domid: int) -> None:
        """The domain is dying: end every grant it issued (deferred where mapped)."""
        for share in [s for s in self._shares.values() if s.owner == domid]:
            self.end_share(domid, share.share_id)
        table = self._tables.get(domid)
        for grant in list(table.entries.values()) if table else []:
            self._end(grant)

    def region_fd(self, share: Share) -> int:
        return share.region.fd

    # -- accounting --------------------------------------------------------------------

    def grants_of(self, domid: int) -> int:
        table = self._tables.get(domid)
        return 0 if table is None else len(table.entries)

    def mappings_of(self, domid: int) -> int:
        return sum(1 for m in self._mappings.values() if m.mapper == domid)

    def foreign_mappings_of(self, domid: int) -> int:
        """Mappings, by anyone, of pages ``domid`` granted: what keeps a zombie."""
        table = self._tables.get(domid)
        return 0 if table is None else sum(g.maps for g in table.entries.values())

    def open_regions(self) -> int:
        regions = {id(g.region) for t in self._tables.values() for g in t.entries.values()}
        return len(regions)

    def close_all(self) -> None:
        """Host shutdown: close every memfd the daemon holds."""
        for table in self._tables.values():
            for grant in table.entries.values():
                if grant.region.fd >= 0:
                    os.close(grant.region.fd)
                    grant.region.fd = -1
        self._tables.clear()
        self._shares.clear()
        self._mappings.clear()
