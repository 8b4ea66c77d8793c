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

    outbox.Outbox              batches per link, the send lock, what waits for the head
    control.Control            requests to the head or the node, their replies
    objects.Objects            memstore, reference counts, promotion, subscriptions, arrivals
    submissions.Submissions    the calls in flight, from submit to their results
    leases.Leases              task queues per shape, leased workers, retries, spillback
    actor_calls.ActorCalls     where each actor is, its calls in order
    connections.Connections    links to workers (direct or through our node), callers' sockets
    io_loop.IOLoop             who reads the sockets, the wake pipe, the driver's I/O thread

binds the names its users call (``client.submit``, ``client.queue``, ...)
to them once, and keeps what is left: start-up, waiting for values
(`fetch`), the dispatch of what arrives, the periodic tick and shutdown.
What the concerns decide (pipelining, lease requests, stealing, retries) is
apart from I/O in `decisions.py`.

Latency shapes the threading: a thread hand-off costs ~80 µs here, so a
thread that waits for a value reads the sockets itself instead of being
woken. Drivers keep an I/O thread that reads when nobody waits (live
output, futures) and sends bursts as batches; workers have no I/O thread.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from ..exceptions import (
    ClusterGoneError,
    ConnectionFailedError,
    GetTimeoutError,
)
from ..wire import protocol, serialization, transport
from ..wire.arena import ARENA
from ..wire.protocol import Kind
from .actor_calls import ActorCalls
from .arrivals import Arrivals
from .connections import Connections
from .console import print_log
from .control import Control
from .io_loop import IOLoop
from .leases import Leases
from .objects import Objects
from .outbox import NODE, Outbox
from .submissions import Submissions

