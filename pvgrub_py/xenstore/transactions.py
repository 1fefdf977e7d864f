"""Optimistic transactions: an overlay on the store plus per-node generations.

xenstore.txt says a transaction works on a copy of the whole database and
that its commit fails with EAGAIN "if there were any other intervening
writes", adding that the plan is to fail only on *conflicting* writes.
xenstored has done the latter since Xen 4.9 (tools/xenstored/transaction.c),
and so do we:

* the first time a transaction touches a node (read, write, delete, or just
  looks for it), we record that node's generation, or that it was absent,
  and keep that version: later reads in the transaction see it again even
  if someone else changes the node meanwhile (Xen's own
  tools/tests/xenstore test "ta err" checks exactly this);
* its writes go to an overlay over those snapshots;
* at commit every recorded node must still have the recorded generation
  (or still be absent).  If not, EAGAIN and nothing is applied; otherwise
  the overlay is applied and the watch events the transaction queued fire
  ("changes made in transactions cause an event only if and when
  committed").

Creating or deleting a child rewrites the parent's child list, so two
transactions adding children to one directory conflict, as in xenstored.
Nodes a transaction has not touched yet are read live, so it may see a
tree mixed from two moments; it then cannot commit, so nobody acts on it.

Quotas at commit.  Each request checks the "nodes" quota against the
committed count plus this transaction's own changes, so two transactions of
one domain, each within the quota alone, could together exceed it.  So the
commit checks again, against the count committed by then, and fails with
ENOSPC (xenstored's do_transaction_end(): transaction_fix_domains(), later
acc_fix_domains(), before finalize_transaction()).

Memory.  `memory` is what the overlay and the queued events hold, in
bytes; the service bounds the sum over a domain's open transactions (the
"memory" quota).  A transaction that ran over it is `fail`ed: its overlay is
dropped at once and its commit fails with ENOMEM, as xenstored fails a
transaction whose accounting failed (``trans->fail``).
"""

from __future__ import annotations

import errno
from collections import Counter

from pvgrub_py.xenstore.errors import XsRequestError
from pvgrub_py.xenstore.node_ops import Change
from pvgrub_py.xenstore.store import Node, Store

#: What one overlay entry or queued event costs besides its bytes (dict
#: slot, node and change objects): a round figure, so the "memory" quota
#: bounds the daemon's real growth and not only the payloads.
_PER_NODE = 128


class Transaction:
    """One open transaction; a `node_ops.NodeView` over ``store``.

    ``node_limit`` is the "transaction-nodes" quota (None or 0: unlimited).
    """

    def __init__(self, store: Store, tx_id: int, node_limit: int | None = None) -> None:
        self.store = store
        self.tx_id = tx_id
        self.node_limit = node_limit or None
        self.changes: list[Change] = []
        #: Every node touched so far, as this transaction sees it (None: absent).
        self._view: dict[str, Node | None] = {}
        #: The generation each touched node had when first touched.
        self._seen: dict[str, int | None] = {}
        self._written: set[str] = set()
        self._owned_delta: Counter[int] = Counter()
        #: Bytes held by the overlay and the queued changes (an estimate
        #: that never under-counts what a client sent).
        self.memory = 0
        self.failed = False

    def _first_touch(self, path: str) -> Node | None:
        if self.node_limit is not None and len(self._seen) >= self.node_limit:
            raise XsRequestError(
                errno.ENOSPC, f"transaction touches more than {self.node_limit} nodes"
            )
        node = self.store.get(path)
        self._seen[path] = None if node is None else node.generation
        self._view[path] = node
        return node

    # -- NodeView ------------------------------------------------------------

    def get(self, path: str) -> Node | None:
        if path in self._view:
            return self._view[path]
        return self._first_touch(path)

    def put(self, path: str, node: Node) -> None:
        old = self.get(path)
        if old is not None:
            self._owned_delta[old.owner] -= 1
        self._owned_delta[node.owner] += 1
        self._view[path] = node
        self._written.add(path)
        self.memory += _PER_NODE + len(path) + node.accounted_size()

    def delete(self, path: str) -> None:
        old = self.get(path)
        if old is not None:
            self._owned_delta[old.owner] -= 1
        self._view[path] = None
        self._written.add(path)
        self.memory += _PER_NODE + len(path)

    def owned_by(self, domid: int) -> int:
        return self.store.owned_by(domid) + self._owned_delta[domid]

    def record(self, changes: list[Change]) -> None:
        """Queue watch events until commit."""
        self.changes.extend(changes)
        self.memory += sum(_PER_NODE + len(change.path) for change in changes)

    def owned_growth(self, domid: int) -> int:
        """Nodes ``domid`` would own in addition once this commits."""
        return self._owned_delta[domid]

    def fail(self) -> None:
        """Over a quota: drop everything held; the commit will be ENOMEM."""
        self.failed = True
        self.changes = []
        self._view.clear()
        self._seen.clear()
        self._written.clear()
        self._owned_delta.clear()
        self.memory = 0

    # -- end -----------------------------------------------------------------

    def conflicting_path(self) -> str | None:
        """A node someone else changed since we first touched it, if any."""
        nodes = self.store.nodes
        for path, generation in self._seen.items():
            node = nodes.get(path)
            if (None if node is None else node.generation) != generation:
                return path
        return None

    def commit(self) -> list[Change]:
        """Apply the overlay, or raise EAGAIN on a conflict; returns the
        changes whose watches must fire now."""
        if self.failed:
            raise XsRequestError(errno.ENOMEM, f"transaction {self.tx_id} ran out of memory")
        conflict = self.conflicting_path()
        if conflict is not None:
            raise XsRequestError(errno.EAGAIN, f"transaction {self.tx_id}: {conflict} changed")
        for path in self._written:
            node = self._view[path]
            if node is None:
                self.store.delete(path)
            else:
                self.store.put(path, node)
        return self.changes
