"""Sending: one pending batch per link, written as one signed batch.

::

    any thread ── queue(link, msg) ──▶ outq[link]: a batch per link (under send_lock)
        urgent, a worker, or a driver's user thread: flush now, from this thread
            (what a full socket did not take: the I/O thread writes it when it can);
            a user thread's burst (within BURST of its last send): the first message to
            each worker now, the rest wake the I/O thread once, which sends them as one
            batch per link (fetch() ends a burst)
        urgent, the driver's I/O thread: wake it once per burst ─▶ flush after its turn
        queued while its thread dispatches what it read: one flush after (IOLoop.read), so a
            batch of DONEs sends the next tasks as one batch per worker
        not urgent (HOLD, RELEASE, BYE): waits for the next flush
    send(NODE, msg) ─▶ queue(our node's link)
    send(HEAD, msg) ─▶ head_outbox ─▶ the I/O thread (ZeroMQ: only it may touch the socket)
    to_node(id, msg) ─▶ our node itself, or FORWARD through ours to another node
    flush: every link's batch; our node's first, unless it only asks for or returns workers
        (decisions.node_last): then the workers' tasks go out before the node wakes

A wake is not free (~80 µs for the hand-off): user threads send their own
messages, and the I/O thread is woken only for what it must do itself.
"""

from __future__ import annotations

import threading
from collections import deque
from time import monotonic

from ..wire import transport
from ..wire.protocol import Kind
from .decisions import node_last
from .services import CoreServices

NODE, HEAD = 0, 1  # destinations of `send`
BURST = 0.0005  # s: a user thread's message this soon after its last send waits for the I/O thread


class Outbox:
    """The batches waiting to be sent, per link, and what waits for the head."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core  # our node's link, the I/O thread and its wake pipe
        self.outq: dict[transport.Link, list] = {}
        # Re-entrant: an ObjectRef's or ActorHandle's __del__ (run by the garbage collector at
        # any allocation, also while this thread sends) queues a RELEASE under the same lock.
        self.send_lock = threading.RLock()
        self.head_outbox: deque = deque()
        self.reader = 0  # the thread dispatching what it read: it flushes once, after (IOLoop.read)
        self.sent_at = 0.0  # when a driver's user thread last sent at once (a burst waits behind it)
        self.started: set[transport.Link] = set()  # the links this burst sent to at once

    def queue(self, link: transport.Link | None, msg: tuple, urgent: bool = True) -> None:
        """Send `msg` on `link`: now (workers), or with the next batch (drivers)."""
        if link is None:
            return
        with self.send_lock:
            was_empty = not self.outq
            batch = self.outq.get(link)
            if batch is None:
                self.outq[link] = [msg]
            else:
                batch.append(msg)
            if not urgent or threading.get_ident() == self.reader:
                return  # with the next flush; a reader's: once it dispatched all it read
            if self.core.thread is None:  # a worker: no I/O thread
                self._flush_locked()
                return
            if threading.current_thread() is not self.core.thread:
                # A driver's user thread sends its own messages: handing them to the I/O
                # thread (wake it, let it flush) costs more than the send, twice over for a
                # sync task (profiled: ~150 µs of driver CPU per round trip). Except in a
                # burst (calls in a row, e.g. a list of .remote()): the first goes now, the
                # next ones wait for the I/O thread (one wake), which sends them as one batch
                # when it gets the interpreter (~25 µs of pickling, signing and a send per
                # message saved). fetch() ends a burst: it flushes, and the next call goes now.
                # Each worker's first task of the burst goes now too. Left to the I/O
                # thread, woken beside it, the second worker of an 8-task burst started
                # its first task 2.2-2.7 ms after the call on average (1.1-1.3 now).
                now = monotonic()
                new_burst = now - self.sent_at > BURST
                if new_burst or (link not in self.started and link is not self.core.link):
                    if new_burst:
                        self.started = set()
                    self.sent_at = now
                    self.started.add(link)
                    if not self._flush_locked():
                        return
        if was_empty or not self.core.io.wake_pending:
            self.core.wake()  # the I/O thread sends what is left (a full socket: it waits to write)

    def to_node(self, node_id: str, msg: tuple) -> None:
        """To the node `node_id` itself: our own directly, another through ours."""
        if not node_id or node_id == self.core.node_id:
            self.send(NODE, msg)
        else:
            self.send(NODE, (Kind.FORWARD, node_id, b"", [msg]))

    def send_node(self, msg: tuple, urgent: bool = True) -> None:
        self.send(NODE, msg, urgent)

    def send(self, dest: int, msg: tuple, urgent: bool = True) -> None:
        if dest == NODE:
            self.queue(self.core.link, msg, urgent)
            return
        self.head_outbox.append(msg)
        self.core.wake()

    def flush(self) -> None:
        """Send every pending batch."""
        with self.send_lock:
            self._flush_locked()

    def _flush_locked(self) -> bool:
        """Send every pending batch; True if a socket did not take all (the I/O thread
        writes the rest when it can)."""
        if not self.outq:
            return False
        out, self.outq = self.outq, {}
        link = self.core.link
        if len(out) == 1:  # one link (a sync task's EXECUTE, a worker's DONE): no order to keep
            ((only, batch),) = out.items()
            only.send(batch)
            return only.wants_write or (link is not None and link.wants_write)
        node_batch = out.pop(link, None) if link is not None else None
        if node_batch and not node_last(node_batch):
            link.send(node_batch)
            node_batch = None
        left = False
        for other, batch in out.items():
            other.send(batch)  # a RemoteLink's goes out on our node's link
            left = left or other.wants_write
        if node_batch:  # only asks for or returns workers: after their tasks
            link.send(node_batch)
        return left or (link is not None and link.wants_write)

    def flush_node(self) -> None:
        """Send our node's batch only."""
        link = self.core.link
        with self.send_lock:
            batch = self.outq.pop(link, None) if link is not None else None
            if batch:
                link.send(batch)