NODE_SILENCE = 10.0  # seconds a driver without a node waits for news from the node it uses
TICK = 0.1  # s between ticks while anything time-driven is pending (Client.tick_interval)
# s between ticks of an idle driver: its I/O thread woke 10-20 times a second for nothing
# (~2.4 ms of CPU a second, taken from the workers of anyone's CPU-bound tasks)
IDLE_TICK = 0.5


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
        listen_direct: str = "",
        seal_direct: bool = False,
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
        self.thread: threading.Thread | None = None  # the driver's I/O thread, once started
        # Sending (client/outbox.py): any thread; a pending batch per link. Hot names bound once.
        self.outbox = outbox = Outbox(self)
        self.queue, self.send, self.send_node = outbox.queue, outbox.send, outbox.send_node
        self.to_node, self.flush, self.flush_node = outbox.to_node, outbox.flush, outbox.flush_node
        self.send_lock, self.head_outbox = outbox.send_lock, outbox.head_outbox
        self.lock = threading.RLock()  # submissions, leases, actor connections, arrivals
        # Values and references (client/objects.py); the hot names are bound here once.
        self.objects = objects = Objects(self)
        self.memstore = objects.memstore
        self.add_ref, self.remove_ref, self.promote = objects.add_ref, objects.remove_ref, objects.promote
        self.share = objects.share
        self.expect, self.store_local, self.forget = objects.expect, objects.store_local, objects.forget
        self.add_callback = objects.add_callback
        # Requests to the head or the node (client/control.py).
        self.control = control = Control(self)
        self.requests, self.request = control.requests, control.request
        self.next_request_id, self.auth_failed_message = control.next_request_id, control.auth_failed_message
        self.function_blobs: dict[bytes, tuple[bytes, list]] = {}
        self.registered_functions: set[bytes] = set()
        self.on_message: Callable[[tuple, transport.Link | None], None] | None = None
        self.on_blocked: Callable[[], None] | None = None
        self.log_handler: Callable[..., None] = print_log
        self.welcome: dict = {}
        self.closed = False
        # (namespace, name, actor id) of the non-detached named actors this process created: their
        # names are let go before close() returns, so a driver started next cannot find them.
        self.owned_names: list[tuple[str, str, bytes]] = []
        self.dead_reason = ""
        # Called once, on the I/O thread, with the reason when the cluster goes away (not on
        # close()): the notebook layer tells its user and stops its views (kernel_ext.notice).
        self.on_dead: list[Callable[[str], None]] = []
        self.executing = False  # worker: inside a task that holds a CPU
        self._segment_prefix: str | None = None

        # Direct submissions (client/submissions.py), sent to leased workers or actors.
        self.leases = Leases(self)  # tasks: queues per shape, leased workers
        self.actor_calls = ActorCalls(self)  # actor calls: a connection and an order per actor
        self.submissions = subs = Submissions(self)  # the calls in flight
        self.calls, self.dep_waiters = subs.calls, subs.dep_waiters
        self.submit, self.submit_to_node, self.cancel = subs.submit, subs.submit_to_node, subs.cancel
        self.submit_call = subs.submit_call
        self.task_templates: dict[tuple, protocol.TaskSpec] = {}  # remote_function.call_template
        self.deps_arrived, self.resolved = subs.deps_arrived, subs.resolved
        self.finish_error, self.forget_waiting = subs.finish_error, subs.forget_waiting
        # Connections to workers and from callers (client/connections.py).
        self.arrivals = Arrivals(self)  # what direct links bring from other nodes' memory
        self.connections = conns = Connections(self)
        self.workers_by_identity, self.peers = conns.workers_by_identity, conns.peers
        self.worker_link, self.signal_worker = conns.link, conns.signal
        self.on_peer_closed, self._on_node_dead = conns.closed, conns.node_dead
        self.stats_sent: tuple = ()
        self.handlers = self._handlers()  # Kind -> what dispatch does with it

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
            # A fixed identity: a reply still finds us after the connection was dropped.
            self.head_sock.setsockopt(zmq.ROUTING_ID, self.identity)
            if curve_public:
                protocol.curve_client(self.head_sock, curve_public)
            self.head_sock.connect(f"tcp://{head_address}")
        port, public = 0, b""
        if listen:
            io.listen(listen)  # before HELLO: the node lends us out once it hears from us
            if listen_direct:
                port, public = io.listen_direct(listen_direct, seal_direct)
        if self.link is not None:
            self.outq[self.link] = [
                (Kind.HELLO, role, os.getpid(), job_id, worker_id, sys.path[:], self.identity, port, public)
            ]
        if role != "worker":
            io.start()
        else:
            self.flush()
        self.thread = io.thread

    @property
    def outq(self) -> dict[transport.Link, list]:
        """The batches waiting to be sent (swapped for a new dict by every flush)."""
        return self.outbox.outq

    def segment(self, object_id: bytes) -> str | None:
        """The shared-memory path for a large value with this id, on our node (None: inline)."""
        if self.remote_driver:
            return None  # no node on this machine: values travel inline
        prefix = self._segment_prefix
        if prefix is None:
            prefix = self._segment_prefix = serialization.segment_path(self.cluster_id, self.node_id, b"")
        return prefix + object_id.hex()

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
        self.outbox.sent_at = 0.0  # a burst ends here: the next call is sent at once
        if self.outq:  # what this thread queued (another thread's flush in progress sends its own)
            self.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        io = self.io
        io.want_read += 1
        if self.thread is not None and io.read_lock.locked():
            os.write(io.wake_w, b"r")  # the I/O thread (in select) hands us the sockets

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

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        self.actor_calls.kill(actor_id, no_restart)

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
        """Handle one batch read from `link` (None: our node, or the head): each message by
        its kind's handler (`handlers`), the rest by `on_message` (a worker's tasks, a node's
        requests); waiters are woken once, after the batch, if values came."""
        handlers = self.handlers
        got_values = False
        for msg in batch:
            handler = handlers.get(msg[0])
            if handler is not None:
                if handler(msg, link):
                    got_values = True
            elif self.on_message is not None:
                self.on_message(msg, link)
        if got_values:
            with self.cv:
                self.cv.notify_all()

    def _handlers(self) -> dict[int, Callable[[tuple, transport.Link | None], bool | None]]:
        """What each kind of message this core handles itself does; True: values came.
        A table, not a chain of tests: a worker's EXECUTE came after twenty of them."""
        leases, objects, subs = self.leases, self.objects, self.submissions

        def result(msg: tuple, link: transport.Link | None) -> bool:
            with self.lock:
                objects.arrived(msg[1], msg[2], msg[3])
            return True

        def log(msg: tuple, link: transport.Link | None) -> None:
            try:
                self.log_handler(*msg[1:])
            except Exception:
                pass

        def forwarded(msg: tuple, link: transport.Link | None) -> None:
            _, node_id, ident, inner = msg
            if ident:
                self.dispatch(inner, self.workers_by_identity.get(ident))
            else:  # from that node itself
                for m in inner:
                    if m[0] == Kind.LEASE_GRANT:
                        leases.on_grant(m, node_id)
                    else:
                        self.dispatch([m], None)

        def peer_closed(msg: tuple, link: transport.Link | None) -> None:
            link = self.workers_by_identity.get(msg[2])
            if link is not None and getattr(link, "node_id", None) == msg[1]:
                link.close()
                self.on_peer_closed(link)

        def func(msg: tuple, link: transport.Link | None) -> bool:
            self.function_blobs[msg[1]] = (msg[2], msg[3])
            return True

        def welcome(msg: tuple, link: transport.Link | None) -> None:
            self.welcome = msg[2]
            if not self.node_pid:
                self.node_pid = msg[2].get("pid", 0)

        def hello(msg: tuple, link: transport.Link | None) -> None:
            if link is not None:
                link.identity = msg[6]
            elif self.on_message is not None:
                self.on_message(msg, link)

        return {
            Kind.DONE: subs.on_done,
            Kind.RESULT: result,
            Kind.LOG: log,
            Kind.REPLY: lambda msg, link: self.control.on_reply(msg),
            Kind.FETCHED: lambda msg, link: self.arrivals.on_fetched(msg[1], msg[2]),
            Kind.LEASE_GRANT: lambda msg, link: leases.on_grant(msg),
            Kind.LEASE_REVOKE: lambda msg, link: leases.on_revoke(msg[1]),
            Kind.LEASE_KILLED: lambda msg, link: leases.on_killed(msg[1], msg[2]),
            Kind.ACTOR_LOCATION: lambda msg, link: self.actor_calls.on_location(msg),
            Kind.REJECTED: lambda msg, link: leases.on_rejected(msg[1], link),
            Kind.FORWARDED: forwarded,
            Kind.PEER_CLOSED: peer_closed,
            Kind.LEASE_SPILL: lambda msg, link: leases.on_spill(msg),
            Kind.NODE_DEAD: lambda msg, link: self._on_node_dead(msg[1]),
            Kind.ALIVE: lambda msg, link: None,  # a driver without a node: its node is there (tick)
            Kind.FUNC: func,
            Kind.WELCOME: welcome,
            Kind.HELLO: hello,
        }

    # ============================================================ I/O thread
    def tick_interval(self) -> float:
        """TICK while a tick has work to come (leases to give back, tasks whose counts the node
        shows, memory backoffs, cancels to repeat, a node to keep alive), else IDLE_TICK."""
        with self.lock:
            leases = self.leases
            pending = self.calls or leases.delayed or leases.interrupting or any(leases.leases.values())
        return TICK if pending or self.remote_driver or self.stats_sent != ({}, {}) else IDLE_TICK

    def tick(self) -> None:
        """Every TICK (IDLE_TICK when idle): give back idle leases, report what we run, send
        stragglers."""
        now = time.monotonic()
        with self.lock:
            self.leases.tick(now)
            stats = self.submissions.task_counts()
            if self.io.direct_listener is not None:
                self.connections.drop_silent(now)
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
            self.send(NODE, (Kind.STATS, *stats))
        self.flush()
        ARENA.sweep()  # let go of our large files the node freed and we did not reuse

    def mark_dead(self, reason: str) -> None:
        """The cluster is gone: wake every waiter with `reason`; tell `on_dead` (once)."""
        first = not self.dead_reason
        self.dead_reason = reason
        with self.cv:
            self.cv.notify_all()
        self.control.fail_all(ClusterGoneError(reason))
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
        if self.owned_names and not self.dead_reason and self.thread is not None:
            try:  # as Ray's GCS does when a job ends; the actors themselves stop a moment later
                self.request("release_names", self.owned_names, timeout=2.0)
            except Exception:  # noqa: BLE001 - a head that is down forgets them when it sees them die
                pass
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
        ARENA.clear()
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
