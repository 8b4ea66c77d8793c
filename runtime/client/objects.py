"""A process's objects: the values it holds (memstore) and its references to them.

::

    ObjectRef() / del ─▶ add_ref / remove_ref ─▶ first ref: HOLD; last: RELEASE ──▶ node
        (private, freed there at once, when we made it and no ref to it left or came in)
    results of our calls ─▶ keep_results ─▶ memstore (small: local only; large: the node
        owns the segment, PUT) ─▶ arrived(): fetch() countdowns, calls waiting for an
        argument (Client.deps_arrived), callbacks (futures, await)
    a ref leaves this process (argument, put, result) ─▶ promote: PUT its value to the node
        now, or once it arrives (escaped)
    get() of a ref we do not own ─▶ subscribe: SUBSCRIBE ──▶ node ──RESULT──▶ arrived()

Results live in the owner's memstore (as in Ray's core worker); a value
reaches the node only when a ref to it leaves the process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ..wire.protocol import Kind
from .records import Countdown
from .services import CoreServices


class Objects:
    """Values and reference counts of one process; arrivals under `Client.lock`."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core  # sending, the lock, calls waiting for arguments
        self.memstore: dict[bytes, tuple[bool, Any]] = {}
        self.pending: set[bytes] = set()  # results we own that have not arrived
        self.subscribed: set[bytes] = set()
        self.refcounts: dict[bytes, int] = {}
        self.local_only: set[bytes] = set()  # owned values the node has not seen
        self.escaped: set[bytes] = set()  # pending results to promote on arrival
        # Ids whose ref was pickled here (passed on inside a value), or that we hold without
        # having made them (announced: unpickled, a task's argument read again): their last
        # RELEASE waits out the node's grace. The others are private (see remove_ref).
        self.shared: set[bytes] = set()
        self.held_inside: dict[bytes, tuple] = {}  # result id -> refs its value contains
        self.ref_lock = threading.RLock()  # re-entrant: __del__ of a ref may run while it is held
        self.callbacks: dict[bytes, list[Callable]] = {}
        # object id -> the countdown of the fetch() waiting for it, or a list when several wait
        # (one get() of a million refs: no list per id)
        self.waiters: dict[bytes, Countdown | list[Countdown]] = {}

    # ------------------------------------------------------------- references
    def add_ref(self, object_id: bytes, announce: bool = True) -> None:
        """One more ref here; `announce`: we did not make it (put, our call's result)."""
        with self.ref_lock:
            count = self.refcounts.get(object_id, 0)
            self.refcounts[object_id] = count + 1
            if announce:
                self.shared.add(object_id)
        if count == 0 and announce:
            self.core.send_node((Kind.HOLD, object_id), urgent=False)

    def remove_ref(self, object_id: bytes) -> None:
        if self.core.closed:
            return
        with self.ref_lock:
            count = self.refcounts.get(object_id, 0) - 1
            if count > 0:
                self.refcounts[object_id] = count
                return
            self.refcounts.pop(object_id, None)
            shared = object_id in self.shared
            self.shared.discard(object_id)
        self.memstore.pop(object_id, None)
        self.subscribed.discard(object_id)
        inside = self.held_inside.pop(object_id, None)
        if object_id in self.local_only:
            self.local_only.discard(object_id)
        elif object_id not in self.pending or object_id in self.escaped:
            # Private (ours, and no ref to it ever left: an escaped result was promoted, so
            # shared): the node frees it at once, not after its grace, and a large value's
            # file is soon a spare for the next put.
            self.core.send_node(
                (Kind.RELEASE, object_id) if shared else (Kind.RELEASE, object_id, True), urgent=False
            )
        self.escaped.discard(object_id)
        if inside:
            for inner in inside:
                self.remove_ref(inner)

    def share(self, object_id: bytes) -> None:
        """A ref to `object_id` is pickled here: another process may hold it."""
        self.shared.add(object_id)

    def promote(self, ids) -> None:
        """Refs are leaving this process: make sure the node has their values."""
        for object_id in ids:
            self.shared.add(object_id)
            if object_id in self.local_only:
                entry = self.memstore.get(object_id)
                if entry is not None:
                    self.local_only.discard(object_id)
                    self.core.send_node(
                        (Kind.PUT, object_id, entry[0], entry[1], 0, self.held_inside.get(object_id, ()))
                    )
            elif object_id in self.pending:
                self.escaped.add(object_id)

    # ----------------------------------------------------------------- values
    def expect(self, return_ids) -> None:
        self.pending.update(return_ids)

    def store_local(self, object_id: bytes, is_error: bool, value) -> None:
        self.memstore[object_id] = (is_error, value)

    def forget(self, object_id: bytes) -> None:
        """Drop a cached value that turned out stale (e.g. a spilled segment)."""
        self.memstore.pop(object_id, None)
        self.subscribed.discard(object_id)

    def subscribe(self, ids) -> None:
        """Values we wait for and do not own: the node sends them when they exist."""
        ask = [
            i for i in ids if i not in self.pending and i not in self.subscribed and i not in self.memstore
        ]
        if ask:
            self.subscribed.update(ask)
            self.core.send_node((Kind.SUBSCRIBE, ask))

    def add_callback(self, object_id: bytes, fn: Callable[[], None]) -> None:
        """Call `fn` once the value is here (now, if it is)."""
        with self.core.lock:  # the lock arrivals are handled with
            if object_id not in self.memstore:
                self.callbacks.setdefault(object_id, []).append(fn)
                self.subscribe([object_id])
                self.core.wake()
                return
        fn()

    def arrived(self, object_id: bytes, is_error: bool, value, contained: tuple = ()) -> bool:
        """A value reached us (result of our call, or a subscription). True if kept."""
        self.pending.discard(object_id)
        wanted = object_id in self.refcounts or object_id in self.callbacks
        if not wanted:
            if isinstance(value, str) and object_id not in self.subscribed:
                try:  # an unwanted large result of ours: nobody else knows the segment
                    os.unlink(value)
                except OSError:
                    pass
            self.escaped.discard(object_id)
            return False
        self.memstore[object_id] = (is_error, value)
        ws = self.waiters.pop(object_id, None)
        if ws is not None:
            if type(ws) is Countdown:
                ws.left -= 1
            else:
                for w in ws:
                    w.left -= 1
        self.core.deps_arrived(object_id)
        cbs = self.callbacks.pop(object_id, None)
        if cbs:
            for fn in cbs:
                try:
                    fn()
                except Exception:
                    pass
        return True

    def keep_results(self, results: list, own: tuple = ()) -> None:
        """The results of one of our calls: keep what is referenced, hand segments to the node.
        `own`: the call's result ids, used in place of the equal ids in `results`."""
        send_node = self.core.send_node
        mine = len(own) == len(results)
        for i, (object_id, is_error, value, size, contained) in enumerate(results):
            if mine and own[i] == object_id:
                object_id = own[i]
            escaped = object_id in self.escaped
            kept = self.arrived(object_id, is_error, value, contained)
            if not kept:
                if escaped:  # passed on, then dropped here: the node keeps it for the others
                    send_node((Kind.PUT, object_id, is_error, value, size, contained))
                    send_node((Kind.RELEASE, object_id), urgent=False)
                continue
            if contained:
                self.held_inside[object_id] = contained
                for inner in contained:
                    self.add_ref(inner)
            if isinstance(value, str):  # a segment: the node owns its lifetime from now on
                send_node((Kind.PUT, object_id, is_error, value, size, ()), urgent=False)
            elif object_id in self.escaped:
                self.escaped.discard(object_id)
                send_node((Kind.PUT, object_id, is_error, value, size, contained))
            else:
                self.local_only.add(object_id)

    # ---------------------------------------------------------------- waiting
    def countdown(self, ids: list[bytes]) -> tuple[Countdown, set[bytes]]:
        """Register a fetch() waiting for the missing ones of `ids` (under `Client.lock`)."""
        memstore = self.memstore
        missing = {i for i in ids if i not in memstore}
        waiter = Countdown(len(missing))
        waiters = self.waiters
        for i in missing:
            ws = waiters.get(i)
            if ws is None:
                waiters[i] = waiter
            elif type(ws) is Countdown:
                waiters[i] = [ws, waiter]
            else:
                ws.append(waiter)
        return waiter, missing

    def uncount(self, waiter: Countdown, missing: set[bytes]) -> None:
        waiters = self.waiters
        for i in missing:
            ws = waiters.get(i)
            if ws is None:
                continue
            if ws is waiter:
                del waiters[i]
            elif type(ws) is not Countdown:
                try:
                    ws.remove(waiter)
                except ValueError:
                    pass
                if len(ws) == 1:
                    waiters[i] = ws[0]
                elif not ws:
                    del waiters[i]
