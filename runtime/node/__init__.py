"""The node daemon: one per machine; lends workers, places actors, keeps objects.

- `process`: the node process (`main`, `standalone`).
- `daemon`: `Node`, the sockets and the loop, composing the concerns below.
- `pool`, `leases`, `actors`, `objects`: one class per concern, each owning its state.
- `placement`: the decisions (start, revoke, spill, restart, deaths), no I/O.
- `records`, `outbox`: the records the concerns share, and what they send.
- `scheduler`: resources and the queue of a node (no I/O).
- `object_store`: the table of objects and their shared-memory lifetime.
- `gateway`: the node's door to other nodes (relays and object transfer).
- `zygote`: the fork server that makes worker processes.
"""

from .process import main, standalone

__all__ = ["main", "standalone"]
