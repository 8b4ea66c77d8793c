"""The node daemon: one per machine. It lends workers, places actors, and
keeps the machine's object table; it is not on a task's path.

::

    drivers, workers ──Unix socket──▶ Server ──▶ handlers ──▶ Outbox.out[identity] (one signed
                                                               batch per peer per turn)
    head ◀──ZeroMQ/TCP── NODE_HELLO, NODE_REPORT every second (with TASK_EVENTS: the tasks
                         finished since, events.py) and REPORT_SOON after the resources
                         available change, named-actor events
         ──▶ CLUSTER_VIEW every second, NODE_DEAD, EXIT, REJOIN (a restarted head: HELLO again)
    other nodes ◀══ gateway (gateway.py) ══▶ relayed requests of their clients, objects
    zygote pipe ──▶ "started" / "exit" worker events

`Node` owns the sockets and the loop and composes one class per concern,
each owning its state and writing what it sends to the `Outbox`:

    pool.WorkerPool   the workers: spawned, idle, lent; GPUs
    leases.Leases     LEASE_REQUEST / RETURN / CANCEL, BLOCKED / UNBLOCKED, SIGNAL
    actors.Actors     SUBMIT (creations), ACTOR_READY, KILL_ACTOR, where an actor is
    objects.Objects   PUT / HOLD / RELEASE / SUBSCRIBE, objects of other nodes, the store-full mark
    monitor.MemoryMonitor  memory past the threshold: one worker killed, its owner told why
    events.EventTail  the workers' task events (their files), for the head's task stream
    placement         the decisions (start, revoke, spill, restart, deaths), no I/O

Several nodes: a request that does not fit here now is spilled (LEASE_SPILL)
to a node of the view with room; an actor that does not fit is hosted by
another node while this one (its home: the first bytes of its id) keeps
its record, restarts it and answers where it is. Objects of other nodes
that processes here hold or wait for are held at their home node, as one
holder for the whole node.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import zmq

from .. import config as cfg
from ..timeline import folder as events_folder
from ..wire import protocol, transport
from ..wire.direct import address_of
from ..wire.paths import segment_node
from ..wire.protocol import Kind
from . import placement, status, zygote
from .actors import Actors
from .events import EventTail
from .gateway import Gateway
from .leases import Leases
from .monitor import MemoryMonitor
from .object_store import ObjectTable
from .objects import Objects
from .outbox import Outbox
from .placement import ClusterView
from .pool import WorkerPool
from .records import DEAD, LeaseRequest, Proc, Worker
from .scheduler import Scheduler, to_units
from .spares import RETRY_S, Spares

log = logging.getLogger("runtime.node")

HEAD_SILENCE = 30.0  # seconds without the head before a joined (or durable) node gives up
DIRECT_TIMEOUT = 10.0  # seconds a driver without a node may stay silent (it sends every second)
# seconds: a change of the resources available is reported this soon, not at the next tick
# (`available_resources()` right after a task, the status views; at most 10 reports a second)
REPORT_SOON = 0.1


class Node:
    """The node daemon of one machine: its sockets, its loop, and its concerns composed."""

    def __init__(self, conf: dict) -> None:
        self.conf = conf
        self.node_id: str = conf["node_id"]
        self.cluster_id: str = conf["cluster_id"]
        self.address: str = conf["node_address"]
        self.signer = protocol.Signer(bytes.fromhex(conf["key"]))
        self.hostname = socket.gethostname()
        self.ip = conf.get("ip", "127.0.0.1")
        resources = dict(conf["resources"])
        # "node:<id>" pins work to this node (NodeAffinitySchedulingStrategy, placement groups);
        # the scheduler knows it, the reports do not (every node has it, see ClusterView.pick).
        self.affinity = f"node:{self.node_id}"
        self.total_resources = resources
        self.cluster_dir = cfg.runtime_dir() / self.cluster_id
        self.scheduler = Scheduler({**resources, self.affinity: 1.0})
        self.outbox = outbox = Outbox(self.node_id)
        self.cluster = ClusterView(self.node_id)  # the head's view; spillback decisions
        self.remote: dict[bytes, str] = {}  # clients of other nodes (and nodes, b"n"+id) -> node
        self.relayed_to: dict[bytes, set[str]] = {}  # our clients -> nodes they talk to
        self.direct: dict[bytes, float] = {}  # drivers of machines without a node -> last heard
        self.procs: dict[bytes, Proc] = {}
        self.links: dict[bytes, transport.Conn] = {}
        self.functions: dict[bytes, tuple[bytes, list]] = {}
        self.function_waiters: dict[bytes, list[bytes]] = {}
        self.relayed: dict[int, tuple[bytes, int]] = {}  # head requests of our workers
        self.relay_id = 0
        table = ObjectTable(
            conf["object_store_memory"], cfg.shm_dir(), cfg.spill_dir(self.cluster_id, self.node_id)
        )
        prefix = f"{cfg.shm_dir()}/{cfg.SHM_PREFIX}{self.cluster_id}-{self.node_id}-"
        table.spares = Spares(prefix, conf["object_store_memory"])
        self.pool = WorkerPool(self.node_id, self.cluster_id, resources, outbox)
        self.objects = Objects(self.node_id, table, self.cluster, outbox)
        self.objects.full_marker = cfg.store_full_marker(prefix)
        self.leases = Leases(
            self.node_id, self.scheduler, self.pool, self.cluster, self.remote, resources, outbox
        )
        self.actors = Actors(
            self.node_id,
            self.scheduler,
            self.pool,
            self.objects,
            self.cluster,
            self.functions,
            self.leases.enqueue,
            outbox,
        )
        self.gateway: Any = None
        self.running_flag = True
        self.head_said_exit = False
        self.on_joined = None
        self.reported = False
        self.reported_available: dict[str, int] = {}
        self.next_report = 0.0  # no report before this (REPORT_SOON after the last)
        self.started_at = time.time()
        self.monitor = MemoryMonitor(self.node_id, conf, self.pool, outbox, self.flush)
        self.monitor.relieve = table.spares.drop
        self.events = EventTail(events_folder(self.cluster_id), self.node_id)
        self.handlers = {
            Kind.HELLO: self.on_hello,
            Kind.SUBMIT: self.actors.on_submit,
            Kind.PUT: self.objects.on_put,
            Kind.HOLD: self.objects.on_hold,
            Kind.RELEASE: self.objects.on_release,
            Kind.SUBSCRIBE: self.objects.on_subscribe,
            Kind.KILL_ACTOR: self.actors.on_kill,
            Kind.BLOCKED: self.leases.on_blocked,
            Kind.UNBLOCKED: self.leases.on_unblocked,
            Kind.LOG: self.on_log,
            Kind.FUNC_FETCH: self.on_func_fetch,
            Kind.REGISTER_FUNC: self.on_register_func,
            Kind.ACTOR_READY: self.actors.on_ready,
            Kind.REQUEST: self.on_request,
            Kind.BYE: self.on_bye,
            Kind.LEASE_REQUEST: self.leases.on_request,
            Kind.LEASE_RETURN: self.leases.on_return,
            Kind.LEASE_CANCEL: self.leases.on_cancel,
            Kind.STATS: self.on_stats,
            Kind.FORWARD: self.on_forward,
            Kind.SIGNAL: self.leases.on_signal,
            Kind.FETCH: self.on_fetch,
            Kind.TRANSIT: self.on_transit,
        }

    # What the gateway reads of its node (`gateway.GatewayHost`).
    @property
    def view(self) -> dict[str, dict]:
        """The cluster, from the head: node id -> summary."""
        return self.cluster.view

    @property
    def by_identity(self) -> dict[bytes, Worker]:
        return self.pool.by_identity

    def emit(self, ident: bytes, msg: tuple) -> None:
        self.outbox.emit(ident, msg)

    def tell_location(self, ident: bytes, actor_id: bytes) -> None:
        self.actors.tell_location(ident, actor_id)

    # ------------------------------------------------------------------ run
    def start_zygote(self, worker_main: Callable[[int], None]) -> None:
        """Fork the zygote; must run before any ZeroMQ context exists."""
        self.zygote = self.pool.zygote = zygote.start(worker_main, self.remove_segments)

    def remove_segments(self) -> None:
        for seg in cfg.shm_dir().glob(f"{cfg.SHM_PREFIX}{self.cluster_id}-{self.node_id}-*"):
            cfg.remove_shm(seg)  # with the folder of spare segments

    def serve(self, parent_fd: int | None = None) -> None:
        """Open the sockets, fork the pool's workers and run the loop until asked to stop."""
        self.ctx = zmq.Context()
        self.server = transport.Server(self.address, self.signer)
        curve = self.conf.get("curve")
        self.gateway = self.outbox.gateway = gateway = Gateway(
            self, self.ctx, self.conf.get("host", "127.0.0.1"), int(self.conf.get("gateway_port", 0)), curve
        )
        self.gateway_address = f"tcp://{self.ip}:{gateway.port}"
        table = self.objects.table
        table.on_free_segment = gateway.transfers.freed
        table.on_spill_segment = gateway.transfers.spilled
        gateway.transfers.spares = table.spares
        self.head = None
        if self.conf.get("head_address"):
            self.head = protocol.tune(self.ctx.socket(zmq.DEALER))
            # A fixed identity: after a dropped connection the head still reaches us by it.
            self.head.setsockopt(zmq.ROUTING_ID, b"node-" + self.node_id.encode())
            if curve:
                protocol.curve_client(self.head, curve["public"])
            self.head.connect(f"tcp://{self.conf['head_address']}")
            self.say_hello()
        self.last_head = time.monotonic()
        self.poller = poller = zmq.Poller()
        listener = self.server.listener.fileno()
        poller.register(listener, zmq.POLLIN)
        poller.register(gateway.router, zmq.POLLIN)
        poller.register(gateway.written_fd, zmq.POLLIN)
        if self.head is not None:
            poller.register(self.head, zmq.POLLIN)
        poller.register(self.zygote.event_fd, zmq.POLLIN)
        if parent_fd is not None:
            poller.register(parent_fd, zmq.POLLIN)
        for _ in range(self.pool.pool_size):
            self.pool.spawn()
        conns = self.server.conns
        table, outbox = self.objects.table, self.outbox
        next_tick = time.monotonic()
        next_collect = next_tick
        next_retry = next_tick  # quarantined spares (spares.retry)
        spares = table.spares
        next_memory = next_tick if self.monitor.refresh else float("inf")
        try:
            while self.running_flag:
                self.flush()
                if gateway.serving:
                    gateway.pump()  # a chunk per transfer per turn
                due = min(next_tick, next_memory, next_collect if table.doomed else next_tick)
                if spares.quarantined and spares.retry_until > next_retry:
                    due = min(due, next_retry)
                changed = self.reported and self.scheduler.available != self.reported_available
                if changed:
                    due = min(due, self.next_report)
                timeout = protocol.poll_ms(max(0.0, due - time.monotonic()))
                if gateway.serving:
                    timeout = 0
                for fd, ev in poller.poll(timeout):
                    conn = conns.get(fd) if isinstance(fd, int) else None
                    if conn is not None:
                        if ev & protocol.POLLOUT and self.server.flush(conn):
                            poller.modify(fd, zmq.POLLIN)
                            conn.want_write = False
                        if ev & (protocol.POLLIN | protocol.POLLERR):
                            self.read(conn)
                    elif fd == listener:
                        for new in self.server.accept():
                            poller.register(new.fd, zmq.POLLIN)
                    elif fd is gateway.router:
                        gateway.read()
                    elif fd == gateway.written_fd:
                        gateway.on_written()
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
                if table.doomed and now >= next_collect:
                    next_collect = now + 0.25
                    self.objects.collect()
                if spares.quarantined and spares.retry_until > now >= next_retry:
                    next_retry = now + RETRY_S
                    spares.retry(now)
                if table.freed_actors:
                    freed, table.freed_actors = table.freed_actors, []
                    for actor_id in freed:
                        self.actors.terminate(actor_id)
                if outbox.dirty:
                    outbox.dirty = False
                    self.schedule()
                if now >= next_memory:
                    next_memory = now + self.monitor.refresh
                    self.monitor.check()
                if now >= next_tick:
                    next_tick = now + (1.0 if self.reported else 0.02)
                    self.tick()
                elif (
                    self.reported
                    and now >= self.next_report
                    and self.scheduler.available != self.reported_available
                ):
                    self.send_report(now)
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
                    ident = conn.identity = msg[6]
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
        """Write what the turn produced: one batch per process, the head's, the gateway's."""
        outbox = self.outbox
        if outbox.out:
            out, outbox.out = outbox.out, {}
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
        if outbox.head and self.head is not None:
            batch, outbox.head = outbox.head, []
            protocol.send(self.head, self.signer, batch)
        self.gateway.flush()

    def shutdown(self) -> None:
        self.running_flag = False
        self.pool.kill_all()
        self.zygote.close()  # the zygote sees EOF, reaps the workers, removes segments
        self.objects.table.clear()
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
        self.pool.reap_idle(now)
        table = self.objects.table
        table.spares.tick()
        if table.spill_if_needed():
            log.info("spilled objects; %d bytes in shared memory", table.shm_used)
        self.objects.mark_full(table.spill_error)
        self.gateway.tick()
        for ident, seen in list(self.direct.items()):
            if now - seen > DIRECT_TIMEOUT:  # its machine or process died without a BYE
                log.warning("driver %r went silent; dropping it", ident)
                del self.direct[ident]
                self.drop_process(ident)
            else:
                self.emit(ident, (Kind.ALIVE,))  # so it notices if we die
        if self.head is not None and (self.conf.get("standalone") or self.conf.get("survive_head")):
            silent = time.monotonic() - self.last_head
            limit = float(self.conf.get("head_silence") or HEAD_SILENCE)
            if silent > limit:
                log.error("no word from the head for %.0f s (limit %g s); this node stops", silent, limit)
                self.running_flag = False
        if self.head is not None:
            starting = self.pool.starting() > 0
            # The first report waits for the initial workers: it is what init() shows.
            if self.reported or not starting or time.time() - self.started_at > 2.0:
                self.reported = True
                self.send_report(now)
                finished = self.events.take()
                if finished:
                    self.outbox.to_head((Kind.TASK_EVENTS, self.node_id, finished))

    # ------------------------------------------------------------- workers
    def on_zygote_event(self, kind: str, wid: int, pid: int, status: int) -> None:
        if kind == "started":
            self.pool.started(wid, pid)
        elif kind == "exit":
            self.on_worker_exit(wid, pid, status)
        elif kind == "zygote-exit":
            log.error("the zygote exited; the node cannot start workers any more")
            self.running_flag = False

    def on_worker_exit(self, wid: int, pid: int, status: int) -> None:
        w = self.pool.remove(wid, pid)
        cause = self.monitor.cause_of(pid)
        if w is None:
            return
        actions = placement.worker_death(
            w, status, self.actors.actors, self.pool.plain(), self.pool.pool_size, self.running_flag, cause
        )
        self.execute(actions)
        self.outbox.reschedule()

    def schedule(self) -> None:
        """Start what fits on idle workers; then fork workers or revoke leases (`placement`)."""
        sched, pool = self.scheduler, self.pool
        starts = placement.start(sched, len(pool.idle))
        for action, more in zip(starts, placement.more_coming(starts), strict=True):
            w = pool.idle.popleft()
            if isinstance(action.item, LeaseRequest):
                self.leases.grant(w, action.item, more)
            else:
                self.actors.start(w, action.item)
        if not sched.queued:
            return
        for action in placement.unblock(
            sched,
            len(pool.idle),
            pool.starting(),
            len(pool.workers),
            pool.max_workers,
            self.leases.leases.values(),
        ):
            if isinstance(action, placement.SpawnWorkers):
                for _ in range(action.count):
                    pool.spawn()
            else:
                self.leases.revoke(action.lease_id, action.owner)

    # ------------------------------------------------------------ processes
    def on_hello(self, ident: bytes, msg: tuple) -> None:
        _, role, pid, job_id, worker_id, sys_path, _identity, port, *sealed = msg
        direct = address_of(self.ip, port, sealed[0] if sealed else b"") if port else ""
        if role == "worker" and not self.pool.hello(worker_id, pid, direct):
            self.emit(ident, (Kind.EXIT,))
            return
        self.procs[ident] = Proc(ident, role, pid, job_id, sys_path)
        self.emit(
            ident,
            (Kind.WELCOME, self.node_id, {"ip": self.ip, "hostname": self.hostname, "pid": os.getpid()}),
        )

    def on_stats(self, ident: bytes, msg: tuple) -> None:
        proc = self.procs.get(ident)
        if proc is not None:
            proc.stats = (msg[1], msg[2])

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

    def on_fetch(self, ident: bytes, msg: tuple) -> None:
        """A process got, over a direct link, values in other nodes' segments: copy them here."""
        _, req_id, wanted = msg
        mapping: dict[str, str | None] = {}
        paths = {path: move for path, move in wanted if segment_node(path) not in ("", self.node_id)}
        if not paths:
            self.emit(ident, (Kind.FETCHED, req_id, mapping))
            return

        def done(path: str, local: str | None) -> None:
            mapping[path] = local
            if len(mapping) == len(paths):
                self.emit(ident, (Kind.FETCHED, req_id, mapping))

        for path, move in paths.items():
            self.gateway.transfers.fetch(path, bool(move), lambda local, p=path: done(p, local))

    def on_transit(self, ident: bytes, msg: tuple) -> None:
        """A worker sent results over a direct link: keep them until their owner's node moves them."""
        own = [p for p in msg[1] if isinstance(p, str) and segment_node(p) == self.node_id]
        self.gateway.transfers.note_transit(own)

    def on_log(self, ident: bytes, msg: tuple) -> None:
        self.emit(msg[1], msg)

    def on_request(self, ident: bytes, msg: tuple) -> None:
        _, req_id, op, args = msg
        try:
            if op == "relay":  # a worker's control request for the head
                self.relay_id += 1
                self.relayed[self.relay_id] = (ident, req_id)
                self.outbox.to_head((Kind.REQUEST, self.relay_id, args[0], args[1]))
                return
            if op == "actor_location":
                self.actors.tell_location(ident, args[0], args[1] if len(args) > 1 else 0)
                return
            if op == "report":
                payload = self.report()
            elif op in ("add_resources", "remove_resources"):  # placement group bundles
                payload = self.change_resources(args[0], grow=op == "add_resources")
            else:
                raise ValueError(f"unknown node request {op!r}")
            self.emit(ident, (Kind.REPLY, req_id, True, payload))
        except Exception as e:
            self.emit(ident, (Kind.REPLY, req_id, False, e))

    def change_resources(self, extra: dict[str, float], grow: bool) -> None:
        """Add (or take away) resources of this node: a placement group's renamed bundle resources."""
        if grow:
            self.scheduler.grow(extra)
        sched = self.scheduler
        for k, v in extra.items():
            left = self.total_resources.get(k, 0.0) + (v if grow else -v)
            if left > 1e-9:
                self.total_resources[k] = left
            else:
                self.total_resources.pop(k, None)
            if not grow:
                units = to_units({k: v}).get(k, 0)
                sched.total[k] = sched.total.get(k, 0) - units
                sched.available[k] = sched.available.get(k, 0) - units
                if sched.total[k] <= 0:
                    sched.total.pop(k, None)
                    sched.available.pop(k, None)
        self.schedule()

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
        self.objects.table.drop_holder(ident)
        self.leases.owner_gone(ident)
        self.actors.process_gone(ident, was_driver=proc is not None and proc.role == "driver")

    # -------------------------------------------------------------- cluster
    def on_view(self, nodes: list[dict]) -> None:
        self.cluster.update(nodes)
        if self.on_joined is not None and self.node_id in self.cluster.view:
            joined, self.on_joined = self.on_joined, None
            joined(self)
        # Work waiting here that another node can take goes there.
        self.execute(self.cluster.rebalance(self.scheduler, self.remote.__contains__, self.actors.actors))

    def on_node_dead(self, node_id: str, reason: str) -> None:
        self.cluster.mark_dead(node_id)
        log.warning("node %s is gone: %s", node_id, reason)
        self.gateway.drop_node(node_id)
        self.execute(placement.node_death(node_id, reason, self.remote, self.actors.actors))

    def execute(self, actions: list[placement.Action]) -> None:
        """Carry out the actions a decision of `placement` returned, in order."""
        actors = self.actors
        for action in actions:
            if isinstance(action, placement.SpillLease):
                req = action.request
                self.emit(req.owner, (Kind.LEASE_SPILL, req.request_id, req.shape, req.name, action.target))
            elif isinstance(action, placement.PlaceActor):
                actor = actors.actors[action.actor_id]
                if action.target:
                    actors.place_on(actor, action.target)
                else:
                    actors.place(actor)
            elif isinstance(action, placement.DropProcess):
                self.remote.pop(action.identity, None)
                self.drop_process(action.identity)
            elif isinstance(action, placement.ActorDied):
                actor = actors.get(action.actor_id)
                if actor is not None and actor.state != DEAD:
                    actor.remote, actor.location = "", ()
                    actors.died(actor, action.reason)
            elif isinstance(action, placement.KillActor):
                actor = actors.get(action.actor_id)
                if actor is not None and actor.state != DEAD:
                    actors.kill(actor, action.cause, restart=False)
            elif isinstance(action, placement.EndLease):
                lease = self.leases.leases.get(action.lease_id)
                if lease is not None:
                    self.leases.end(lease)
            elif isinstance(action, placement.SpawnWorkers):
                for _ in range(action.count):
                    self.pool.spawn()
            elif isinstance(action, placement.FailObjects):
                self.objects.fail_foreign(action.node_id, action.reason)
            elif isinstance(action, placement.Broadcast):
                for ident in list(self.links):
                    self.emit(ident, (Kind.NODE_DEAD, action.node_id, action.reason))
            else:
                raise TypeError(f"not an action of this node: {action!r}")

    def on_peer_message(self, src_node: str, msg: tuple) -> None:
        """A message from another node to this one (answers to what we asked it)."""
        kind = msg[0]
        if kind == Kind.RESULT:
            self.objects.on_result(msg)
        elif kind == Kind.ACTOR_LOCATION:
            self.actors.on_location(src_node, msg)
        elif kind == Kind.LOG:
            self.emit(msg[1], msg)
        else:
            log.warning("unexpected %s from node %s", protocol.KIND_NAMES.get(kind, kind), src_node)

    def on_direct(self, ident: bytes, msg: tuple) -> None:
        """A message from a driver connected to our gateway (its machine has no node)."""
        if msg[0] == Kind.HELLO:
            self.direct[ident] = time.monotonic()
            _, role, pid, job_id, worker_id, sys_path, _identity, *_ = msg  # then its port and key: none
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

    # ---------------------------------------------------------------- head
    def say_hello(self) -> None:
        """Tell the head who we are: at start, and when a restarted head does not know us."""
        self.outbox.to_head(
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

    def on_head_message(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == Kind.REJOIN:
            log.info("the head does not know this node (it restarted): saying hello again")
            self.say_hello()
        elif kind == Kind.EXIT:
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
                self.outbox.to_head((Kind.REPLY, req_id, True, payload))
            except Exception as e:
                self.outbox.to_head((Kind.REPLY, req_id, False, e))

    # -------------------------------------------------------------- status
    def send_report(self, now: float) -> None:
        self.outbox.to_head((Kind.NODE_REPORT, self.node_id, self.report()))
        self.reported_available = dict(self.scheduler.available)
        self.next_report = now + REPORT_SOON

    def report(self) -> dict[str, Any]:
        """This node's part of the cluster snapshot (see `snapshot.py`)."""
        return status.report(self)
