"""The core every driver and worker runs: one connection to its node.

::

    user threads                                     driver I/O thread (drivers only)
    ────────────                                     ──────────────────────────────
    .remote()/put ─▶ node_pending ─(burst: wake once)─▶ flush: one signed batch ─▶ node
    get()/wait()  ─▶ flush now, then read the socket  ◀─ yields the socket while a
                     itself (leader/follower)            user thread waits (want_read)
    RESULT ─▶ memstore ─▶ notify waiters / futures
    LOG    ─▶ log_handler (prints "(f pid=…) …", or routes to a notebook cell)
    EXECUTE ─▶ on_message (worker: its task inbox)

    head (control plane, ZeroMQ/TCP) ◀─▶ owned by the I/O thread; workers have none
                                          (their control requests go via the node)

Latency is what shapes this: a thread hand-off costs ~80 µs on the CI
machine, so a thread that waits for a value reads the socket itself
instead of being woken by another thread, and a sync ``get`` sends its
queued submissions itself. Bursts of ``.remote()`` still leave as one
batch: the first call of a burst wakes the I/O thread, which sends what
has accumulated when it next holds the GIL.

Results are pushed by the node to the owner of each task; values the
process does not own are asked for with SUBSCRIBE. The memstore keeps a
value as long as a local ref to it exists.
"""

from __future__ import annotations

import itertools
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq

from . import protocol, transport
from .exceptions import ConnectionFailedError, GetTimeoutError
from .protocol import Kind

NODE, HEAD = 0, 1


