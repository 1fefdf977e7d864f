"""The committed tree: nodes by absolute path, generation counts, quotas.

Like xenstored (tools/xenstored/core.c) the tree is a flat map from full path
to node, each node listing its children's names in creation order; that
order is what DIRECTORY returns and what ``xenstore-ls`` prints.

Every change gives the node a fresh, store-wide generation number.
Transactions use those numbers to detect conflicts (see `transactions`), and
DIRECTORY_PART returns one so a client can tell that a directory changed
between two partial reads (xenstore.txt, DIRECTORY_PART).

Nodes are never modified in place once stored: an operation builds a new
`Node` and `put`s it.  That lets a transaction's overlay and the store share
node objects without copying.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pvgrub_py.xenstore import paths
from pvgrub_py.xenstore.perms import NONE, NodePerms, Perm

#: xenstored's size of one ``struct xs_permissions`` (domid + perm bits) in its
#: node accounting (calc_node_acc_size()).
PERM_ACCOUNTED_SIZE = 8


@dataclass(slots=True)
class Node:
    """A node's value, permissions and children.  Treat as immutable."""

    value: bytes
    perms: NodePerms
    children: tuple[str, ...] = ()
    generation: int = 0

    @property
    def owner(self) -> int:
        return self.perms[0].domid

    def accounted_size(self) -> int:
        """What the "node-size" quota limits: value, NUL-terminated child
        names and permission entries, as xenstored accounts a node (less its
        fixed header)."""
        return (
            len(self.value)
            + sum(len(name) + 1 for name in self.children)
            + PERM_ACCOUNTED_SIZE * len(self.perms)
        )


@dataclass(frozen=True, slots=True)
class Quotas:
    """Limits for unprivileged domains; 0 disables a limit (xenstore.txt,
    GET_QUOTA).  Defaults are xenstored's ``hard_quotas`` in
    tools/xenstored/domain.c (Xen 4.18+; the same numbers were the
    ``quota_*`` variables in earlier releases).  Like xenstored's, every
    quota counts per *domain*, over all of the domain's connections."""

    nodes: int = 1000  # "nodes": nodes owned per domain
    node_size: int = 2048  # "node-size": bytes of one node
    watches: int = 128  # "watches": watches per domain
    transactions: int = 10  # "transactions": open transactions per domain
    permissions: int = 5  # "node-permissions": entries per node
    path_max: int = paths.XENSTORE_REL_PATH_MAX  # "path-max": below /local/domain/<id>/
    transaction_nodes: int = 1024  # "transaction-nodes": nodes touched per transaction
    #: "memory": bytes a domain's open transactions may hold.  xenstored's
    #: hard memory quota per domain (quota_memory_per_domain_hard in
    #: tools/xenstore/xenstored_core.c, Xen 4.17: 2.5 MB; ENOMEM beyond).
    #: Committed nodes are bounded by "nodes" x "node-size" already.
    memory: int = 2 * 1024 * 1024 + 512 * 1024
    #: "connections": simultaneous connections of one domain.  Not a Xen
    #: quota: on Xen a domain has exactly one connection (its ring page),
    #: which its kernel multiplexes; here each process of a simulated domain
    #: connects on its own, so the simulator bounds how many at once.
    connections: int = 16

    #: Wire names of GET_QUOTA/SET_QUOTA -> field; xenstore.txt names the
    #: first five, the rest are xenstored's own.
    WIRE_NAMES = {
        "nodes": "nodes",
        "watches": "watches",
        "transactions": "transactions",
        "node-size": "node_size",
        "permissions": "permissions",
        "path-max": "path_max",
        "transaction-nodes": "transaction_nodes",
        "memory": "memory",
        "connections": "connections",
    }


#: Nodes xenstored creates at start-up (setup_structure()): owned by dom0,
#: no access for others.
INITIAL_PERMS: NodePerms = (Perm(0, NONE),)


class Store:
    """The committed tree, with per-owner node counts for the "nodes" quota."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.generation = 0
        self._owned: Counter[int] = Counter()
        self.put(paths.ROOT, Node(b"", INITIAL_PERMS, ("tool",)))
        self.put("/tool", Node(b"", INITIAL_PERMS, ("xenstored",)))
        self.put("/tool/xenstored", Node(b"", INITIAL_PERMS))
        for special in paths.SPECIAL_NODES:
            self.put(special, Node(b"", INITIAL_PERMS))

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def put(self, path: str, node: Node) -> None:
        old = self.nodes.get(path)
        if old is not None:
            self._owned[old.owner] -= 1
        self._owned[node.owner] += 1
        self.generation += 1
        node.generation = self.generation
        self.nodes[path] = node

    def delete(self, path: str) -> None:
        old = self.nodes.pop(path, None)
        if old is not None:
            self._owned[old.owner] -= 1
            self.generation += 1

    def owned_by(self, domid: int) -> int:
        return self._owned[domid]
