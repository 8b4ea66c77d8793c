"""The core every driver and worker runs: one connection to the local node.

::

    user threads                                  I/O thread (one per process)
    ────────────                                  ────────────────────────────
    .remote() / put / HOLD / RELEASE ─▶ outbox ─▶ drain, batch, sign, send ─▶ node
                          wake pipe ─(once per burst)─▶ poll(node, head, wake pipe)
    get / wait / futures ◀── memstore ◀── RESULT ──────┤
    printed output       ◀── log_handler ◀── LOG ──────┤
    worker executor      ◀── on_message ◀── EXECUTE ───┘ (workers only)

User threads never touch a socket: they append to the outbox and wake the
I/O thread only when the outbox was idle, so a burst of ``.remote()``
calls leaves as one signed batch. Results are pushed by the node to the
owner of each task; values the process does not own are asked for with
SUBSCRIBE. The memstore keeps a result for as long as a local ref to it
exists.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq

from . import protocol
from .config import pid_alive
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
        self.welcome: dict = {}
        self.signer = protocol.Signer(key)
        prefix = b"w" if role == "worker" else b"d"
        self.identity = prefix + (str(worker_id).encode() if role == "worker" else os.urandom(7).hex().encode())
        self.outbox: deque = deque()
        self.memstore: dict[bytes, tuple[bool, Any]] = {}
        self.pending: set[bytes] = set()  # results we own that have not arrived
        self.subscribed: set[bytes] = set()
        self.refcounts: dict[bytes, int] = {}
        self.cv = threading.Condition()
        self.ref_lock = threading.Lock()
        self.callbacks: dict[bytes, list[Callable]] = {}
        self.requests: dict[int, Future] = {}
        self.function_blobs: dict[bytes, bytes] = {}
        self.registered_functions: set[bytes] = set()
        self.on_message: Callable[[tuple], None] | None = None
        self.log_handler: Callable[..., None] = print_log
        self.closed = False
        self.dead_reason = ""
        self._req_ids = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wake_pending = False
        self._blocked_depth = 0
        self.executing = False  # worker: inside a task that holds a CPU

        self.ctx = zmq.Context()
        self.node_sock = protocol.tune(self.ctx.socket(zmq.DEALER))
        self.node_sock.setsockopt(zmq.IDENTITY, self.identity)
        if node_address:
            self.node_sock.connect(node_address)
        self.head_sock = None
        if head_address:
            self.head_sock = protocol.tune(self.ctx.socket(zmq.DEALER))
            self.head_sock.connect(f"tcp://{head_address}")
        if node_address:
            self.send(NODE, (Kind.HELLO, role, os.getpid(), job_id, worker_id, sys.path[:]))
        self.thread = threading.Thread(target=self._run, name="runtime-io", daemon=True)
        self.thread.start()

    # -- sending ----------------------------------------------------------
    def send(self, dest: int, msg: tuple, urgent: bool = True) -> None:
        self.outbox.append((dest, msg))
        if urgent and not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def request(self, op: str, *args, dest: int = HEAD, timeout: float | None = 30.0) -> Any:
        """A control-plane call to the head (or the node), answered by REPLY."""
        if dest == HEAD and self.head_sock is None:
            dest = NODE
        req_id = next(self._req_ids)
        fut: Future = Future()
        self.requests[req_id] = fut
        self.send(dest, (Kind.REQUEST, req_id, op, args))
        try:
            ok, payload = fut.result(timeout)
        except TimeoutError:
            self.requests.pop(req_id, None)
            self._check_alive()
            raise ConnectionFailedError(
                f"the cluster did not answer {op!r} within {timeout} s; is it running? "
                "Check with `nbcluster status`."
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
            self.outbox.append((NODE, (Kind.HOLD, object_id)))

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
        self.outbox.append((NODE, (Kind.RELEASE, object_id)))

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
        deadline = None if timeout is None else time.monotonic() + timeout
        blocked = self.executing and self.role == "worker"
        if blocked:
            self.send(NODE, (Kind.BLOCKED,))
        try:
            with self.cv:
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
                    self.cv.wait(left if left is not None else 1.0)
        finally:
            if blocked:
                self.send(NODE, (Kind.UNBLOCKED,))
        return [i for i in ids if i in memstore]

    def add_callback(self, object_id: bytes, fn: Callable[[], None]) -> None:
        with self.cv:
            if object_id not in self.memstore:
                self.callbacks.setdefault(object_id, []).append(fn)
                if object_id not in self.pending and object_id not in self.subscribed:
                    self.subscribed.add(object_id)
                    self.send(NODE, (Kind.SUBSCRIBE, [object_id]))
                return
        fn()

    # -- the I/O thread ---------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.node_sock, zmq.POLLIN)
        if self.head_sock is not None:
            poller.register(self.head_sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        last_check = time.monotonic()
        try:
            while not self.closed:
                events = dict(poller.poll(100))
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                self._wake_pending = False
                self._flush()
                if self.node_sock in events:
                    for _, batch in protocol.recv_batches(self.node_sock, self.signer, False):
                        self._dispatch(batch)
                if self.head_sock is not None and self.head_sock in events:
                    for _, batch in protocol.recv_batches(self.head_sock, self.signer, False):
                        self._dispatch(batch)
                now = time.monotonic()
                if now - last_check > 1.0:
                    last_check = now
                    self._check_alive()
        except zmq.ContextTerminated:
            pass
        except Exception as e:  # never die silently: waiters must learn about it
            self._mark_dead(f"the runtime's I/O thread failed: {e!r}")
            raise

    def _check_alive(self) -> None:
        if self.node_pid and not self.dead_reason and not pid_alive(self.node_pid):
            self._mark_dead(
                "the cluster's node daemon has exited; results not received are lost. "
                "Call init() again to start a new cluster."
            )

    def _mark_dead(self, reason: str) -> None:
        self.dead_reason = reason
        with self.cv:
            self.cv.notify_all()
        for fut in list(self.requests.values()):
            if not fut.done():
                fut.set_result((False, ConnectionFailedError(reason)))
        if self.on_message is not None:
            self.on_message((Kind.EXIT,))

    def _flush(self) -> None:
        outbox = self.outbox
        if not outbox:
            return
        to_node: list = []
        to_head: list = []
        while outbox:
            dest, msg = outbox.popleft()
            (to_node if dest == NODE else to_head).append(msg)
            if len(to_node) >= 2000:
                protocol.send(self.node_sock, self.signer, to_node)
                to_node = []
        if to_node:
            protocol.send(self.node_sock, self.signer, to_node)
        if to_head and self.head_sock is not None:
            protocol.send(self.head_sock, self.signer, to_head)

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
                got_values = True
            elif kind == Kind.WELCOME:
                self.welcome = msg[2]
                if self.node_address.startswith("ipc://") and not self.node_pid:
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
        if not self.dead_reason:
            if say_bye:
                self.send(NODE, (Kind.BYE,))
            elif self.outbox:
                os.write(self._wake_w, b"x")
            deadline = time.monotonic() + 1.0
            while self.outbox and time.monotonic() < deadline and self.thread.is_alive():
                time.sleep(0.002)
        self.closed = True
        os.write(self._wake_w, b"x")
        self.thread.join(timeout=2.0)
        linger = 0 if self.dead_reason else 1000  # let the last batch (DONE, BYE) leave
        for sock in (self.node_sock, self.head_sock):
            if sock is not None:
                sock.close(linger=linger)
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
