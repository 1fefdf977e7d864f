"""A xenstore daemon speaking the real xs_wire protocol, for the Xen host simulator.

The vTPM frontend/backend and the domain builder talk to it through pyxs and
Debian's libxenstore exactly as they would on a real host, so the modules
follow the data flow of a request (docs/misc/xenstore.txt, xs_wire.h)::

    bytes -> wire (framing) -> service (dispatch, one Connection per client)
          -> node_ops (xenstored semantics, perms, quotas)
             over store (the tree) or transactions (an overlay on it)
          -> watches (events to every connection that may see them)
    daemon: the asyncio unix-socket server around all of that.

``paths``, ``perms``, ``domains`` and ``errors`` hold the rules those steps
share.  Nothing here touches Xen: there is no ring page, no event channel,
and INTRODUCE only records the domain (see `daemon` for how a process then
connects *as* that domain).
"""
