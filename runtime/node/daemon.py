"""The node daemon: one per machine. It lends workers, places actors, and
keeps the machine's object table; it is not on a task's path.

::

    drivers, workers ──Unix socket──▶ Server ──▶ handlers ──▶ out[identity] (one signed
                                                                batch per peer per turn)
    head ◀──ZeroMQ/TCP── NODE_HELLO, NODE_REPORT every second, named-actor events
         ──▶ CLUSTER_VIEW every second, NODE_DEAD, EXIT
    other nodes ◀══ gateway (gateway.py) ══▶ relayed requests of their clients, objects
    zygote pipe ──▶ "started" / "exit" worker events

    Several nodes: a request that does not fit here now is spilled (LEASE_SPILL)
    to a node of the view with room; an actor that does not fit is hosted by
    another node while this one (its home: the first bytes of its id) keeps
    its record, restarts it and answers where it is. Objects of other nodes
    that processes here hold or wait for are held at their home node
    (`want_foreign`), as one holder for the whole node.

    LEASE_REQUEST(shape) ─▶ Scheduler (resources, FIFO per shape) ─▶ idle worker
        ─▶ LEASE_GRANT(worker socket) ─▶ the owner sends its tasks to the worker itself
        LEASE_RETURN / owner gone / worker died ─▶ resources back, worker idle or replaced
    SUBMIT(actor creation) ─▶ arguments ready? ─▶ Scheduler ─▶ a worker becomes the actor
        ─▶ ACTOR_LOCATION to whoever asked; callers then talk to the actor directly
    PUT / HOLD / RELEASE / SUBSCRIBE ─▶ ObjectTable (refcounts, shared memory, spilling)

A worker that blocks in `get` lends its lease's CPU (BLOCKED/UNBLOCKED),
so nested tasks cannot deadlock the node. When a lease request waits
while another owner holds leases, those leases are revoked: their owner
gives them back as soon as they are idle.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import time
from collections import deque
from typing import Any

import zmq

from .. import config as cfg
from ..exceptions import ObjectLostError
from ..wire import protocol, transport
from ..wire.protocol import ACTOR_CREATE, Kind, TaskSpec
from . import placement, zygote
from .object_store import ObjectTable
from .placement import ClusterView
from .records import (
    ACTOR,
    ALIVE,
    DEAD,
    IDLE,
    LEASED,
    PENDING,
    RESTARTING,
    STARTING,
    TERMINATING,
    Actor,
    Creation,
    Lease,
    LeaseRequest,
    Proc,
    Worker,
)
from .scheduler import Scheduler, from_units

log = logging.getLogger("runtime.node")

HEAD_SILENCE = 30.0  # seconds without the head before a joined node gives up
DIRECT_TIMEOUT = 10.0  # seconds a driver without a node may stay silent (it sends every second)


def _err(exc: BaseException) -> bytes:
    return pickle.dumps(exc, protocol.PROTOCOL)


class Node:
    def __init__(self, conf: dict) -> None:
        self.conf = conf
        self.node_id: str = conf["node_id"]
        self.cluster_id: str = conf["cluster_id"]
        self.address: str = conf["node_address"]
        self.signer = protocol.Signer(bytes.fromhex(conf["key"]))
        self.hostname = socket.gethostname()
        self.ip = conf.get("ip", "127.0.0.1")
        resources = dict(conf["resources"])
        self.scheduler = Scheduler(resources)
        self.total_resources = resources
        self.free_gpus = list(range(int(resources.get("GPU", 0))))
        self.pool_size = max(1, int(resources.get("CPU", 1)))
        self.max_workers = max(self.pool_size * 4, 32)
        cluster_dir = cfg.runtime_dir() / self.cluster_id
        self.cluster_dir = cluster_dir
        self.table = ObjectTable(
            conf["object_store_memory"], cfg.shm_dir(), cluster_dir / "spill" / self.node_id
        )
        self.workers: dict[int, Worker] = {}
        self.by_identity: dict[bytes, Worker] = {}
        self.idle: deque[Worker] = deque()
        self.next_wid = 1
        self.procs: dict[bytes, Proc] = {}
        self.functions: dict[bytes, tuple[bytes, list]] = {}
        self.function_waiters: dict[bytes, list[bytes]] = {}
        self.leases: dict[int, Lease] = {}
        self.next_lease = (int(self.node_id, 16) << 24) + 1  # unique across nodes
        self.waiting_deps: dict[bytes, list[Creation]] = {}
        self.actors: dict[bytes, Actor] = {}
        self.out: dict[bytes, list] = {}
        self.links: dict[bytes, transport.Conn] = {}
        self.relayed: dict[int, tuple[bytes, int]] = {}
        self.relay_id = 0
        self.head_out: list = []
        self.dirty = False
        self.running_flag = True
        self.warned_infeasible: set[tuple] = set()
        self.leases_granted = 0
        self.remote: dict[bytes, str] = {}  # clients of other nodes (and nodes, b"n"+id) -> node
        self.relayed_to: dict[bytes, set[str]] = {}  # our clients -> nodes they talk to
        self.cluster = ClusterView(self.node_id)  # the head's view; spillback decisions
        self.foreign: set[bytes] = set()  # objects of other nodes we hold there for our processes
        self.direct: dict[bytes, float] = {}  # drivers of machines without a node -> last heard
        self.gateway: Any = None
        self.head_said_exit = False
        self.on_joined = None
        self.reported = False
        self.started_at = time.time()
        self.handlers = {
            Kind.HELLO: self.on_hello,
            Kind.SUBMIT: self.on_submit,
            Kind.PUT: self.on_put,
            Kind.HOLD: self.on_hold,
            Kind.RELEASE: self.on_release,
            Kind.SUBSCRIBE: self.on_subscribe,
            Kind.KILL_ACTOR: self.on_kill_actor,
            Kind.BLOCKED: self.on_blocked,
            Kind.UNBLOCKED: self.on_unblocked,
            Kind.LOG: self.on_log,
            Kind.FUNC_FETCH: self.on_func_fetch,
            Kind.REGISTER_FUNC: self.on_register_func,
            Kind.ACTOR_READY: self.on_actor_ready,
            Kind.REQUEST: self.on_request,
            Kind.BYE: self.on_bye,
            Kind.LEASE_REQUEST: self.on_lease_request,
            Kind.LEASE_RETURN: self.on_lease_return,
            Kind.LEASE_CANCEL: self.on_lease_cancel,
            Kind.STATS: self.on_stats,
            Kind.FORWARD: self.on_forward,
            Kind.SIGNAL: self.on_signal,
        }

    # ------------------------------------------------------------------ run
    def start_zygote(self, worker_main) -> None:
        """Fork the zygote; must run before any ZeroMQ context exists."""
        self.zygote = zygote.start(worker_main, self.remove_segments)

    def remove_segments(self) -> None:
        for seg in cfg.shm_dir().glob(f"{cfg.SHM_PREFIX}{self.cluster_id}-{self.node_id}-*"):
            seg.unlink(missing_ok=True)

    def serve(self, parent_fd: int | None = None) -> None:
        from .gateway import Gateway

        self.ctx = zmq.Context()
        self.server = transport.Server(self.address, self.signer)
        curve = self.conf.get("curve")
        self.gateway = gateway = Gateway(
            self, self.ctx, self.conf.get("host", "127.0.0.1"), int(self.conf.get("gateway_port", 0)), curve
        )
        self.gateway_address = f"tcp://{self.ip}:{gateway.port}"
        self.head = None
        if self.conf.get("head_address"):
            self.head = protocol.tune(self.ctx.socket(zmq.DEALER))
            if curve:
                protocol.curve_client(self.head, curve["public"])
            self.head.connect(f"tcp://{self.conf['head_address']}")
            self.head_out.append(
                (
                    Kind.NODE_HELLO,
                    self.node_id,
                    self.address,
                    self.total_resources,
                    os.getpid(),
                    self.hostname,
                    self.ip,
                    self.gateway_address,
                )
            )
        self.last_head = time.monotonic()
        self.poller = poller = zmq.Poller()
        listener = self.server.listener.fileno()
        poller.register(listener, zmq.POLLIN)
        poller.register(gateway.router, zmq.POLLIN)
        if self.head is not None:
            poller.register(self.head, zmq.POLLIN)
        poller.register(self.zygote.event_fd, zmq.POLLIN)
        if parent_fd is not None:
            poller.register(parent_fd, zmq.POLLIN)
        for _ in range(self.pool_size):
            self.spawn_worker()
        conns = self.server.conns
        next_tick = time.monotonic()
        next_collect = next_tick
        try:
            while self.running_flag:
                self.flush()
                if gateway.serving:
                    gateway.pump()  # a chunk per transfer per turn
                timeout = max(
                    0,
                    (min(next_tick, next_collect if self.table.doomed else next_tick) - time.monotonic())
                    * 1000,
                )
                if gateway.serving:
                    timeout = 0
                for fd, ev in poller.poll(timeout):
                    conn = conns.get(fd) if isinstance(fd, int) else None
                    if conn is not None:
                        if ev & zmq.POLLOUT and self.server.flush(conn):
                            poller.modify(fd, zmq.POLLIN)
                            conn.want_write = False
                        if ev & (zmq.POLLIN | zmq.POLLERR):
                            self.read(conn)
                    elif fd == listener:
                        for new in self.server.accept():
                            poller.register(new.fd, zmq.POLLIN)
                    elif fd is gateway.router:
                        gateway.read()
                    elif isinstance(fd, int) and fd in gateway.by_fd:
                        gateway.on_link_event(fd, ev)
                    elif fd is self.head:
                        for _, batch in protocol.recv_batches(self.head, self.signer, False):
                            self.last_head = time.monotonic()
                            for msg in batch:
                                self.on_head_message(msg)
                    elif fd == self.zygote.event_fd:
                        for event in self.zygote.events():
                            self.on_zygote_event(*event)
                    elif fd == parent_fd:
                        if not os.read(parent_fd, 4096):
                            log.info("parent is gone; shutting down")
                            self.running_flag = False
                now = time.monotonic()
                if self.table.doomed and now >= next_collect:
                    next_collect = now + 0.25
                    if self.table.collect() and self.foreign:
                        self.release_foreign()
                if self.table.freed_actors:
                    freed, self.table.freed_actors = self.table.freed_actors, []
                    for actor_id in freed:
                        self.terminate_actor(actor_id)
                if self.dirty:
                    self.dirty = False
                    self.schedule()
                if now >= next_tick:
                    next_tick = now + (1.0 if self.reported else 0.02)
                    self.tick()
        finally:
            self.shutdown()

    def read(self, conn: transport.Conn) -> None:
        batches = self.server.read(conn)
        if batches is None:
            self.poller.unregister(conn.fd)
            if conn.identity:
                if self.links.get(conn.identity) is conn:
                    del self.links[conn.identity]
                self.drop_process(conn.identity)
            return
        for batch in batches:
            for msg in batch:
                ident = conn.identity
                if not ident:
                    if msg[0] != Kind.HELLO:
                        continue
                    ident = conn.identity = msg[-1]
                    self.links[ident] = conn
                handler = self.handlers.get(msg[0])
                if handler is None:
                    log.warning("unknown message kind %r from %r", msg[0], ident)
                    continue
                try:
                    handler(ident, msg)
                except Exception:
                    log.exception("error handling %s from %r", protocol.KIND_NAMES.get(msg[0], msg[0]), ident)

    def flush(self) -> None:
        if self.out:
            out, self.out = self.out, {}
            server = self.server
            for ident, batch in out.items():
                conn = self.links.get(ident)
                if conn is None:
                    if ident in self.direct:
                        self.gateway.send_direct(ident, batch)
                        continue
                    where = self.remote.get(ident)
                    if where is not None:  # a client of another node, or that node itself
                        dest = b"" if ident[:1] == b"n" else ident
                        self.gateway.send(where, (Kind.DELIVER, dest, self.node_id, b"", batch))
                    continue
                server.queue(conn, batch)
                if not conn.want_write and not server.flush(conn):
                    conn.want_write = True
                    self.poller.modify(conn.fd, zmq.POLLIN | zmq.POLLOUT)
        if self.head_out and self.head is not None:
            batch, self.head_out = self.head_out, []
            protocol.send(self.head, self.signer, batch)
        self.gateway.flush()

    def emit(self, ident: bytes, msg: tuple) -> None:
        batch = self.out.get(ident)
        if batch is None:
            self.out[ident] = [msg]
        else:
            batch.append(msg)

    def shutdown(self) -> None:
        self.running_flag = False
        for w in self.workers.values():
            if w.pid:
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.zygote.close()  # the zygote sees EOF, reaps the workers, removes segments
        self.table.clear()
        self.remove_segments()
        try:
            os.waitpid(self.zygote.pid, 0)
        except ChildProcessError:
            pass
        self.server.close()
        if self.gateway is not None:
            self.gateway.close()
        if self.head is not None:
            if not self.head_said_exit:  # leaving on our own: tell the head now
                protocol.send(self.head, self.signer, [(Kind.NODE_LEAVE, self.node_id)])
            self.head.close(linger=0 if self.head_said_exit else 1000)
        self.ctx.term()

    def tick(self) -> None:
        """Once a second: idle workers, spilling, report to the head."""
        now = time.monotonic()
        plain = [w for w in self.workers.values() if not w.actor_id]
        extra = len(plain) - self.pool_size
        for w in list(self.idle):
            if extra <= 0:
                break
            if now - w.idle_since > 10.0:
                self.idle.remove(w)
                self.emit(w.identity, (Kind.EXIT,))
                extra -= 1
        if self.table.spill_if_needed():
            log.info("spilled objects; %d bytes in shared memory", self.table.shm_used)
        self.gateway.tick()
        for ident, seen in list(self.direct.items()):
            if now - seen > DIRECT_TIMEOUT:  # its machine or process died without a BYE
                log.warning("driver %r went silent; dropping it", ident)
                del self.direct[ident]
                self.drop_process(ident)
            else:
                self.emit(ident, (Kind.ALIVE,))  # so it notices if we die
        if self.head is not None and self.conf.get("standalone"):
            silent = time.monotonic() - self.last_head
            if silent > HEAD_SILENCE:
                log.error("no word from the head for %.0f s; this node stops", silent)
                self.running_flag = False
        if self.head is not None:
            starting = any(w.state == STARTING for w in self.workers.values())
            # The first report waits for the initial workers: it is what init() shows.
            if self.reported or not starting or time.time() - self.started_at > 2.0:
                self.reported = True
                self.head_out.append((Kind.NODE_REPORT, self.node_id, self.report()))

    # ------------------------------------------------------------- workers
    def spawn_worker(self) -> Worker:
        w = Worker(
            self.next_wid, cfg.worker_socket(self.cluster_id, self.node_id, self.next_wid), self.node_id
        )
        self.next_wid += 1
        self.workers[w.wid] = w
        self.by_identity[w.identity] = w
        self.zygote.spawn(w.wid)
        return w

    def on_zygote_event(self, kind: str, wid: int, pid: int, status: int) -> None:
        if kind == "started":
            w = self.workers.get(wid)
            if w is not None:
                w.pid = pid
        elif kind == "exit":
            self.on_worker_exit(wid, pid, status)
        elif kind == "zygote-exit":
            log.error("the zygote exited; the node cannot start workers any more")
            self.running_flag = False

    def on_worker_exit(self, wid: int, pid: int, status: int) -> None:
        w = self.workers.pop(wid, None)
        if w is None:
            return
        self.by_identity.pop(w.identity, None)
        if w in self.idle:
            self.idle.remove(w)
        try:
            os.unlink(w.path)
        except OSError:
            pass
        w.pid = pid
        plain = sum(1 for x in self.workers.values() if not x.actor_id)
        self.execute(placement.worker_death(w, status, self.actors, plain, self.pool_size, self.running_flag))
        self.dirty = True

    def give_gpus(self, w: Worker, demand: dict[str, int]) -> None:
        gpus = demand.get("GPU", 0)
        if gpus and self.free_gpus:
            n = max(1, gpus // 10_000)
            w.gpu_ids, self.free_gpus = self.free_gpus[:n], self.free_gpus[n:]

    def take_gpus(self, w: Worker) -> None:
        if w.gpu_ids:
            self.free_gpus.extend(w.gpu_ids)
            w.gpu_ids = []

    # --------------------------------------------------------- scheduling
    def schedule(self) -> None:
        """Start what fits on idle workers; then fork workers or revoke leases (`placement`)."""
        sched = self.scheduler
        for action in placement.start(sched, len(self.idle)):
            w = self.idle.popleft()
            if isinstance(action.item, LeaseRequest):
                self.grant(w, action.item)
            else:
                self.start_actor(w, action.item)
        if not sched.queued:
            return
        starting = sum(1 for w in self.workers.values() if w.state == STARTING)
        for action in placement.unblock(
            sched, len(self.idle), starting, len(self.workers), self.max_workers, self.leases.values()
        ):
            if isinstance(action, placement.SpawnWorkers):
                for _ in range(action.count):
                    self.spawn_worker()
            else:
                self.leases[action.lease_id].revoked = True
                self.emit(action.owner, (Kind.LEASE_REVOKE, action.lease_id))

    def grant(self, w: Worker, req: LeaseRequest) -> None:
        lease = Lease(self.next_lease, req, w)
        self.next_lease += 1
        self.leases[lease.lease_id] = lease
        self.leases_granted += 1
        w.state = LEASED
        w.lease = lease
        self.give_gpus(w, req.demand)
        self.emit(
            req.owner,
            (Kind.LEASE_GRANT, req.request_id, lease.lease_id, w.identity, w.path, w.pid, req.shape),
        )

    def end_lease(self, lease: Lease) -> None:
        if self.leases.pop(lease.lease_id, None) is None:
            return
        w = lease.worker
        demand = lease.demand
        if w.blocked:
            demand = {k: v for k, v in demand.items() if k != "CPU"}
            w.blocked = False
        self.scheduler.release(demand)
        self.take_gpus(w)
        w.lease = None
        if w.state == LEASED and w.wid in self.workers:
            w.state = IDLE
            w.idle_since = time.monotonic()
            self.idle.append(w)
        self.dirty = True

    def start_actor(self, w: Worker, create: Creation) -> None:
        spec = create.spec
        actor = self.actors[spec.actor_id]
        w.state = ACTOR
        w.actor_id = spec.actor_id
        actor.worker = w
        actor.demand = create.demand
        self.give_gpus(w, create.demand)
        plain = sum(1 for x in self.workers.values() if not x.actor_id)
        if plain < self.pool_size:
            self.spawn_worker()
        fn = self.functions.get(spec.function_id)
        if fn is not None and spec.function_id not in w.known:
            w.known.add(spec.function_id)
            self.emit(w.identity, (Kind.FUNC, spec.function_id, fn[0], fn[1]))
        self.emit(w.identity, (Kind.EXECUTE, spec, self.resolve(spec), w.gpu_ids))

    def resolve(self, spec: TaskSpec) -> dict:
        resolved = {}
        entries = self.table.entries
        for dep in spec.deps:
            e = entries.get(dep)
            if e is not None and e.ready:
                e.last_used = time.monotonic()
                resolved[dep] = (e.is_error, e.value)
            else:
                resolved[dep] = (True, _err(ObjectLostError(f"object {dep.hex()} is gone")))
        return resolved

    def enqueue(self, key: bytes, shape: tuple, item, owner: bytes, name: str, ctx: Any) -> None:
        if not self.scheduler.add(key, shape, item):
            self.warn_infeasible(owner, name, shape, ctx)
        self.dirty = True

    def warn_infeasible(self, owner: bytes, name: str, shape: tuple, ctx: Any) -> None:
        if (owner, shape) in self.warned_infeasible or owner in self.remote:
            return
        self.warned_infeasible.add((owner, shape))
        demand = dict(shape)
        have = {k: v for k, v in self.total_resources.items() if k in demand or k == "CPU"}
        text = (
            f"Warning: {name} needs {demand}, but no node of this cluster has that much "
            f"(this node has {have}; {len(self.cluster.view) or 1} node(s) in all). It stays pending until "
            "a node with those resources joins; `nbcluster status` lists it as infeasible.\n"
        )
        self.emit(owner, (Kind.LOG, owner, ctx, 2, text, "runtime"))

    # ------------------------------------------------------------- leases
    def on_lease_request(self, ident: bytes, msg: tuple) -> None:
        _, request_id, shape, name = msg
        req = LeaseRequest(ident, request_id, shape, name)
        # Spillback (as Ray's raylet): our own clients ask another node that
        # has room; requests relayed from other nodes are never sent on.
        target = self.cluster.route(self.scheduler, req.demand, may_spill=ident not in self.remote)
        if target:
            self.emit(ident, (Kind.LEASE_SPILL, request_id, shape, name, target))
            return
        self.enqueue(b"L%d" % request_id + ident, shape, req, ident, f"task {name}()", None)

    def on_lease_return(self, ident: bytes, msg: tuple) -> None:
        lease = self.leases.get(msg[1])
        if lease is not None and lease.owner == ident:
            self.end_lease(lease)

    def on_lease_cancel(self, ident: bytes, msg: tuple) -> None:
        shape = msg[1]
        sched = self.scheduler
        for q in sched.queues.values():
            for entry in list(q):
                item = entry[3]
                if isinstance(item, LeaseRequest) and item.owner == ident and item.shape == shape:
                    q.remove(entry)
                    sched.queued -= 1
        for key, (_, item) in list(sched.infeasible.items()):
            if isinstance(item, LeaseRequest) and item.owner == ident and item.shape == shape:
                del sched.infeasible[key]
        self.warned_infeasible.discard((ident, shape))

    def on_stats(self, ident: bytes, msg: tuple) -> None:
        proc = self.procs.get(ident)
        if proc is not None:
            proc.stats = (msg[1], msg[2])

    # ------------------------------------------------------------ handlers
    def on_hello(self, ident: bytes, msg: tuple) -> None:
        _, role, pid, job_id, worker_id, sys_path, _identity = msg
        if role == "worker":
            w = self.workers.get(worker_id)
            if w is None:
                self.emit(ident, (Kind.EXIT,))
                return
            w.pid = pid
            w.state = IDLE
            w.idle_since = time.monotonic()
            self.idle.append(w)
            self.dirty = True
        self.procs[ident] = Proc(ident, role, pid, job_id, sys_path)
        self.emit(
            ident,
            (Kind.WELCOME, self.node_id, {"ip": self.ip, "hostname": self.hostname, "pid": os.getpid()}),
        )

    def on_register_func(self, ident: bytes, msg: tuple) -> None:
        _, function_id, blob, sys_path = msg
        self.functions[function_id] = (blob, sys_path)
        for waiter in self.function_waiters.pop(function_id, ()):
            self.emit(waiter, (Kind.FUNC, function_id, blob, sys_path))

    def on_func_fetch(self, ident: bytes, msg: tuple) -> None:
        fn = self.functions.get(msg[1])
        if fn is None:  # its registration is on its way from the owner
            self.function_waiters.setdefault(msg[1], []).append(ident)
            return
        self.emit(ident, (Kind.FUNC, msg[1], fn[0], fn[1]))

    def on_submit(self, ident: bytes, msg: tuple) -> None:
        """An actor's creation (tasks and actor calls go to workers directly)."""
        spec: TaskSpec = msg[1]
        if spec.kind != ACTOR_CREATE:
            log.warning("ignored a SUBMIT of kind %s from %r", spec.kind, ident)
            return
        create = Creation(spec)
        table = self.table
        if spec.deps:
            table.pin(spec.deps)
        if spec.contained:
            table.pin(spec.contained)
        actor = self.actors[spec.actor_id] = Actor(create)
        opts = spec.options or {}
        if not actor.detached:
            table.mark_actor(spec.actor_id, spec.owner)
        if opts.get("name"):
            self.head_out.append(
                (
                    Kind.ACTOR_EVENT,
                    spec.actor_id,
                    opts["name"],
                    opts.get("namespace", ""),
                    PENDING,
                    self.node_id,
                    None,
                )
            )
        missing = {d for d in spec.deps if not self.is_ready(d)}
        if missing:
            create.waiting = len(missing)
            for dep in missing:
                self.waiting_deps.setdefault(dep, []).append(create)
                self.want_foreign(dep, subscribe=True)
        else:
            self.creation_ready(create)

    def is_ready(self, object_id: bytes) -> bool:
        e = self.table.entries.get(object_id)
        return e is not None and e.ready

    def creation_ready(self, create: Creation) -> None:
        spec = create.spec
        actor = self.actors.get(spec.actor_id)
        if actor is None or actor.state == DEAD:
            return
        for dep in spec.deps:
            e = self.table.entries.get(dep)
            if e is not None and e.is_error:
                actor.restarts_left = 0
                self.actor_died(actor, "an argument of its constructor failed:\n" + _describe_error(e.value))
                return
        self.place(actor)

    def place(self, actor: Actor) -> None:
        """Start an actor here, or on another node with room when this one has none."""
        create = actor.create
        spec = create.spec
        target = self.cluster.route(self.scheduler, create.demand, may_spill=not actor.home)
        if target:
            self.place_on(actor, target)
            return
        self.enqueue(spec.task_id, spec.resources, create, spec.owner, f"actor {actor.class_name}", spec.ctx)

    def place_on(self, actor: Actor, target: str) -> None:
        """Have node `target` host this actor; this node keeps its record and restarts it."""
        spec = actor.create.spec
        actor.remote = target
        opts = dict(spec.options or {}, name=None, lifetime="detached", max_restarts=0)
        opts["_home"] = self.node_id
        batch: list = [(Kind.SUBMIT, spec._replace(options=opts))]
        fn = self.functions.get(spec.function_id)
        if fn is not None:  # the class travels with its creation
            batch.insert(0, (Kind.REGISTER_FUNC, spec.function_id, fn[0], fn[1]))
        self.gateway.send(target, (Kind.RELAY, self.node_id, b"", b"", batch))

    def on_put(self, ident: bytes, msg: tuple) -> None:
        _, object_id, is_error, value, size, contained = msg
        self.table.hold(object_id, ident)
        self.object_ready(object_id, is_error, value, size, contained)

    def object_ready(self, object_id, is_error, value, size, contained) -> None:
        e = self.table.set_ready(object_id, is_error, value, size, contained)
        if e is None:
            return
        if e.subscribers:
            for sub in e.subscribers:
                self.emit(sub, (Kind.RESULT, object_id, is_error, value, size))
            e.subscribers.clear()
        waiting = self.waiting_deps.pop(object_id, None)
        if waiting:
            for create in waiting:
                create.waiting -= 1
                if create.waiting == 0:
                    self.creation_ready(create)
        if isinstance(value, str) and self.table.shm_used > self.table.capacity:
            self.table.spill_if_needed()

    def on_hold(self, ident: bytes, msg: tuple) -> None:
        self.table.hold(msg[1], ident)
        self.want_foreign(msg[1], subscribe=False)

    def on_release(self, ident: bytes, msg: tuple) -> None:
        self.table.release(msg[1], ident)

    def on_subscribe(self, ident: bytes, msg: tuple) -> None:
        entries = self.table.entries
        for object_id in msg[1]:
            e = entries.get(object_id)
            if e is None:
                # Not (yet) known here: its owner promotes it when it passes the ref on.
                e = self.table.placeholder(object_id)
            if e.ready:
                e.last_used = time.monotonic()
                self.emit(ident, (Kind.RESULT, object_id, e.is_error, e.value, e.size))
            else:
                e.subscribers.add(ident)
                self.want_foreign(object_id, subscribe=True)

    def creation_cleanup(self, create: Creation) -> None:
        spec = create.spec
        if spec.deps:
            self.table.unpin(spec.deps)
        if spec.contained:
            self.table.unpin(spec.contained)
        if isinstance(spec.args, str):
            self.table.discard_value(spec.args)

    def on_blocked(self, ident: bytes, msg: tuple) -> None:
        w = self.by_identity.get(ident)
        if w is not None and w.lease is not None and not w.blocked:
            w.blocked = True
            cpu = w.lease.demand.get("CPU", 0)
            if cpu:
                self.scheduler.release({"CPU": cpu})
                self.dirty = True

    def on_unblocked(self, ident: bytes, msg: tuple) -> None:
        w = self.by_identity.get(ident)
        if w is not None and w.lease is not None and w.blocked:
            w.blocked = False
            cpu = w.lease.demand.get("CPU", 0)
            if cpu:
                self.scheduler.acquire({"CPU": cpu})

    def on_log(self, ident: bytes, msg: tuple) -> None:
        self.emit(msg[1], msg)

    def on_request(self, ident: bytes, msg: tuple) -> None:
        _, req_id, op, args = msg
        try:
            if op == "relay":  # a worker's control request for the head
                self.relay_id += 1
                self.relayed[self.relay_id] = (ident, req_id)
                self.head_out.append((Kind.REQUEST, self.relay_id, args[0], args[1]))
                return
            if op == "actor_location":
                self.tell_location(ident, args[0])
                return
            if op == "report":
                payload = self.report()
            else:
                raise ValueError(f"unknown node request {op!r}")
            self.emit(ident, (Kind.REPLY, req_id, True, payload))
        except Exception as e:
            self.emit(ident, (Kind.REPLY, req_id, False, e))

    def on_bye(self, ident: bytes, msg: tuple) -> None:
        self.direct.pop(ident, None)
        self.drop_process(ident)

    def drop_process(self, ident: bytes) -> None:
        """A driver or worker left: its refs go; its leases, requests and actors too."""
        proc = self.procs.pop(ident, None)
        for node_id in self.relayed_to.pop(ident, ()):
            self.gateway.send(node_id, (Kind.GONE, self.node_id, ident))
        if ident in self.remote:
            self.gateway.drop_client(ident)
        self.table.drop_holder(ident)
        for actor in self.actors.values():
            actor.watchers.discard(ident)
        sched = self.scheduler
        for q in sched.queues.values():
            for entry in list(q):
                if isinstance(entry[3], LeaseRequest) and entry[3].owner == ident:
                    q.remove(entry)
                    sched.queued -= 1
        for key, (_, item) in list(sched.infeasible.items()):
            if (
                getattr(item, "owner", None) == ident
                or getattr(getattr(item, "spec", None), "owner", None) == ident
            ):
                del sched.infeasible[key]
        self.warned_infeasible = {k for k in self.warned_infeasible if k[0] != ident}
        for lease in list(self.leases.values()):
            if lease.owner == ident:
                # Its tasks' results have nowhere to go: stop them now.
                try:
                    os.kill(lease.worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is None or proc.role != "driver":
            return
        for actor in list(self.actors.values()):
            if actor.owner == ident and not actor.detached and actor.state != DEAD:
                self.kill_actor(actor, "its driver exited", restart=False)

    # -------------------------------------------------------------- actors
    def tell_location(self, ident: bytes, actor_id: bytes) -> None:
        actor = self.actors.get(actor_id)
        if actor is None:
            home = protocol.home_of(actor_id)
            cause = "it is unknown to this cluster (killed long ago, or from another cluster)"
            if home != self.node_id and home in self.cluster.view and not self.cluster.alive(home):
                cause = f"the node it belonged to ({home}) died"
            self.emit(ident, (Kind.ACTOR_LOCATION, actor_id, "dead", b"", "", 0, cause, ""))
        elif actor.state == ALIVE and actor.worker is not None:
            w = actor.worker
            self.emit(
                ident, (Kind.ACTOR_LOCATION, actor_id, "alive", w.identity, w.path, w.pid, "", self.node_id)
            )
        elif actor.state == ALIVE and actor.remote and actor.location:
            self.emit(ident, (Kind.ACTOR_LOCATION, actor_id, "alive", *actor.location, "", actor.remote))
        elif actor.state in (DEAD, TERMINATING):
            self.emit(ident, (Kind.ACTOR_LOCATION, actor_id, "dead", b"", "", 0, actor.cause, ""))
        else:
            actor.watchers.add(ident)

    def tell_home(self, actor: Actor) -> None:
        """An actor hosted for another node started or died: its home node decides what next."""
        w = actor.worker
        if actor.state == ALIVE and w is not None:
            msg = (Kind.ACTOR_LOCATION, actor.actor_id, "alive", w.identity, w.path, w.pid, "", self.node_id)
        else:
            msg = (Kind.ACTOR_LOCATION, actor.actor_id, "dead", b"", "", 0, actor.cause, "")
        self.emit(b"n" + actor.home.encode(), msg)

    def tell_watchers(self, actor: Actor) -> None:
        watchers, actor.watchers = actor.watchers, set()
        for ident in watchers:
            self.tell_location(ident, actor.actor_id)

    def on_actor_ready(self, ident: bytes, msg: tuple) -> None:
        _, actor_id, error = msg
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        if error is not None:
            actor.restarts_left = 0
            actor.cause = f"its constructor raised:\n{error}"
            self.kill_actor(actor, actor.cause, restart=False)
            return
        actor.state = ALIVE
        actor.cause = ""
        if actor.home:
            self.tell_home(actor)
        if actor.name:
            self.head_out.append(
                (Kind.ACTOR_EVENT, actor_id, actor.name, actor.namespace, ALIVE, self.node_id, None)
            )
        self.tell_watchers(actor)

    def on_kill_actor(self, ident: bytes, msg: tuple) -> None:
        actor_id, no_restart = msg[1], msg[2]
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        if len(msg) > 3 and msg[3]:  # the home node ends an actor it placed here
            actor.detached = False
            self.terminate_actor(actor_id)
        else:
            self.kill_actor(actor, "it was killed with kill()", restart=not no_restart)

    def kill_actor(self, actor: Actor, cause: str, restart: bool) -> None:
        if not restart:
            actor.restarts_left = 0
        actor.cause = cause
        if actor.remote:
            self.gateway.send(
                actor.remote,
                (Kind.RELAY, self.node_id, b"", b"", [(Kind.KILL_ACTOR, actor.actor_id, True)]),
            )
            return
        w = actor.worker
        if w is not None and w.pid:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif actor.state in (PENDING, RESTARTING):
            self.scheduler.remove(actor.create.spec.task_id)
            self.actor_died(actor, cause)

    def terminate_actor(self, actor_id: bytes) -> None:
        """The last handle is gone: the actor finishes the calls it has, then exits."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.detached or actor.state in (DEAD, TERMINATING):
            return
        actor.cause = "all handles to it went out of scope"
        actor.restarts_left = 0
        if actor.remote:
            actor.state = TERMINATING
            self.gateway.send(
                actor.remote,
                (Kind.RELAY, self.node_id, b"", b"", [(Kind.KILL_ACTOR, actor_id, True, True)]),
            )
            return
        if actor.worker is None:
            self.scheduler.remove(actor.create.spec.task_id)
            self.actor_died(actor, actor.cause)
            return
        actor.state = TERMINATING
        self.emit(actor.worker.identity, (Kind.EXIT,))

    def actor_died(self, actor: Actor, reason: str) -> None:
        w = actor.worker
        actor.worker = None
        if actor.demand:
            self.scheduler.release(actor.demand)
            actor.demand = {}
            self.dirty = True
        if w is not None:
            self.take_gpus(w)
        if not actor.cause:
            actor.cause = reason
        restart, actor.restarts_left = placement.actor_restarts(actor)
        if restart:
            log.info("restarting actor %s: %s", actor.class_name, reason)
            actor.state = RESTARTING
            actor.cause = ""
            self.place(actor)
            return
        actor.state = DEAD
        self.tell_watchers(actor)
        if actor.home:
            self.tell_home(actor)
        if actor.name:
            self.head_out.append(
                (Kind.ACTOR_EVENT, actor.actor_id, actor.name, actor.namespace, DEAD, self.node_id, None)
            )
        self.creation_cleanup(actor.create)

    # ------------------------------------------------------------- cluster
    @property
    def view(self) -> dict[str, dict]:
        """The cluster, from the head: node id -> summary."""
        return self.cluster.view

    def on_view(self, nodes: list[dict]) -> None:
        self.cluster.update(nodes)
        if self.on_joined is not None and self.node_id in self.cluster.view:
            joined, self.on_joined = self.on_joined, None
            joined(self)
        # Work waiting here that another node can take goes there.
        self.execute(self.cluster.rebalance(self.scheduler, self.remote.__contains__, self.actors))

    def on_node_dead(self, node_id: str, reason: str) -> None:
        self.cluster.mark_dead(node_id)
        log.warning("node %s is gone: %s", node_id, reason)
        self.gateway.drop_node(node_id)
        self.execute(placement.node_death(node_id, reason, self.remote, self.actors))

    def execute(self, actions: list[placement.Action]) -> None:
        """Carry out the actions a decision of `placement` returned, in order."""
        for action in actions:
            if isinstance(action, placement.SpillLease):
                req = action.request
                self.emit(req.owner, (Kind.LEASE_SPILL, req.request_id, req.shape, req.name, action.target))
            elif isinstance(action, placement.PlaceActor):
                actor = self.actors[action.actor_id]
                if action.target:
                    self.place_on(actor, action.target)
                else:
                    self.place(actor)
            elif isinstance(action, placement.DropProcess):
                self.remote.pop(action.identity, None)
                self.drop_process(action.identity)
            elif isinstance(action, placement.ActorDied):
                actor = self.actors.get(action.actor_id)
                if actor is not None and actor.state != DEAD:
                    actor.remote, actor.location = "", ()
                    self.actor_died(actor, action.reason)
            elif isinstance(action, placement.KillActor):
                actor = self.actors.get(action.actor_id)
                if actor is not None and actor.state != DEAD:
                    self.kill_actor(actor, action.cause, restart=False)
            elif isinstance(action, placement.EndLease):
                lease = self.leases.get(action.lease_id)
                if lease is not None:
                    self.end_lease(lease)
            elif isinstance(action, placement.SpawnWorkers):
                for _ in range(action.count):
                    self.spawn_worker()
            elif isinstance(action, placement.FailObjects):
                self.fail_foreign(action.node_id, action.reason)
            elif isinstance(action, placement.Broadcast):
                for ident in list(self.links):
                    self.emit(ident, (Kind.NODE_DEAD, action.node_id, action.reason))
            else:
                raise TypeError(f"not an action of this node: {action!r}")

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
            self.gateway.send(home, (Kind.RELAY, self.node_id, b"", b"", batch))

    def fail_foreign(self, node_id: str, reason: str) -> None:
        """Objects kept by a node that is gone: whoever waits for them gets ObjectLostError."""
        lost = _err(
            ObjectLostError(
                f"it was owned by a process of node {node_id}, which is gone ({reason}); "
                "values live with their owner, so re-create it from a process that is still alive"
            )
        )
        for object_id in [o for o in self.foreign if protocol.home_of(o) == node_id]:
            self.foreign.discard(object_id)
            e = self.table.entries.get(object_id)
            if e is not None and not e.ready:
                self.object_ready(object_id, True, lost, len(lost), ())

    def release_foreign(self) -> None:
        """Objects of other nodes nobody here references any more: let go of them there."""
        entries = self.table.entries
        gone = [o for o in self.foreign if o not in entries]
        by_home: dict[str, list] = {}
        for object_id in gone:
            self.foreign.discard(object_id)
            by_home.setdefault(protocol.home_of(object_id), []).append((Kind.RELEASE, object_id))
        for home, batch in by_home.items():
            self.gateway.send(home, (Kind.RELAY, self.node_id, b"", b"", batch))

    def on_peer_message(self, src_node: str, msg: tuple) -> None:
        """A message from another node to this one (answers to what we asked it)."""
        kind = msg[0]
        if kind == Kind.RESULT:
            _, object_id, is_error, value, size = msg[:5]
            e = self.table.entries.get(object_id)
            if e is not None:
                e.subscribers.discard(b"")
            self.object_ready(object_id, is_error, value, size, ())
        elif kind == Kind.ACTOR_LOCATION:
            _, actor_id, state, identity, path, pid, cause, where = msg
            actor = self.actors.get(actor_id)
            if actor is None or actor.remote != src_node:
                return
            if state == "alive":
                actor.state = ALIVE
                actor.location = (identity, path, pid)
                actor.cause = ""
                if actor.name:
                    self.head_out.append(
                        (Kind.ACTOR_EVENT, actor_id, actor.name, actor.namespace, ALIVE, src_node, None)
                    )
                self.tell_watchers(actor)
            else:
                actor.remote, actor.location = "", ()
                self.actor_died(actor, cause)
        elif kind == Kind.LOG:
            self.emit(msg[1], msg)
        else:
            log.warning("unexpected %s from node %s", protocol.KIND_NAMES.get(kind, kind), src_node)

    def on_direct(self, ident: bytes, msg: tuple) -> None:
        """A message from a driver connected to our gateway (its machine has no node)."""
        if msg[0] == Kind.HELLO:
            self.direct[ident] = time.monotonic()
            _, role, pid, job_id, worker_id, sys_path, _identity = msg
            self.procs[ident] = Proc(ident, "driver", pid, job_id, sys_path)
            self.emit(
                ident,
                (Kind.WELCOME, self.node_id, {"ip": self.ip, "hostname": self.hostname, "pid": os.getpid()}),
            )
            return
        if ident not in self.direct:
            return  # it must say HELLO first (or it was dropped as silent)
        self.direct[ident] = time.monotonic()
        handler = self.handlers.get(msg[0])
        if handler is None:
            log.warning("unknown message kind %r from driver %r", msg[0], ident)
            return
        handler(ident, msg)

    def on_forward(self, ident: bytes, msg: tuple) -> None:
        _, node_id, dest, batch = msg
        self.gateway.forward(ident, node_id, dest, batch)

    def on_signal(self, ident: bytes, msg: tuple) -> None:
        """The owner of a task on one of our workers cancels it (it cannot signal across machines)."""
        w = self.by_identity.get(msg[1])
        if w is not None and w.lease is not None and w.lease.owner == ident and w.pid:
            try:
                os.kill(w.pid, msg[2])
            except ProcessLookupError:
                pass

    # ---------------------------------------------------------------- head
    def on_head_message(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == Kind.EXIT:
            log.info("the head asked this node to stop")
            self.head_said_exit = True
            self.running_flag = False
        elif kind == Kind.CLUSTER_VIEW:
            self.on_view(msg[1])
        elif kind == Kind.NODE_DEAD:
            self.on_node_dead(msg[1], msg[2])
        elif kind == Kind.REPLY:
            target = self.relayed.pop(msg[1], None)
            if target is not None:
                self.emit(target[0], (Kind.REPLY, target[1], msg[2], msg[3]))
        elif kind == Kind.REQUEST:
            _, req_id, op, args = msg
            try:
                payload = self.report() if op == "report" else None
                self.head_out.append((Kind.REPLY, req_id, True, payload))
            except Exception as e:
                self.head_out.append((Kind.REPLY, req_id, False, e))

    # -------------------------------------------------------------- status
    def report(self) -> dict[str, Any]:
        """This node's part of the cluster snapshot (see `snapshot.py`)."""
        import psutil

        running: dict[str, int] = {}
        pending: dict[str, int] = {}
        for proc in self.procs.values():
            for target, counts in zip((running, pending), proc.stats, strict=True):
                for name, n in counts.items():
                    target[name] = target.get(name, 0) + n
        for q in self.scheduler.queues.values():
            for entry in q:
                item = entry[3]
                if isinstance(item, Creation):
                    name = item.spec.name
                    pending[name] = pending.get(name, 0) + 1
        infeasible = [
            {
                "name": item.name if isinstance(item, LeaseRequest) else item.spec.name,
                "resources": dict(shape),
            }
            for shape, item in self.scheduler.infeasible.values()
        ]
        mem = psutil.virtual_memory()
        return {
            "node_id": self.node_id,
            "address": self.address,
            "ip": self.ip,
            "hostname": self.hostname,
            "pid": os.getpid(),
            "alive": True,
            "resources_total": dict(self.total_resources),
            "resources_available": from_units(self.scheduler.available),
            "cpu_percent": psutil.cpu_percent(interval=None),
            "memory_total": mem.total,
            "memory_used": mem.total - mem.available,
            "object_store_used": self.table.shm_used,
            "object_store_capacity": self.table.capacity,
            "object_store_spilled": self.table.spilled_bytes,
            "num_objects": len(self.table.entries),
            "workers_busy": sum(1 for w in self.workers.values() if w.state == LEASED),
            "workers_idle": len(self.idle),
            "workers_blocked": sum(1 for w in self.workers.values() if w.blocked),
            "running": running,
            "pending": pending,
            "infeasible": infeasible,
            "tasks_finished": self.leases_granted,
            "gateway": self.gateway_address,
            "transfer_in": self.gateway.bytes_in,
            "transfer_out": self.gateway.bytes_out,
            "actors": [
                {
                    "actor_id": a.actor_id.hex(),
                    "class_name": a.class_name,
                    "name": a.name,
                    "state": a.state,
                    "pid": a.worker.pid if a.worker else 0,
                    "pending_calls": 0,
                }
                for a in self.actors.values()
                if a.state != DEAD
            ],
        }


def _describe_error(value) -> str:
    try:
        return str(pickle.loads(value))
    except Exception:
        return "(unreadable error)"


# ------------------------------------------------------------------ process
def main(conf: dict, parent_fd: int | None = None, on_joined=None) -> None:
    """Run a node daemon in this (freshly forked or started) process."""
    from .. import worker

    _setup_logging(conf, f"node-{conf['node_id']}")
    node = Node(conf)
    node.on_joined = on_joined

    def worker_main(wid: int) -> None:
        worker.main(conf, wid)

    node.start_zygote(worker_main)
    signal.signal(signal.SIGTERM, lambda *_: setattr(node, "running_flag", False))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    node.serve(parent_fd)


def _setup_logging(conf: dict, name: str) -> None:
    logdir = cfg.runtime_dir() / conf["cluster_id"] / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(logdir / f"{name}.log"),
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )


