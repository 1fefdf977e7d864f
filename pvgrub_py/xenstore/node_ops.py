"""What READ, WRITE, MKDIR, RM, DIRECTORY and the PERMS requests do to the tree.

The semantics are xenstore.txt's ("Database read, write and permissions
operations"), with the details xenstored adds (tools/xenstored/core.c):

* WRITE and MKDIR create missing parents; each new node copies its parent's
  permissions, and a node an unprivileged domain creates is owned by it;
* RM removes a whole subtree; removing a missing node is fine when its
  parent exists, ENOENT otherwise; removing ``/`` is EINVAL;
* a missing node is reported ENOENT only if the nearest existing ancestor
  grants the access the request needed, EACCES otherwise, so that a guest
  cannot probe for nodes it may not see (errno_from_parents());
* SET_PERMS needs ownership; an unprivileged domain may not give a node away
  (EPERM);
* quotas (`store.Quotas`) bind unprivileged callers only; exceeding one is
  ENOSPC.

Every function works on a `NodeView`: the `store.Store` itself or an open
`transactions.Transaction`.  Modifications return the `Change` records that
watches must hear about.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Protocol

from pvgrub_py.xenstore import paths
from pvgrub_py.xenstore.errors import XsRequestError
from pvgrub_py.xenstore.perms import OWNER, READ, WRITE, Caller, NodePerms, access_for, with_owner
from pvgrub_py.xenstore.store import Node, Quotas


class NodeView(Protocol):
    def get(self, path: str) -> Node | None: ...

    def put(self, path: str, node: Node) -> None: ...

    def delete(self, path: str) -> None: ...

    def owned_by(self, domid: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Change:
    """A modified path, for watches.

    ``exact``: only watches on exactly this path fire (the descendants
    removed along with an RM's target, as xenstored's delnode_sub()).
    ``perms``: a watcher is told only if one of these grants it read access:
    the node's permissions (before a removal, and before and after a
    SET_PERMS) and its parent's, as xenstored's watch_permitted().
    """

    path: str
    exact: bool
    perms: tuple[NodePerms, ...]


def _denied(path: str, need: int) -> XsRequestError:
    what = "read" if need == READ else "write"
    return XsRequestError(errno.EACCES, f"no {what} access to {path}")


def _ancestor_grants(view: NodeView, caller: Caller, path: str, need: int) -> bool:
    """Whether the nearest existing ancestor of a missing node grants any of
    ``need``: decides between ENOENT and EACCES."""
    if caller.privileged:
        return True
    while path != paths.ROOT:
        path = paths.parent(path)
        node = view.get(path)
        if node is not None:
            return bool(access_for(node.perms, caller) & need)
    return False


def find(view: NodeView, caller: Caller, path: str, need: int) -> Node | None:
    """The node if ``caller`` has ``need`` on it; None if it is missing and
    the caller may know that; EACCES otherwise."""
    node = view.get(path)
    if node is not None:
        if access_for(node.perms, caller) & need != need:
            raise _denied(path, need)
        return node
    if not _ancestor_grants(view, caller, path, need):
        raise _denied(path, need)
    return None


def readable(view: NodeView, caller: Caller, path: str) -> Node:
    """The node for READ, DIRECTORY, DIRECTORY_PART and GET_PERMS."""
    node = find(view, caller, path, READ)
    if node is None:
        raise XsRequestError(errno.ENOENT, path)
    return node


def _parent_perms(view: NodeView, path: str) -> NodePerms:
    parent = view.get(paths.parent(path))
    return parent.perms if parent is not None else ()


def _check_size(caller: Caller, quotas: Quotas, path: str, node: Node) -> None:
    if caller.privileged or not quotas.node_size:
        return
    size = node.accounted_size()
    if size > quotas.node_size:
        raise XsRequestError(
            errno.ENOSPC, f"{path}: node of {size} bytes exceeds the {quotas.node_size}-byte quota"
        )


def _create(view: NodeView, caller: Caller, quotas: Quotas, path: str, value: bytes) -> Node:
    """Create ``path`` and its missing ancestors; all quota checks happen
    before the first change, so a failure leaves the tree untouched."""
    missing = [path]
    anchor_path = paths.parent(path)
    anchor = view.get(anchor_path)
    while anchor is None:
        missing.append(anchor_path)
        anchor_path = paths.parent(anchor_path)
        anchor = view.get(anchor_path)
    if not caller.privileged and quotas.nodes:
        owned = view.owned_by(caller.domid)
        if owned + len(missing) > quotas.nodes:
            raise XsRequestError(
                errno.ENOSPC, f"domain {caller.domid} would own more than {quotas.nodes} nodes"
            )
    new_anchor = Node(anchor.value, anchor.perms, (*anchor.children, paths.basename(missing[-1])))
    _check_size(caller, quotas, anchor_path, new_anchor)
    planned: list[tuple[str, Node]] = [(anchor_path, new_anchor)]
    perms = anchor.perms if caller.privileged else with_owner(anchor.perms, caller.domid)
    for depth in range(len(missing) - 1, -1, -1):
        name = missing[depth]
        children = (paths.basename(missing[depth - 1]),) if depth else ()
        node = Node(b"" if depth else value, perms, children)
        _check_size(caller, quotas, name, node)
        planned.append((name, node))
    for name, node in planned:
        view.put(name, node)
    return planned[-1][1]


def write(view: NodeView, caller: Caller, quotas: Quotas, path: str, value: bytes) -> list[Change]:
    node = find(view, caller, path, WRITE)
    if node is None:
        node = _create(view, caller, quotas, path, value)
    else:
        node = Node(value, node.perms, node.children)
        _check_size(caller, quotas, path, node)
        view.put(path, node)
    return [Change(path, False, (node.perms, _parent_perms(view, path)))]


def mkdir(view: NodeView, caller: Caller, quotas: Quotas, path: str) -> list[Change]:
    if find(view, caller, path, WRITE) is not None:
        return []
    node = _create(view, caller, quotas, path, b"")
    return [Change(path, False, (node.perms, _parent_perms(view, path)))]


def rm(view: NodeView, caller: Caller, path: str) -> list[Change]:
    node = find(view, caller, path, WRITE)
    parent_path = paths.parent(path)
    if node is None:
        if view.get(parent_path) is None:
            raise XsRequestError(errno.ENOENT, f"neither {path} nor its parent exists")
        return []
    if path == paths.ROOT:
        raise XsRequestError(errno.EINVAL, "cannot remove /")
    parent = view.get(parent_path)
    if parent is None:  # only a special node (@...) has no real parent entry
        raise XsRequestError(errno.EINVAL, f"cannot remove {path}")
    changes = _remove_subtree(view, path, node, parent.perms)
    name = paths.basename(path)
    view.put(
        parent_path,
        Node(parent.value, parent.perms, tuple(c for c in parent.children if c != name)),
    )
    return changes


def _remove_subtree(
    view: NodeView, top: str, top_node: Node, top_parent_perms: NodePerms
) -> list[Change]:
    """Delete ``top`` and everything below it, children before parents (the
    order xenstored fires the events in).  Iterative: a 3072-byte path can
    nest deeper than Python's recursion limit."""
    changes: list[Change] = []
    stack: list[tuple[str, Node, NodePerms, bool]] = [(top, top_node, top_parent_perms, False)]
    while stack:
        path, node, parent_perms, expanded = stack.pop()
        if not expanded:
            stack.append((path, node, parent_perms, True))
            for name in reversed(node.children):
                child_path = paths.child(path, name)
                child = view.get(child_path)
                if child is not None:
                    stack.append((child_path, child, node.perms, False))
            continue
        changes.append(Change(path, path != top, (node.perms, parent_perms)))
        view.delete(path)
    return changes


def set_perms(
    view: NodeView, caller: Caller, quotas: Quotas, path: str, perms: NodePerms
) -> list[Change]:
    if not caller.privileged and quotas.permissions and len(perms) > quotas.permissions:
        raise XsRequestError(
            errno.ENOSPC,
            f"{len(perms)} permission entries exceed the quota of {quotas.permissions}",
        )
    node = find(view, caller, path, WRITE | OWNER)
    if node is None:
        raise XsRequestError(errno.ENOENT, path)
    if not caller.privileged and perms[0].domid != node.owner:
        raise XsRequestError(
            errno.EPERM, f"domain {caller.domid} may not give {path} to domain {perms[0].domid}"
        )
    new = Node(node.value, perms, node.children)
    _check_size(caller, quotas, path, new)
    view.put(path, new)
    return [Change(path, False, (node.perms, perms, _parent_perms(view, path)))]