class Client:
    def __init__(
        self,
        *,
        cluster_id: str,
        key: bytes,
        node_address: str | None,
        head_address: str | None,
        node_id: str,
        node_pid: int = 0,
        role: str = "driver",
        worker_id: int = 0,
        job_id: int = 0,
    ) -> None:
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.node_pid = node_pid
        self.role = role
        self.worker_id = worker_id
        self.job_id = job_id
        self.head_address = head_address
        self.node_address = node_address or ""
        self.signer = protocol.Signer(key)
        if role == "worker":
            self.identity = b"w%d" % worker_id
        else:
            self.identity = b"d" + os.urandom(7).hex().encode()
        self.memstore: dict[bytes, tuple[bool, Any]] = {}
        self.pending: set[bytes] = set()  # results we own that have not arrived
        self.subscribed: set[bytes] = set()
        self.refcounts: dict[bytes, int] = {}
        self.cv = threading.Condition()
        self.ref_lock = threading.Lock()
        self.callbacks: dict[bytes, list[Callable]] = {}
        self.requests: dict[int, Future] = {}
        self.function_blobs: dict[bytes, tuple[bytes, list]] = {}
        self.registered_functions: set[bytes] = set()
        self.on_message: Callable[[tuple], None] | None = None
        self.log_handler: Callable[..., None] = print_log
        self.welcome: dict = {}
        self.closed = False
        self.dead_reason = ""
        self.executing = False  # worker: inside a task that holds a CPU
        self._req_ids = itertools.count(1)

        # sending: any thread, one lock
        self.node_pending: list = []
        self.send_lock = threading.Lock()
        self.head_outbox: deque = deque()
        # reading: whoever holds read_lock
        self.read_lock = threading.Lock()
        self.want_read = 0
        self.io_cv = threading.Condition()
        self.link: transport.Link | None = None
        if node_address:
            try:
                self.link = transport.Link(node_address, self.signer)
            except OSError as e:
                raise ConnectionFailedError(
                    f"cannot connect to the node at {node_address}: {e}. Is the cluster running? "
                    "Check with `nbcluster status`."
                ) from None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wake_pending = False
        self.ctx: zmq.Context | None = None
        self.head_sock = None
        if head_address:
            self.ctx = zmq.Context()
            self.head_sock = protocol.tune(self.ctx.socket(zmq.DEALER))
            self.head_sock.connect(f"tcp://{head_address}")
        # Workers read in their main thread; drivers keep a thread that reads
        # whenever no user thread waits (live output, futures, head replies).
        self.thread: threading.Thread | None = None
        if node_address:
            self.node_pending.append(
                (Kind.HELLO, role, os.getpid(), job_id, worker_id, sys.path[:], self.identity)
            )
        if role != "worker":
            self.thread = threading.Thread(target=self._run, name="runtime-io", daemon=True)
            self.thread.start()
        else:
            self.flush_node()

    # -- sending ----------------------------------------------------------
    def send(self, dest: int, msg: tuple, urgent: bool = True) -> None:
        """Queue `msg` for the node or the head.

        To the node: workers send at once; drivers send on the next flush (a
        `get`/`wait`, or the I/O thread woken by the first message of a
        burst). Non-urgent messages (reference counts) ride along with the
        next urgent one, in order.
        """
        if dest == NODE:
            with self.send_lock:
                self.node_pending.append(msg)
                if not urgent:
                    return
                if self.thread is None:
                    batch, self.node_pending = self.node_pending, []
                    if self.link is not None:
                        self.link.send(batch)
                    return
            self._wake()
            return
        self.head_outbox.append(msg)
        self._wake()

    def flush_node(self) -> None:
        with self.send_lock:
            if self.node_pending and self.link is not None:
                batch, self.node_pending = self.node_pending, []
                self.link.send(batch)

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def request(self, op: str, *args, dest: int = HEAD, timeout: float | None = 30.0) -> Any:
        """A control-plane call to the head (relayed by the node for workers)."""
        if dest == HEAD and self.head_sock is None:
            op, args = "relay", (op, args)
            dest = NODE
        req_id = next(self._req_ids)
        fut: Future = Future()
        self.requests[req_id] = fut
        self.send(dest, (Kind.REQUEST, req_id, op, args))
        if self.thread is None:  # a worker: read until the reply arrives
            deadline = None if timeout is None else time.monotonic() + timeout
            while not fut.done() and not self.dead_reason:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._read_or_wait(0.05 if left is None else min(left, 0.05), fut.done)
        try:
            ok, payload = fut.result(0 if self.thread is None else timeout)
        except TimeoutError:
            self.requests.pop(req_id, None)
            raise ConnectionFailedError(
                self.dead_reason
                or f"the cluster did not answer {op!r} within {timeout} s; is it "
                "running? Check with `nbcluster status`."
            ) from None
        if not ok:
            raise payload
        return payload

    # -- references -------------------------------------------------------
    def add_ref(self, object_id: bytes, announce: bool = True) -> None:
        with self.ref_lock:
            count = self.refcounts.get(object_id, 0)
            self.refcounts[object_id] = count + 1
        if count == 0 and announce:
            self.send(NODE, (Kind.HOLD, object_id), urgent=False)

    def remove_ref(self, object_id: bytes) -> None:
        if self.closed:
            return
        with self.ref_lock:
            count = self.refcounts.get(object_id, 0) - 1
            if count > 0:
                self.refcounts[object_id] = count
                return
            self.refcounts.pop(object_id, None)
        self.memstore.pop(object_id, None)
        self.subscribed.discard(object_id)
        self.send(NODE, (Kind.RELEASE, object_id), urgent=False)

    # -- values -----------------------------------------------------------
    def expect(self, return_ids) -> None:
        self.pending.update(return_ids)

    def store_local(self, object_id: bytes, is_error: bool, value) -> None:
        self.memstore[object_id] = (is_error, value)

    def forget(self, object_id: bytes) -> None:
        """Drop a cached value that turned out stale (e.g. a spilled segment)."""
        self.memstore.pop(object_id, None)
        self.subscribed.discard(object_id)

    def fetch(self, ids: list[bytes], timeout: float | None = None, num: int | None = None) -> list[bytes]:
        """Wait until `num` (default all) of `ids` are in the memstore; the ready ones."""
        memstore = self.memstore
        want = len(ids) if num is None else num
        missing = [i for i in ids if i not in memstore]
        if len(ids) - len(missing) >= want:
            return [i for i in ids if i in memstore]
        ask = [i for i in missing if i not in self.pending and i not in self.subscribed]
        if ask:
            self.subscribed.update(ask)
            self.send(NODE, (Kind.SUBSCRIBE, ask))
        blocked = self.executing
        if blocked:
            self.send(NODE, (Kind.BLOCKED,))
        self.flush_node()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.io_cv:
            self.want_read += 1
        if self.thread is not None:
            os.write(self._wake_w, b"r")  # the I/O thread hands us the socket
        try:
            while True:
                missing = [i for i in missing if i not in memstore]
                if len(ids) - len(missing) >= want:
                    break
                if self.dead_reason:
                    raise ConnectionFailedError(self.dead_reason)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if num is not None:
                        break
                    raise GetTimeoutError(
                        f"get timed out after {timeout} s with {len(missing)} of {len(ids)} "
                        "values not ready; raise the timeout, or use wait() to take the ready ones"
                    )
                self._read_or_wait(
                    0.1 if left is None else min(left, 0.1),
                    lambda m=missing: len(ids) - sum(i not in memstore for i in m) >= want,
                )
        finally:
            with self.io_cv:
                self.want_read -= 1
                if not self.want_read:
                    self.io_cv.notify_all()
            if blocked:
                self.send(NODE, (Kind.UNBLOCKED,))
        return [i for i in ids if i in memstore]

    def _read_or_wait(self, timeout: float, done: Callable[[], bool] | None = None) -> None:
        """Read the socket if no other thread does; else wait for that thread's news.

        `done` is checked once the socket is ours: another thread may have read
        what we wait for just before it let go.
        """
        if self.thread is None:
            got = self.read_lock.acquire(blocking=False)
        else:
            got = self.read_lock.acquire(timeout=min(timeout, 0.002))
        if got:
            try:
                if done is None or not done():
                    self._read(timeout)
            finally:
                self.read_lock.release()
        else:
            with self.cv:
                self.cv.wait(timeout)

    def _read(self, timeout: float) -> bool:
        """Wait up to `timeout` for the node; dispatch what it sent (holding read_lock)."""
        link = self.link
        if link is None or link.closed:
            return False
        try:
            ready, _, _ = select.select([link.sock], [], [], timeout)
        except (OSError, ValueError):
            return False
        if not ready:
            return False
        batches = link.recv()
        if batches is None:
            if not self.closed:
                self._mark_dead(
                    "the connection to the cluster's node daemon closed: the cluster stopped or "
                    "crashed; results not received are lost. Call init() again to start or join "
                    "a cluster."
                )
            return False
        for batch in batches:
            self._dispatch(batch)
        return True

    def pump(self, timeout: float, done: Callable[[], bool] | None = None) -> None:
        """Worker main loop: read and dispatch what arrives within `timeout`."""
        self._read_or_wait(timeout, done)

    def add_callback(self, object_id: bytes, fn: Callable[[], None]) -> None:
        with self.cv:
            if object_id not in self.memstore:
                self.callbacks.setdefault(object_id, []).append(fn)
                if object_id not in self.pending and object_id not in self.subscribed:
                    self.subscribed.add(object_id)
                    self.send(NODE, (Kind.SUBSCRIBE, [object_id]))
                return
        fn()

    # -- the driver's I/O thread -----------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        if self.head_sock is not None:
            poller.register(self.head_sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        link_fd = None
        last_flush = time.monotonic()
        try:
            while not self.closed:
                if self.want_read:
                    with self.io_cv:
                        self.io_cv.wait_for(lambda: not self.want_read or self.closed, 0.05)
                # Read the node only while no user thread does.
                if link_fd is None and self.link is not None and not self.link.closed:
                    link_fd = self.link.fileno()
                    poller.register(link_fd, zmq.POLLIN)
                holding = self.read_lock.acquire(blocking=False) if link_fd is not None else False
                if not holding and link_fd is not None:
                    poller.unregister(link_fd)
                    link_fd = None
                try:
                    events = dict(poller.poll(100))
                    if self._wake_r in events:
                        self._wake_pending = False  # before draining: a later wake writes again
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                    self._flush_head()
                    now = time.monotonic()
                    if self.node_pending and (self._wake_r in events or now - last_flush > 0.1):
                        last_flush = now
                        self.flush_node()
                    if holding and link_fd in events:
                        if not self._read(0):
                            if self.link is None or self.link.closed or self.dead_reason:
                                poller.unregister(link_fd)
                                link_fd = None
                    if self.head_sock is not None and self.head_sock in events:
                        for _, batch in protocol.recv_batches(self.head_sock, self.signer, False):
                            self._dispatch(batch)
                finally:
                    if holding:
                        self.read_lock.release()
        except zmq.ContextTerminated:
            pass
        except Exception as e:  # never die silently: waiters must learn about it
            self._mark_dead(f"the runtime's I/O thread failed: {e!r}")
            raise

    def _mark_dead(self, reason: str) -> None:
        self.dead_reason = reason
        with self.cv:
            self.cv.notify_all()
        for fut in list(self.requests.values()):
            if not fut.done():
                fut.set_result((False, ConnectionFailedError(reason)))
        if self.on_message is not None:
            self.on_message((Kind.EXIT,))

    def _flush_head(self) -> None:
        """Send what user threads queued for the head (ZeroMQ: only this thread may)."""
        outbox = self.head_outbox
        if not outbox:
            return
        batch = []
        while outbox:
            batch.append(outbox.popleft())
        if self.head_sock is not None:
            protocol.send(self.head_sock, self.signer, batch)

    def _dispatch(self, batch: list) -> None:
        got_values = False
        fire: list[Callable] = []
        for msg in batch:
            kind = msg[0]
            if kind == Kind.RESULT:
                object_id = msg[1]
                self.pending.discard(object_id)
                if object_id in self.refcounts or object_id in self.callbacks:
                    self.memstore[object_id] = (msg[2], msg[3])
                    got_values = True
                    cbs = self.callbacks.pop(object_id, None)
                    if cbs:
                        fire.extend(cbs)
            elif kind == Kind.LOG:
                try:
                    self.log_handler(*msg[1:])
                except Exception:
                    pass
            elif kind == Kind.REPLY:
                fut = self.requests.pop(msg[1], None)
                if fut is not None and not fut.done():
                    fut.set_result((msg[2], msg[3]))
            elif kind == Kind.FUNC:
                self.function_blobs[msg[1]] = (msg[2], msg[3])
            elif kind == Kind.WELCOME:
                self.welcome = msg[2]
                if not self.node_pid:
                    self.node_pid = msg[2].get("pid", 0)
            elif self.on_message is not None:
                self.on_message(msg)
        if got_values:
            with self.cv:
                self.cv.notify_all()
        for fn in fire:
            try:
                fn()
            except Exception:
                pass

    # -- shutdown ---------------------------------------------------------
    def close(self, say_bye: bool = True) -> None:
        if self.closed:
            return
        if not self.dead_reason and self.link is not None:
            with self.send_lock:
                batch, self.node_pending = self.node_pending, []
                if say_bye:
                    batch.append((Kind.BYE,))
                if batch:
                    self.link.send(batch)
        deadline = time.monotonic() + 1.0
        while self.head_outbox and time.monotonic() < deadline and self.thread and self.thread.is_alive():
            time.sleep(0.002)
        self.closed = True
        os.write(self._wake_w, b"x")
        with self.io_cv:
            self.io_cv.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=2.0)
        if self.link is not None:
            self.link.close()
        if self.head_sock is not None:
            self.head_sock.close(linger=0 if self.dead_reason else 500)
        if self.ctx is not None:
            self.ctx.term()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        with self.cv:
            self.cv.notify_all()


def print_log(owner: bytes, ctx: Any, stream: int, text: str, label: str) -> None:
    """Default output of worker prints in a driver: prefixed like Ray's ``(pid=…)``."""
    out = sys.stderr if stream == 2 else sys.stdout
    prefix = f"({label}) "
    if getattr(out, "isatty", lambda: False)():
        prefix = f"\x1b[36m{prefix}\x1b[0m"
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        out.write("".join(prefix + line + "\n" for line in lines))
        out.flush()
    except (ValueError, OSError):
        pass