def standalone() -> None:
    """A node that joins a head (``nbcluster start --address``); settings as JSON on stdin.

    Answers one JSON line on stdout once the head has welcomed it, then
    writes only to its log. With ``block`` (the starter waits in the
    foreground) it exits when its stdin closes.
    """
    import json
    import secrets
    import shutil
    import sys

    conf = json.loads(sys.stdin.readline())
    cluster_id = conf["cluster_id"]
    cluster_dir = cfg.runtime_dir() / cluster_id
    own_dir = not cluster_dir.exists()  # False when the head (or another node) runs here too
    (cluster_dir / "logs").mkdir(parents=True, exist_ok=True)
    os.chmod(cluster_dir, 0o700)
    node_id = secrets.token_hex(4)
    conf.update(node_id=node_id, node_address=f"{cluster_dir}/node-{node_id}.sock", standalone=True)
    info = cfg.ConnectionInfo(
        cluster_id=cluster_id,
        head_address=conf["head_address"],
        key=conf["key"],
        node_address=conf["node_address"],
        head_pid=os.getpid(),
        started_at=time.time(),
        curve_public=(conf.get("curve") or {}).get("public", ""),
        curve_secret=(conf.get("curve") or {}).get("secret", ""),
        role="node",
    )
    wrote_info = False

    def joined(node: Node) -> None:
        nonlocal wrote_info
        if not info.path.exists():  # drivers on this machine find the cluster through it
            info.write()
            wrote_info = True
        print(
            json.dumps({"node_id": node_id, "gateway": node.gateway_address, "pid": os.getpid()}), flush=True
        )
        logfd = os.open(
            cluster_dir / "logs" / f"node-{node_id}.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.close(logfd)

    try:
        main(conf, sys.stdin.fileno() if conf.get("block") else None, joined)
    finally:
        if wrote_info:
            info.path.unlink(missing_ok=True)
        shutil.rmtree(cluster_dir / "spill" / node_id, ignore_errors=True)
        if own_dir:
            shutil.rmtree(cluster_dir, ignore_errors=True)
