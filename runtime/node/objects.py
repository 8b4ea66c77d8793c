"""The node's objects: puts, holds and releases, subscriptions, and objects of other nodes.

::

    process ──PUT(id, value)──▶ on_put ──▶ ObjectTable (holders, pins, shared memory) ─┐
    process ──HOLD / RELEASE──▶ table refcounts (last holder gone: segment unlinked)    │ ready()
    process ──SUBSCRIBE(ids)──▶ ready: RESULT now; else a subscriber until ready() ─────┤──▶ RESULT to
    an object of node B ──▶ want_foreign: RELAY(HOLD, SUBSCRIBE) ══▶ B ══▶ RESULT ──────┘    subscribers
                            fail_foreign (B died): ObjectLostError to whoever waits      ──▶ arrived(id):
                            release_foreign (nobody here holds it): RELAY(RELEASE) ══▶ B    creations waiting

An object lives on its owner's node (its home: the first bytes of its id);
other nodes hold it there as one holder for all their processes.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable

from ..exceptions import ObjectLostError
from ..wire import protocol
from ..wire.protocol import Kind, TaskSpec
from .object_store import ObjectTable
from .outbox import Outbox
from .placement import ClusterView


def error_value(exc: BaseException) -> bytes:
    """An exception as an object's (error) value on the wire."""
    return pickle.dumps(exc, protocol.PROTOCOL)


class Objects:
    """The object table of this node and the objects of other nodes it holds there."""

    def __init__(self, node_id: str, table: ObjectTable, cluster: ClusterView, outbox: Outbox) -> None:
        self.node_id, self.table, self.cluster, self.outbox = node_id, table, cluster, outbox
        self.foreign: set[bytes] = set()  # objects of other nodes we hold there for our processes
        self.arrived: Callable[[bytes], None] = lambda object_id: None  # set by the node: actors wait
        self.full = ""  # why new large values are refused (see mark_full)
        self.full_marker = ""  # the file that says so (set by the node: next to its segments)

    def mark_full(self, reason: str) -> None:
        """Over capacity and unable to spill: a file next to this node's segments says so, and
        why, so its processes refuse new large values with that reason (`serialization`)."""
        if reason == self.full:
            return
        self.full = reason
        marker = self.full_marker
        if reason:
            with open(marker, "w") as f:
                f.write(reason)
        else:
            try:
                os.unlink(marker)
            except FileNotFoundError:
                pass

    # -------------------------------------------------------------- messages
    def on_put(self, ident: bytes, msg: tuple) -> None:
        _, object_id, is_error, value, size, contained = msg
        self.table.hold(object_id, ident)
        self.ready(object_id, is_error, value, size, contained)

    def on_hold(self, ident: bytes, msg: tuple) -> None:
        self.table.hold(msg[1], ident)
        self.want_foreign(msg[1], subscribe=False)

    def on_release(self, ident: bytes, msg: tuple) -> None:
        # A private release (its owner never passed a ref on) frees the object at once: no
        # HOLD of another process can be on its way. Only for objects of this node's own.
        at_once = len(msg) > 2 and msg[2] is True and protocol.home_of(msg[1]) == self.node_id
        self.table.release(msg[1], ident, at_once)

    def on_subscribe(self, ident: bytes, msg: tuple) -> None:
        entries = self.table.entries
        for object_id in msg[1]:
            e = entries.get(object_id)
            if e is None:
                # Not (yet) known here: its owner promotes it when it passes the ref on.
                e = self.table.placeholder(object_id)
            if e.ready:
                e.last_used = time.monotonic()
                self.outbox.emit(ident, (Kind.RESULT, object_id, e.is_error, e.value, e.size))
            else:
                e.subscribers.add(ident)
                self.want_foreign(object_id, subscribe=True)

    def on_result(self, msg: tuple) -> None:
        """The home node of an object we subscribed to sends its value."""
        _, object_id, is_error, value, size = msg[:5]
        e = self.table.entries.get(object_id)
        if e is not None:
            e.subscribers.discard(b"")
        self.ready(object_id, is_error, value, size, ())

    # ----------------------------------------------------------------- state
    def ready(self, object_id: bytes, is_error: bool, value, size: int, contained: tuple) -> None:
        """An object's value is here: its subscribers get it, creations waiting for it move on."""
        e = self.table.set_ready(object_id, is_error, value, size, contained)
        if e is None:
            return
        if e.subscribers:
            for sub in e.subscribers:
                self.outbox.emit(sub, (Kind.RESULT, object_id, is_error, value, size))
            e.subscribers.clear()
        self.arrived(object_id)
        if isinstance(value, str) and self.table.shm_used > self.table.capacity:
            self.table.spill_if_needed()

    def is_ready(self, object_id: bytes) -> bool:
        e = self.table.entries.get(object_id)
        return e is not None and e.ready

    def resolve(self, spec: TaskSpec) -> dict:
        """The values of a task's top-level ObjectRef arguments, as its worker receives them."""
        resolved = {}
        entries = self.table.entries
        for dep in spec.deps:
            e = entries.get(dep)
            if e is not None and e.ready:
                e.last_used = time.monotonic()
                resolved[dep] = (e.is_error, e.value)
            else:
                resolved[dep] = (True, error_value(ObjectLostError(f"object {dep.hex()} is gone")))
        return resolved

    # ------------------------------------------------------- other nodes' objects
    def want_foreign(self, object_id: bytes, subscribe: bool) -> None:
        """A process here holds or waits for an object another node keeps: hold it there."""
        home = protocol.home_of(object_id)
        if home == self.node_id or home not in self.cluster.view:
            return
        batch = []
        if object_id not in self.foreign:
            self.foreign.add(object_id)
            batch.append((Kind.HOLD, object_id))
        e = self.table.entries.get(object_id)
        if subscribe and e is not None and not e.ready and b"" not in e.subscribers:
            e.subscribers.add(b"")  # marks "asked the home node"; never sent to
            batch.append((Kind.SUBSCRIBE, [object_id]))
        if batch:
            info = self.cluster.view[home]
            if not info.get("alive", True):
                self.fail_foreign(home, info.get("dead_reason") or "it is not part of the cluster any more")
                return
            self.outbox.relay(home, batch)

    def fail_foreign(self, node_id: str, reason: str) -> None:
        """Objects kept by a node that is gone: whoever waits for them gets ObjectLostError."""
        lost = error_value(
            ObjectLostError(
                f"it was owned by a process of node {node_id}, which is gone ({reason}); "
                "values live with their owner, so re-create it from a process that is still alive"
            )
        )
        for object_id in [o for o in self.foreign if protocol.home_of(o) == node_id]:
            self.foreign.discard(object_id)
            e = self.table.entries.get(object_id)
            if e is not None and not e.ready:
                self.ready(object_id, True, lost, len(lost), ())

    def release_foreign(self) -> None:
        """Objects of other nodes nobody here references any more: let go of them there."""
        entries = self.table.entries
        gone = [o for o in self.foreign if o not in entries]
        by_home: dict[str, list] = {}
        for object_id in gone:
            self.foreign.discard(object_id)
            by_home.setdefault(protocol.home_of(object_id), []).append((Kind.RELEASE, object_id))
        for home, batch in by_home.items():
            self.outbox.relay(home, batch)

    def collect(self) -> None:
        """Free what nobody holds any more (and let go of other nodes' objects with it)."""
        if self.table.collect() and self.foreign:
            self.release_foreign()
