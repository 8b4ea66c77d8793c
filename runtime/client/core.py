"""The core every driver and worker runs: its connections, its objects, its submissions.

::

    .remote() ──▶ Call ──deps ready?──▶ task: queue per resource shape ──▶ leased worker ─┐
                   │        (local         actor call: queue per actor ───▶ actor worker ─┤ EXECUTE
                   │         memstore)                                                    │ (direct,
                   └──▶ actor creation ──▶ node (places it)                               │  Unix socket)
    get()/wait() ──▶ flush, then read every socket itself (leader/follower)               │
                     ◀── DONE / LOG ◀──────────────────────────────────────────────────────┘
    node ◀── LEASE_REQUEST / LEASE_RETURN, PUT, HOLD / RELEASE, SUBSCRIBE, STATS
    node ──▶ LEASE_GRANT / LEASE_REVOKE, ACTOR_LOCATION, RESULT (subscribed values)

    a worker of another node: RemoteLink ──FORWARD──▶ our node ══▶ its node ──▶ worker
                              ◀──FORWARDED / PEER_CLOSED── our node ◀══ (gateway.py)
    LEASE_SPILL from our node: ask the node it names (through ours); NODE_DEAD:
    retry what ran there. A driver on a machine without a node has a ZLink
    (ZeroMQ, I/O thread only) to a node's gateway instead of the Unix socket.

The node is off the per-task path: it lends workers (leases) and places
actors; the owner of a task sends it straight to a leased worker and gets
the result straight back, like Ray's core worker. Results live in the
owner's memstore. When a ref leaves the process (inside an argument, a
`put`, or a result) its value is *promoted* to the node first, so any
process can read it; large values are registered with the node when they
arrive, since it owns their shared-memory lifetime.

`Client` composes one class per concern, each owning its state:

    objects.Objects          memstore, reference counts, promotion, subscriptions, arrivals
    leases.Leases            task queues per shape, leased workers, retries, spillback
    actor_calls.ActorCalls   where each actor is, its calls in order
    io_loop.IOLoop           who reads the sockets, the wake pipe, the driver's I/O thread

and keeps the connections, sending, submission and the dispatch of what
arrives. Latency shapes the threading: a thread hand-off costs ~80 µs here, so a
thread that waits for a value reads the sockets itself instead of being
woken. Drivers keep an I/O thread that reads when nobody waits (live
output, futures) and sends bursts as batches; workers have no I/O thread.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import zmq

from ..exceptions import (
    ClusterGoneError,
    ConnectionFailedError,
    GetTimeoutError,
)
from ..wire import protocol, serialization, transport
from ..wire.protocol import Kind, TaskSpec
from .actor_calls import ActorCalls
from .io_loop import IOLoop
from .leases import Leases
from .objects import Objects
from .records import Call, Lease

NODE, HEAD = 0, 1
NODE_SILENCE = 10.0  # seconds a driver without a node waits for news from the node it uses


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
        listen: str | None = None,
        curve_public: str = "",
        gateway: str = "",
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
        if node_id:
            protocol.ids.set_home(node_id)
        if role == "worker":
            self.identity = b"w%d." % worker_id + node_id.encode()
        else:
            self.identity = b"d" + os.urandom(7).hex().encode()
        self.cv = threading.Condition()
        self.lock = threading.RLock()  # submissions, leases, actor connections, arrivals
        # Values and references (client/objects.py); the hot names are bound here once.
        self.objects = objects = Objects(self)
        self.memstore = objects.memstore
        self.add_ref, self.remove_ref, self.promote = objects.add_ref, objects.remove_ref, objects.promote
        self.expect, self.store_local, self.forget = objects.expect, objects.store_local, objects.forget
        self.add_callback = objects.add_callback
        self.requests: dict[int, Future] = {}
        self.function_blobs: dict[bytes, tuple[bytes, list]] = {}
        self.registered_functions: set[bytes] = set()
        self.on_message: Callable[[tuple, transport.Link | None], None] | None = None
        self.on_blocked: Callable[[], None] | None = None
        self.log_handler: Callable[..., None] = print_log
        self.welcome: dict = {}
        self.closed = False
        self.dead_reason = ""
        # Called once, on the I/O thread, with the reason when the cluster goes away (not on
        # close()): the notebook layer tells its user and stops its views (kernel_ext.notice).
        self.on_dead: list[Callable[[str], None]] = []
        self.executing = False  # worker: inside a task that holds a CPU
        self._req_ids = itertools.count(1)
        self._segment_prefix: str | None = None

        # direct submissions
        self.calls: dict[bytes, Call] = {}  # task id -> call, until done
        self.dep_waiters: dict[bytes, list[Call]] = {}
        self.leases = Leases(self)  # tasks: queues per shape, leased workers
        self.actor_calls = ActorCalls(self)  # actor calls: a connection and an order per actor
        self.workers_by_identity: dict[bytes, transport.Link] = {}
        self.peers: dict[int, transport.Link] = {}  # fd -> link (workers we use, callers of ours)
        self.stats_sent: tuple = ()

        # sending: any thread; a pending batch per link
        self.outq: dict[transport.Link, list] = {}
        # Re-entrant: an ObjectRef's or ActorHandle's __del__ (run by the garbage collector at
        # any allocation, also while this thread sends) queues a RELEASE under the same lock.
        self.send_lock = threading.RLock()
        self.head_outbox: deque = deque()
        self.link: Any = None
        # A driver on a machine without a node talks to a node's gateway over TCP.
        self.remote_driver = bool(gateway)
        self.last_keepalive = 0.0
        self.last_heard = time.monotonic()  # from the node (a driver without a node checks it)
        if node_address:
            try:
                self.link = transport.Link(node_address, self.signer, identity=b"node")
            except OSError as e:
                raise ConnectionFailedError(
                    f"cannot connect to the node at {node_address}: {e}. Is the cluster running? "
                    "Check with `nbcluster status`."
                ) from None
        self.io = io = IOLoop(self)  # the wake pipe, who reads, the I/O thread
        self.wake = io.wake
        self.ctx: zmq.Context | None = None
        self.head_sock = None
        if head_address or gateway:
            self.ctx = zmq.Context()
        if gateway:
            self.link = transport.ZLink(
                self.ctx, gateway, self.signer, self.identity, curve_public, self.wake
            )
        if head_address:
            self.head_sock = protocol.tune(self.ctx.socket(zmq.DEALER))
            if curve_public:
                protocol.curve_client(self.head_sock, curve_public)
            self.head_sock.connect(f"tcp://{head_address}")
        if self.link is not None:
            self.outq[self.link] = [
                (Kind.HELLO, role, os.getpid(), job_id, worker_id, sys.path[:], self.identity)
            ]
        if listen:
            io.listen(listen)  # before HELLO: the node lends us out once it hears from us
        if role != "worker":
            io.start()
        else:
            self.flush()
        self.thread = io.thread

    def segment(self, object_id: bytes) -> str | None:
        """The shared-memory path for a large value with this id, on our node (None: inline)."""
        if self.remote_driver:
            return None  # no node on this machine: values travel inline
        prefix = self._segment_prefix
        if prefix is None:
            prefix = self._segment_prefix = serialization.segment_path(self.cluster_id, self.node_id, b"")
        return prefix + object_id.hex()

    # ================================================================ sending
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
            if not urgent:
                return
            if self.thread is None:
                self._flush_locked()
                return
        if was_empty or not self.io.wake_pending:
            self.wake()  # once per burst: the I/O thread sends everything queued

    def to_node(self, node_id: str, msg: tuple) -> None:
        """To the node `node_id` itself: our own directly, another through ours."""
        if not node_id or node_id == self.node_id:
            self.send(NODE, msg)
        else:
            self.send(NODE, (Kind.FORWARD, node_id, b"", [msg]))

    def send_node(self, msg: tuple, urgent: bool = True) -> None:
        self.send(NODE, msg, urgent)

    def next_request_id(self) -> int:
        return next(self._req_ids)

    def send(self, dest: int, msg: tuple, urgent: bool = True) -> None:
        if dest == NODE:
            self.queue(self.link, msg, urgent)
            return
        self.head_outbox.append(msg)
        self.wake()

    def flush(self) -> None:
        """Send every pending batch."""
        with self.send_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        # The node's batch first: HOLDs of refs we received must reach it
        # before the results we send make their senders let go of them.
        if not self.outq:
            return
        out, self.outq = self.outq, {}
        node_batch = out.pop(self.link, None) if self.link is not None else None
        if node_batch:
            self.link.send(node_batch)
        for link, batch in out.items():
            link.send(batch)

    def flush_node(self) -> None:
        with self.send_lock:
            batch = self.outq.pop(self.link, None) if self.link is not None else None
            if batch:
                self.link.send(batch)

    def request(self, op: str, *args, dest: int = HEAD, timeout: float | None = 30.0) -> Any:
        """A control-plane call to the head (relayed by the node for workers) or the node."""
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
                self.io.read_or_wait(0.05 if left is None else min(left, 0.05), fut.done)
        try:
            ok, payload = fut.result(0 if self.thread is None else timeout)
        except TimeoutError:
            self.requests.pop(req_id, None)
            if self.signer.auth_failed:
                raise ConnectionFailedError(self.auth_failed_message()) from None
            if self.dead_reason:
                raise ClusterGoneError(self.dead_reason) from None
            raise ConnectionFailedError(
                f"the cluster did not answer {op!r} within {timeout} s; is it "
                "running? Check with `nbcluster status`."
            ) from None
        if not ok:
            raise payload
        return payload

    # ================================================================= values
    def fetch(self, ids: list[bytes], timeout: float | None = None, num: int | None = None) -> list[bytes]:
        """Wait until `num` (default all) of `ids` are in the memstore; the ready ones."""
        memstore = self.memstore
        want = len(ids) if num is None else num
        missing = {i for i in ids if i not in memstore}
        if len(ids) - len(missing) >= want:
            return [i for i in ids if i in memstore]
        # Arrivals count down `waiter.left` (Objects.arrived): no rescans of long lists.
        # Registered under the lock arrivals are handled with, so none slips between.
        with self.lock:
            waiter, missing = self.objects.countdown(ids)
        allowed = len(ids) - want  # how many may still be missing when we are done
        self.objects.subscribe(missing)
        blocked = self.executing
        if blocked:
            if self.on_blocked is not None:
                self.on_blocked()
            self.send(NODE, (Kind.BLOCKED,))
        self.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        io = self.io
        io.want_read += 1
        if self.thread is not None:
            os.write(io.wake_w, b"r")  # the I/O thread hands us the sockets

        def done() -> bool:
            return waiter.left <= allowed

        try:
            while not done():
                if self.dead_reason:
                    raise ClusterGoneError(self.dead_reason)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    if num is not None:
                        break
                    raise GetTimeoutError(
                        f"get timed out after {timeout} s with {waiter.left} of {len(ids)} "
                        "values not ready; raise the timeout, or use wait() to take the ready ones"
                    )
                io.read_or_wait(0.1 if left is None else min(left, 0.1), done)
        finally:
            io.want_read -= 1
            with self.lock:
                self.objects.uncount(waiter, missing)
            if blocked:
                self.send(NODE, (Kind.UNBLOCKED,))
        return [i for i in ids if i in memstore]

    # ============================================================ submissions
    def submit(self, spec: TaskSpec, keep: tuple = ()) -> None:
        """Run a task or an actor call: straight to a worker once its arguments exist."""
        call = Call(spec, keep)
        if spec.contained:
            self.promote(spec.contained)
        with self.lock:
            self.calls[spec.task_id] = call
            self.objects.pending.update(spec.return_ids)
            if spec.actor_id:
                self.actor_calls.enqueue(call)
            for dep in spec.deps:
                if dep not in self.memstore:
                    waiters = self.dep_waiters.setdefault(dep, [])
                    if call not in waiters:
                        waiters.append(call)
                        call.missing += 1
            if call.missing:
                self.objects.subscribe(spec.deps)
            else:
                self._deps_ready(call)

    def submit_to_node(self, spec: TaskSpec) -> None:
        """An actor's creation: the node places it; it needs the argument values."""
        self.promote(spec.deps)
        self.promote(spec.contained)
        self.send(NODE, (Kind.SUBMIT, spec))

    def deps_arrived(self, object_id: bytes) -> None:
        """A value arrived: calls that waited for it as their last argument go on."""
        waiting = self.dep_waiters.pop(object_id, None)
        if waiting:
            for call in waiting:
                call.missing -= 1
                if call.missing == 0:
                    self._deps_ready(call)

    def _deps_ready(self, call: Call) -> None:
        spec = call.spec
        for dep in spec.deps:
            is_error, value = self.memstore[dep]
            if is_error:
                self.finish_error(call, value)
                return
        if spec.actor_id:
            self.actor_calls.pump(self.actor_calls.conns[spec.actor_id])
        else:
            self.leases.enqueue(call)

    def resolved(self, spec: TaskSpec) -> dict:
        """The values of a call's top-level ObjectRef arguments, as its worker receives them."""
        memstore = self.memstore
        return {dep: memstore[dep] for dep in spec.deps}

    def _finish(self, call: Call, results: list) -> None:
        """Results of a call arrived (from its worker, or made up here on failure)."""
        self.calls.pop(call.spec.task_id, None)
        if isinstance(call.spec.args, str):  # large arguments went through shared memory
            try:
                os.unlink(call.spec.args)
            except OSError:
                pass
        self.objects.keep_results(results)
        with self.cv:
            self.cv.notify_all()

    def finish_error(self, call: Call, error: bytes) -> None:
        self._finish(call, [(rid, True, error, len(error), ()) for rid in call.spec.return_ids])

    # ------------------------------------------------------- results, failures
    def _on_done(self, msg: tuple, link: transport.Link | None) -> None:
        _, task_id, results, retryable = msg
        with self.lock:
            call = self.calls.get(task_id)
            if call is None:
                return
            lease = call.lease
            if call.spec.actor_id:
                self.actor_calls.on_done(call)
            elif self.leases.on_done(call, retryable):
                return  # queued again: a retry
            self._finish(call, results)
            if not call.spec.actor_id and lease is not None:
                self.leases.next_for(lease)

    def on_peer_closed(self, link: transport.Link) -> None:
        """A worker we send work to is gone: retry its tasks, fail its actor's calls."""
        with self.lock:
            if isinstance(link, transport.Link):
                self.peers.pop(link.sock.fileno(), None)
            if self.workers_by_identity.get(link.identity) is link:
                del self.workers_by_identity[link.identity]
            self.leases.peer_closed(link)
            self.actor_calls.peer_closed(link)

    def _on_node_dead(self, node_id: str) -> None:
        """Another node is gone: its workers' tasks are retried, its lease requests void."""
        with self.lock:
            for link in [
                x for x in self.workers_by_identity.values() if getattr(x, "node_id", "") == node_id
            ]:
                link.close()
                self.on_peer_closed(link)
            self.leases.on_node_dead(node_id)

    def worker_link(
        self, identity: bytes, path: str, node_id: str = ""
    ) -> transport.Link | transport.RemoteLink | None:
        """A connection to a worker (of ours, or of another node through ours); None if gone."""
        link = self.workers_by_identity.get(identity)
        if link is not None and not link.closed:
            return link
        if self.remote_driver or (node_id and node_id != self.node_id):
            # Through our node (a driver without a node: through the one it uses).
            if self.link is None:
                return None
            link = transport.RemoteLink(node_id or self.node_id, identity, self.link)
            self.workers_by_identity[identity] = link
            return link
        try:
            link = transport.Link(path, self.signer, identity=identity)
        except OSError:
            return None
        link.send([(Kind.HELLO, self.role, os.getpid(), self.job_id, self.worker_id, [], self.identity)])
        self.workers_by_identity[identity] = link
        self.peers[link.sock.fileno()] = link
        return link

    def signal_worker(self, lease: Lease, force: bool) -> None:
        """Interrupt the task running on a leased worker: SIGINT (KeyboardInterrupt), or SIGKILL."""
        signum = signal.SIGKILL if force else signal.SIGINT
        if lease.node:
            self.to_node(lease.node, (Kind.SIGNAL, lease.link.identity, signum))
        else:
            try:
                os.kill(lease.pid, signum)
            except ProcessLookupError:
                pass

    def forget_waiting(self, call: Call) -> None:
        """A cancelled call no longer waits for its arguments."""
        for waiters in self.dep_waiters.values():
            if call in waiters:
                waiters.remove(call)

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        self.actor_calls.kill(actor_id, no_restart)

    def cancel(self, task_id: bytes, force: bool) -> None:
        with self.lock:
            call = self.calls.get(task_id)
            if call is None:
                return
            if call.spec.actor_id:
                self.actor_calls.cancel(call)
            else:
                self.leases.cancel(call, force)

    # ================================================================ reading
    def pump(self, timeout: float, done: Callable[[], bool] | None = None) -> None:
        """Worker main loop: read and dispatch what arrives within `timeout`."""
        io = self.io
        io.read_or_wait(timeout, done)
        now = time.monotonic()
        if now - io.last_tick > 0.1:
            io.last_tick = now
            self.tick()

    def dispatch(self, batch: list, link: transport.Link | None) -> None:
        got_values = False
        for msg in batch:
            kind = msg[0]
            if kind == Kind.DONE:
                self._on_done(msg, link)
                got_values = True
            elif kind == Kind.RESULT:
                with self.lock:
                    self.objects.arrived(msg[1], msg[2], msg[3])
                got_values = True
            elif kind == Kind.LOG:
                try:
                    self.log_handler(*msg[1:])
                except Exception:
                    pass
            elif kind == Kind.REPLY:
                fut = self.requests.pop(msg[1], None)
                if fut is not None and not fut.done():
                    fut.set_result((msg[2], msg[3]))
            elif kind == Kind.LEASE_GRANT:
                self.leases.on_grant(msg)
            elif kind == Kind.LEASE_REVOKE:
                self.leases.on_revoke(msg[1])
            elif kind == Kind.ACTOR_LOCATION:
                self.actor_calls.on_location(msg)
            elif kind == Kind.REJECTED:
                self.leases.on_rejected(msg[1])
            elif kind == Kind.FORWARDED:
                _, node_id, ident, inner = msg
                if ident:
                    self.dispatch(inner, self.workers_by_identity.get(ident))
                else:  # from that node itself
                    for m in inner:
                        if m[0] == Kind.LEASE_GRANT:
                            self.leases.on_grant(m, node_id)
                        else:
                            self.dispatch([m], None)
            elif kind == Kind.PEER_CLOSED:
                link = self.workers_by_identity.get(msg[2])
                if link is not None and getattr(link, "node_id", None) == msg[1]:
                    link.close()
                    self.on_peer_closed(link)
            elif kind == Kind.LEASE_SPILL:
                self.leases.on_spill(msg)
            elif kind == Kind.NODE_DEAD:
                self._on_node_dead(msg[1])
            elif kind == Kind.ALIVE:
                pass  # a driver without a node: its node is there (see tick)
            elif kind == Kind.FUNC:
                self.function_blobs[msg[1]] = (msg[2], msg[3])
                got_values = True
            elif kind == Kind.WELCOME:
                self.welcome = msg[2]
                if not self.node_pid:
                    self.node_pid = msg[2].get("pid", 0)
            elif kind == Kind.HELLO and link is not None:
                link.identity = msg[-1]
            elif self.on_message is not None:
                self.on_message(msg, link)
        if got_values:
            with self.cv:
                self.cv.notify_all()

    # ============================================================ I/O thread
    def tick(self) -> None:
        """Every ~100 ms: give back idle leases, report what we run, send stragglers."""
        now = time.monotonic()
        with self.lock:
            self.leases.tick(now)
            running: dict[str, int] = {}
            queued: dict[str, int] = {}
            for call in self.calls.values():
                if call.spec.actor_id:
                    continue
                target = running if call.lease is not None else queued
                target[call.spec.name] = target.get(call.spec.name, 0) + 1
        stats = (running, queued)
        if self.remote_driver and now - self.last_heard > NODE_SILENCE and not self.dead_reason:
            self.mark_dead(
                f"the node this driver uses ({self.node_id}) has not answered for {NODE_SILENCE:.0f} s: "
                "it or its machine died; results not received are lost. Call init() again to "
                "connect through another node."
            )
        keepalive = self.remote_driver and now - self.last_keepalive > 1.0
        if stats != self.stats_sent or keepalive:  # a remote driver's node drops it when silent
            self.stats_sent = stats
            self.last_keepalive = now
            self.send(NODE, (Kind.STATS, running, queued))
        self.flush()

    def auth_failed_message(self) -> str:
        return (
            f"authentication failed: the cluster at {self.head_address} rejected our key. "
            "Use the key of that cluster (its connection file, --token-file or token=...)."
        )

    def mark_dead(self, reason: str) -> None:
        """The cluster is gone: wake every waiter with `reason`; tell `on_dead` (once)."""
        first = not self.dead_reason
        self.dead_reason = reason
        with self.cv:
            self.cv.notify_all()
        for fut in list(self.requests.values()):
            if not fut.done():
                fut.set_result((False, ClusterGoneError(reason)))
        if self.on_message is not None:
            self.on_message((Kind.EXIT,), None)
        if first and not self.closed:
            for callback in list(self.on_dead):
                try:
                    callback(reason)
                except Exception:  # a listener's bug must not stop the I/O thread
                    pass

    # ============================================================== shutdown
    def close(self, say_bye: bool = True) -> None:
        if self.closed:
            return
        self.on_dead = []  # leaving on purpose is not the cluster going away
        with self.lock:
            self.leases.return_all()
        if not self.dead_reason and self.link is not None:
            if say_bye:
                self.send(NODE, (Kind.BYE,), urgent=False)
            self.flush()
            for link in self.io.links():
                link.drain(1.0)
            if self.remote_driver:
                self.link.drain(1.0)
        deadline = time.monotonic() + 1.0
        while self.head_outbox and time.monotonic() < deadline and self.thread and self.thread.is_alive():
            time.sleep(0.002)
        self.closed = True
        os.write(self.io.wake_w, b"x")
        if self.thread is not None:
            self.thread.join(timeout=2.0)
        for link in list(self.peers.values()):
            link.close()
        if self.link is not None and not self.remote_driver:
            self.link.close()
        if self.head_sock is not None:
            self.head_sock.close(linger=0 if self.dead_reason else 500)
        if self.remote_driver:
            self.link.close()
        if self.ctx is not None:
            self.ctx.term()
        self.io.close()
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


def head_client(info: Any) -> Client:
    """A client of the head alone (no node, no worker): for the CLI and the lab server.

    `info` is the cluster's `config.ConnectionInfo`.
    """
    return Client(
        cluster_id=info.cluster_id,
        key=bytes.fromhex(info.key),
        node_address=None,
        head_address=info.head_address,
        node_id="",
        curve_public=info.curve_public,
    )
