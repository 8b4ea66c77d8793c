"""What a node's concerns send, gathered during a turn of the daemon's loop.

::

    pool, leases, actors, objects ──emit(ident, msg)──▶ out{ident: [msg, ...]} ─┐ Node.flush():
                                  ──to_head(msg)──────▶ head[]                 ─┤ one signed batch
                                  ──relay(node, batch)─▶ gateway.send (queued   ─┘ per peer per turn
                                                         per node, in order)
                                  ──reschedule()──────▶ dirty: Node.schedule() at the end of the turn

The concerns never touch a socket: they say what goes where, and the
daemon (`daemon.Node`) writes it out once per turn of its loop.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from ..wire.protocol import Kind


class Outbox:
    """Messages for processes, the head and other nodes; and whether to schedule again."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.out: dict[bytes, list] = {}  # process identity -> messages for it
        self.head: list = []  # messages for the head
        self.dirty = False  # the queue or the resources changed: schedule at the end of the turn
        self.gateway: Any = None  # set once the node serves (`gateway.Gateway`)

    def emit(self, ident: bytes, msg: tuple) -> None:
        """Queue `msg` for the process (or node, ``b"n" + id``) `ident`."""
        batch = self.out.get(ident)
        if batch is None:
            self.out[ident] = [msg]
        else:
            batch.append(msg)

    def to_head(self, msg: tuple) -> None:
        self.head.append(msg)

    def relay(self, node_id: str, batch: list) -> None:
        """Requests from this node to node `node_id` itself (it answers this node)."""
        self.gateway.send(node_id, (Kind.RELAY, self.node_id, b"", b"", batch))

    def reschedule(self) -> None:
        self.dirty = True


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process of this node that may be gone already."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
