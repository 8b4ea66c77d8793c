"""The node daemon: one per machine; lends workers, places actors, keeps objects.

- `daemon`: `Node`, the sockets and the loop, and `main`/`standalone`.
- `scheduler`: resources and the queue of a node (no I/O).
- `object_store`: the table of objects and their shared-memory lifetime.
- `gateway`: the node's door to other nodes (relays and object transfer).
- `zygote`: the fork server that makes worker processes.
"""

from .daemon import main, standalone

__all__ = ["main", "standalone"]
