"""The node daemon: one per machine; it owns the workers, the local resources
and the object table, and runs every task and actor of its machine.

::

    drivers, workers ──DEALER──▶ ROUTER (ipc://…/node.sock) ──▶ handlers ──▶ out[identity]
                                                                  │            (one signed
    head ◀──DEALER── NODE_HELLO / NODE_REPORT every second        │             batch per peer
    zygote pipe ──▶ "started"/"exit" worker events ───────────────┘             per loop turn)

    SUBMIT ─▶ deps ready? ─no─▶ dep_waiters[object] ─(object ready)─┐
                │yes                                               │
                ▼                                                  ▼
          Scheduler.add ─▶ pop_runnable (resources) ─▶ idle worker: EXECUTE
                                                         (no idle worker: zygote spawn)
          DONE ─▶ ObjectTable.set_ready ─▶ RESULT to owner + subscribers,
                  resources released, worker idle, schedule again

An actor call skips the scheduler: it is queued on its actor, in arrival
order, and forwarded to the actor's worker when its arguments exist. A
worker that blocks in `get` lends its CPU (BLOCKED/UNBLOCKED) so nested
tasks cannot deadlock the node.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import time
from collections import Counter, deque
from typing import Any

import zmq

from . import config as cfg
from . import protocol, transport, zygote
from .exceptions import (
    ActorDiedError,
    ObjectLostError,
    TaskCancelledError,
    WorkerCrashedError,
)
from .object_store import ObjectTable
from .protocol import ACTOR_CALL, ACTOR_CREATE, Kind, TaskSpec
from .scheduler import Scheduler, from_units, to_units

log = logging.getLogger("runtime.node")

STARTING, IDLE, BUSY, ACTOR = "starting", "idle", "busy", "actor"
PENDING, ALIVE, RESTARTING, DEAD, TERMINATING = "pending", "alive", "restarting", "dead", "terminating"


class Worker:
    __slots__ = (
        "wid",
        "pid",
        "identity",
        "state",
        "task",
        "actor_id",
        "known",
        "blocked",
        "idle_since",
        "gpu_ids",
    )

    def __init__(self, wid: int) -> None:
        self.wid = wid
        self.pid = 0
        self.identity = b"w%d" % wid
        self.state = STARTING
        self.task: Task | None = None
        self.actor_id = b""
        self.known: set[bytes] = set()
        self.blocked = False
        self.idle_since = time.monotonic()
        self.gpu_ids: list[int] = []


class Task:
    __slots__ = ("spec", "demand", "worker", "retries_left", "cancelled", "waiting", "queued_at")

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.demand = to_units(spec.resources)
        self.worker: Worker | None = None
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.waiting = 0
        self.queued_at = time.monotonic()


class Actor:
    __slots__ = (
        "actor_id",
        "create",
        "worker",
        "state",
        "restarts_left",
        "queue",
        "inflight",
        "name",
        "namespace",
        "detached",
        "cause",
        "class_name",
        "owner",
        "demand",
        "terminate_requested",
    )

    def __init__(self, create: Task) -> None:
        opts = create.spec.options or {}
        self.actor_id = create.spec.actor_id
        self.create = create
        self.worker: Worker | None = None
        self.state = PENDING
        self.restarts_left = opts.get("max_restarts", 0)
        self.queue: deque[Task] = deque()
        self.inflight: dict[bytes, Task] = {}
        self.name = opts.get("name") or ""
        self.namespace = opts.get("namespace") or ""
        self.detached = opts.get("lifetime") == "detached"
        self.cause = ""
        self.class_name = create.spec.name.split(".")[0]
        self.owner = create.spec.owner
        self.demand: dict[str, int] = {}
        self.terminate_requested = False


class Proc:
    __slots__ = ("identity", "role", "pid", "job_id", "sys_path")

    def __init__(self, identity: bytes, role: str, pid: int, job_id: int, sys_path: list) -> None:
        self.identity, self.role, self.pid, self.job_id, self.sys_path = identity, role, pid, job_id, sys_path


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
        self.num_gpus = int(resources.get("GPU", 0))
        self.free_gpus = list(range(self.num_gpus))
        self.pool_size = max(1, int(resources.get("CPU", 1)))
        self.max_workers = max(self.pool_size * 4, 32)
        self.table = ObjectTable(
            conf["object_store_memory"],
            cfg.shm_dir(),
            cfg.runtime_dir() / self.cluster_id / "spill" / self.node_id,
        )
        self.workers: dict[int, Worker] = {}
        self.by_identity: dict[bytes, Worker] = {}
        self.idle: deque[Worker] = deque()
        self.next_wid = 1
        self.procs: dict[bytes, Proc] = {}
        self.functions: dict[bytes, tuple[bytes, list]] = {}
        self.running: dict[bytes, Task] = {}
        self.waiting_deps: dict[bytes, list[Task]] = {}
        self.actor_dep_waiters: dict[bytes, set[bytes]] = {}
        self.actors: dict[bytes, Actor] = {}
        self.out: dict[bytes, list] = {}
        self.links: dict[bytes, transport.Conn] = {}
        self.relayed: dict[int, tuple[bytes, int]] = {}
        self.relay_id = 0
        self.head_out: list = []
        self.dirty = False
        self.running_flag = True
        self.warned_infeasible: set[bytes] = set()
        self.started_at = time.time()
        self.tasks_finished = 0
        self.handlers = {
            Kind.HELLO: self.on_hello,
            Kind.SUBMIT: self.on_submit,
            Kind.PUT: self.on_put,
            Kind.HOLD: self.on_hold,
            Kind.RELEASE: self.on_release,
            Kind.SUBSCRIBE: self.on_subscribe,
            Kind.CANCEL: self.on_cancel,
            Kind.KILL_ACTOR: self.on_kill_actor,
            Kind.DONE: self.on_done,
            Kind.BLOCKED: self.on_blocked,
            Kind.UNBLOCKED: self.on_unblocked,
            Kind.LOG: self.on_log,
            Kind.FUNC_FETCH: self.on_func_fetch,
            Kind.REGISTER_FUNC: self.on_register_func,
            Kind.ACTOR_READY: self.on_actor_ready,
            Kind.REQUEST: self.on_request,
            Kind.BYE: self.on_bye,
        }

    # ------------------------------------------------------------------ run
    def start_zygote(self, worker_main) -> None:
        """Fork the zygote; must run before any ZeroMQ context exists."""
        self.zygote = zygote.start(worker_main, self.remove_segments)

    def remove_segments(self) -> None:
        for seg in cfg.shm_dir().glob(f"{cfg.SHM_PREFIX}{self.cluster_id}-{self.node_id}-*"):
            seg.unlink(missing_ok=True)

    def serve(self, parent_fd: int | None = None) -> None:
        self.ctx = zmq.Context()
        self.server = transport.Server(self.address, self.signer)
        self.head = None
        if self.conf.get("head_address"):
            self.head = protocol.tune(self.ctx.socket(zmq.DEALER))
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
                )
            )
        self.poller = poller = zmq.Poller()
        listener = self.server.listener.fileno()
        poller.register(listener, zmq.POLLIN)
        if self.head is not None:
            poller.register(self.head, zmq.POLLIN)
        poller.register(self.zygote.event_fd, zmq.POLLIN)
        if parent_fd is not None:
            poller.register(parent_fd, zmq.POLLIN)
        for _ in range(self.pool_size):
            self.spawn_worker()
        conns = self.server.conns
        next_tick = time.monotonic()
        try:
            while self.running_flag:
                self.flush()
                timeout = max(0, (next_tick - time.monotonic()) * 1000)
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
                    elif fd is self.head:
                        for _, batch in protocol.recv_batches(self.head, self.signer, False):
                            for msg in batch:
                                self.on_head_message(msg)
                    elif fd == self.zygote.event_fd:
                        for event in self.zygote.events():
                            self.on_zygote_event(*event)
                    elif fd == parent_fd:
                        if not os.read(parent_fd, 4096):
                            log.info("parent is gone; shutting down")
                            self.running_flag = False
                if self.table.freed_actors:
                    freed, self.table.freed_actors = self.table.freed_actors, []
                    for actor_id in freed:
                        self.terminate_actor(actor_id)
                if self.dirty:
                    self.dirty = False
                    self.schedule()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + 1.0
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
                    continue
                server.queue(conn, batch)
                if not conn.want_write and not server.flush(conn):
                    conn.want_write = True
                    self.poller.modify(conn.fd, zmq.POLLIN | zmq.POLLOUT)
        if self.head_out and self.head is not None:
            batch, self.head_out = self.head_out, []
            protocol.send(self.head, self.signer, batch)

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
        if self.head is not None:
            self.head.close(linger=0)
        self.ctx.term()

    def tick(self) -> None:
        """Once a second: dead drivers, idle workers, spilling, report to the head."""
        for ident, proc in list(self.procs.items()):
            if proc.role == "driver" and proc.pid and not cfg.pid_alive(proc.pid):
                log.info("driver pid %d is gone", proc.pid)
                self.drop_process(ident)
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
        if self.head is not None:
            self.head_out.append((Kind.NODE_REPORT, self.node_id, self.report()))

    # ------------------------------------------------------------- workers
    def spawn_worker(self) -> Worker:
        w = Worker(self.next_wid)
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
        how = f"killed by signal {-status}" if status < 0 else f"exit code {status}"
        if w.actor_id:
            actor = self.actors.get(w.actor_id)
            if actor is not None:
                self.actor_died(actor, f"the actor's worker process (pid {pid}) died ({how})")
        elif w.task is not None:
            task = w.task
            w.task = None
            self.running.pop(task.spec.task_id, None)
            self.release_task_resources(task, w)
            spec = task.spec
            if task.cancelled:
                self.finish_with_error(task, _err(TaskCancelledError(spec.name)))
            elif task.retries_left != 0:
                if task.retries_left > 0:
                    task.retries_left -= 1
                log.info("retrying %s after its worker died (%s)", spec.name, how)
                task.worker = None
                self.scheduler.add(spec.task_id, spec.resources, task)
            else:
                self.finish_with_error(
                    task,
                    _err(
                        WorkerCrashedError(
                            f"the worker running {spec.name}() (pid {pid}) died ({how}) and its retries "
                            f"ran out (max_retries={spec.max_retries}). If the task is killed by memory "
                            "pressure, give it more memory or smaller inputs; raise max_retries for flaky nodes."
                        )
                    ),
                )
        self.drop_process(w.identity)
        plain = sum(1 for x in self.workers.values() if not x.actor_id)
        if self.running_flag and plain < self.pool_size:
            self.spawn_worker()
        self.dirty = True

    def release_task_resources(self, task: Task, w: Worker) -> None:
        demand = task.demand
        if w.blocked:
            demand = {k: v for k, v in demand.items() if k != "CPU"}
            w.blocked = False
        self.scheduler.release(demand)
        if w.gpu_ids:
            self.free_gpus.extend(w.gpu_ids)
            w.gpu_ids = []

    # --------------------------------------------------------- scheduling
    def schedule(self) -> None:
        sched = self.scheduler
        while self.idle and sched.queued:
            runnable = sched.pop_runnable(len(self.idle))
            if not runnable:
                break
            for _task_id, _demand, task in runnable:
                self.start(self.idle.popleft(), task)
        if sched.queued and not self.idle and sched.has_runnable():
            starting = sum(1 for w in self.workers.values() if w.state == STARTING)
            if starting == 0 and len(self.workers) < self.max_workers:
                self.spawn_worker()

    def start(self, w: Worker, task: Task) -> None:
        spec = task.spec
        task.worker = w
        gpus = task.demand.get("GPU", 0)
        if gpus and self.free_gpus:
            n = max(1, gpus // 10_000)
            w.gpu_ids, self.free_gpus = self.free_gpus[:n], self.free_gpus[n:]
        if spec.kind == ACTOR_CREATE:
            actor = self.actors[spec.actor_id]
            w.state = ACTOR
            w.actor_id = spec.actor_id
            actor.worker = w
            actor.demand = task.demand
            plain = sum(1 for x in self.workers.values() if not x.actor_id)
            if plain < self.pool_size:
                self.spawn_worker()
        else:
            w.state = BUSY
            w.task = task
            self.running[spec.task_id] = task
        self.send_function(w, spec.function_id)
        self.emit(w.identity, (Kind.EXECUTE, spec, self.resolve(spec), w.gpu_ids))

    def send_function(self, w: Worker, function_id: bytes) -> None:
        if function_id not in w.known:
            fn = self.functions.get(function_id)
            if fn is not None:
                w.known.add(function_id)
                self.emit(w.identity, (Kind.FUNC, function_id, fn[0], fn[1]))

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
        else:
            self.procs[ident] = Proc(ident, role, pid, job_id, sys_path)
        self.emit(
            ident,
            (Kind.WELCOME, self.node_id, {"ip": self.ip, "hostname": self.hostname, "pid": os.getpid()}),
        )

    def on_register_func(self, ident: bytes, msg: tuple) -> None:
        _, function_id, blob, sys_path = msg
        self.functions[function_id] = (blob, sys_path)

    def on_func_fetch(self, ident: bytes, msg: tuple) -> None:
        fn = self.functions.get(msg[1])
        self.emit(ident, (Kind.FUNC, msg[1], fn[0] if fn else None, fn[1] if fn else []))

    def on_submit(self, ident: bytes, msg: tuple) -> None:
        spec: TaskSpec = msg[1]
        task = Task(spec)
        table = self.table
        for rid in spec.return_ids:
            table.expect(rid, spec.owner)
        if spec.deps:
            table.pin(spec.deps)
        if spec.contained:
            table.pin(spec.contained)
        if spec.kind == ACTOR_CALL:
            actor = self.actors.get(spec.actor_id)
            if actor is None:
                self.finish_with_error(
                    task,
                    _err(
                        ActorDiedError(
                            f"actor {spec.actor_id.hex()} is unknown to this cluster; it may have been "
                            "killed, or its handle comes from another cluster"
                        )
                    ),
                )
                return
            actor.queue.append(task)
            self.pump_actor(actor)
            return
        if spec.kind == ACTOR_CREATE:
            self.actors[spec.actor_id] = Actor(task)
            opts = spec.options or {}
            if opts.get("lifetime") != "detached":
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
            task.waiting = len(missing)
            for dep in missing:
                self.waiting_deps.setdefault(dep, []).append(task)
        else:
            self.ready(task)

    def is_ready(self, object_id: bytes) -> bool:
        e = self.table.entries.get(object_id)
        return e is not None and e.ready

    def ready(self, task: Task) -> None:
        """All arguments exist: fail fast on a failed argument, else queue."""
        spec = task.spec
        for dep in spec.deps:
            e = self.table.entries.get(dep)
            if e is not None and e.is_error:
                self.finish_with_error(task, e.value)
                return
        if not self.scheduler.add(spec.task_id, spec.resources, task):
            self.warn_infeasible(task)
        self.dirty = True

    def warn_infeasible(self, task: Task) -> None:
        spec = task.spec
        if spec.task_id in self.warned_infeasible:
            return
        self.warned_infeasible.add(spec.task_id)
        demand = dict(spec.resources)
        have = {k: v for k, v in self.total_resources.items() if k in demand or k == "CPU"}
        what = "actor " + spec.name.split(".")[0] if spec.kind == ACTOR_CREATE else f"task {spec.name}()"
        text = (
            f"Warning: {what} needs {demand}, but no node of this cluster has that much "
            f"(this node has {have}). It stays pending until a node with those resources "
            "joins; `nbcluster status` lists it as infeasible.\n"
        )
        self.emit(spec.owner, (Kind.LOG, spec.owner, spec.ctx, 2, text, "runtime"))

    def on_put(self, ident: bytes, msg: tuple) -> None:
        _, object_id, is_error, value, size, contained = msg
        self.table.hold(object_id, ident)
        self.object_ready(object_id, is_error, value, size, contained, None)

    def object_ready(self, object_id, is_error, value, size, contained, owner) -> None:
        e = self.table.set_ready(object_id, is_error, value, size, contained)
        if e is None:
            return
        if owner is not None and owner in e.holders:
            self.emit(owner, (Kind.RESULT, object_id, is_error, value, size))
        if e.subscribers:
            for sub in e.subscribers:
                if sub != owner:
                    self.emit(sub, (Kind.RESULT, object_id, is_error, value, size))
            e.subscribers.clear()
        waiting = self.waiting_deps.pop(object_id, None)
        if waiting:
            for task in waiting:
                task.waiting -= 1
                if task.waiting == 0 and not task.cancelled:
                    self.ready(task)
        actors = self.actor_dep_waiters.pop(object_id, None)
        if actors:
            for actor_id in actors:
                actor = self.actors.get(actor_id)
                if actor is not None:
                    self.pump_actor(actor)
        if isinstance(value, str) and self.table.shm_used > self.table.capacity:
            self.table.spill_if_needed()

    def on_hold(self, ident: bytes, msg: tuple) -> None:
        self.table.hold(msg[1], ident)

    def on_release(self, ident: bytes, msg: tuple) -> None:
        self.table.release(msg[1], ident)

    def on_subscribe(self, ident: bytes, msg: tuple) -> None:
        entries = self.table.entries
        for object_id in msg[1]:
            e = entries.get(object_id)
            if e is None:
                self.emit(
                    ident,
                    (
                        Kind.RESULT,
                        object_id,
                        True,
                        _err(
                            ObjectLostError(
                                f"object {object_id.hex()} no longer exists: every reference to it was "
                                "dropped before it was read"
                            )
                        ),
                        0,
                    ),
                )
            elif e.ready:
                e.last_used = time.monotonic()
                self.emit(ident, (Kind.RESULT, object_id, e.is_error, e.value, e.size))
            else:
                e.subscribers.add(ident)

    def on_done(self, ident: bytes, msg: tuple) -> None:
        _, task_id, results, retryable = msg
        w = self.by_identity.get(ident)
        task = self.running.pop(task_id, None)
        if task is None:
            return
        spec = task.spec
        if w is not None and spec.kind != ACTOR_CALL:
            self.release_task_resources(task, w)
            w.task = None
            if w.state == BUSY:
                w.state = IDLE
                w.idle_since = time.monotonic()
                self.idle.append(w)
            self.dirty = True
        elif spec.kind == ACTOR_CALL:
            actor = self.actors.get(spec.actor_id)
            if actor is not None:
                actor.inflight.pop(task_id, None)
        if retryable and task.retries_left != 0 and not task.cancelled:
            if task.retries_left > 0:
                task.retries_left -= 1
            for _, _, value, _, _ in results:
                self.table._discard_value(value)
            self.scheduler.add(spec.task_id, spec.resources, task)
            self.dirty = True
            return
        self.tasks_finished += 1
        for object_id, is_error, value, size, contained in results:
            self.object_ready(object_id, is_error, value, size, contained, spec.owner)
        self.task_cleanup(task)

    def task_cleanup(self, task: Task) -> None:
        spec = task.spec
        if spec.deps:
            self.table.unpin(spec.deps)
        if spec.contained:
            self.table.unpin(spec.contained)
        if isinstance(spec.args, str):
            self.table._discard_value(spec.args)
        self.warned_infeasible.discard(spec.task_id)

    def finish_with_error(self, task: Task, error: bytes) -> None:
        """The task will not run (or ran and crashed): every result is `error`."""
        spec = task.spec
        self.running.pop(spec.task_id, None)
        for rid in spec.return_ids:
            self.object_ready(rid, True, error, len(error), (), spec.owner)
        self.task_cleanup(task)

    def on_blocked(self, ident: bytes, msg: tuple) -> None:
        w = self.by_identity.get(ident)
        if w is not None and w.task is not None and not w.blocked:
            w.blocked = True
            cpu = w.task.demand.get("CPU", 0)
            if cpu:
                self.scheduler.release({"CPU": cpu})
                self.dirty = True

    def on_unblocked(self, ident: bytes, msg: tuple) -> None:
        w = self.by_identity.get(ident)
        if w is not None and w.task is not None and w.blocked:
            w.blocked = False
            cpu = w.task.demand.get("CPU", 0)
            if cpu:
                self.scheduler.acquire({"CPU": cpu})

    def on_log(self, ident: bytes, msg: tuple) -> None:
        self.emit(msg[1], msg)

    def on_cancel(self, ident: bytes, msg: tuple) -> None:
        _, task_id, force = msg
        task = self.running.get(task_id)
        if task is not None:
            if task.spec.kind == ACTOR_CALL:
                return  # a running actor call is not interrupted (as in Ray)
            task.cancelled = True
            w = task.worker
            if w is None:
                return
            if force:
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:  # KeyboardInterrupt in the task (workers get no terminal signals)
                try:
                    os.kill(w.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            return
        queued = self.scheduler.remove(task_id)
        if queued is None:
            queued = self._remove_waiting(task_id)
        if queued is None:
            for actor in self.actors.values():
                for t in actor.queue:
                    if t.spec.task_id == task_id:
                        actor.queue.remove(t)
                        queued = t
                        break
                if queued is not None:
                    break
        if queued is not None:
            queued.cancelled = True
            self.finish_with_error(queued, _err(TaskCancelledError(queued.spec.name)))

    def _remove_waiting(self, task_id: bytes) -> Task | None:
        for tasks in self.waiting_deps.values():
            for t in tasks:
                if t.spec.task_id == task_id:
                    tasks.remove(t)
                    return t
        return None

    def on_request(self, ident: bytes, msg: tuple) -> None:
        _, req_id, op, args = msg
        try:
            if op == "relay":  # a worker's control request for the head
                self.relay_id += 1
                self.relayed[self.relay_id] = (ident, req_id)
                self.head_out.append((Kind.REQUEST, self.relay_id, args[0], args[1]))
                return
            if op == "report":
                payload = self.report()
            elif op == "actor_state":
                actor = self.actors.get(args[0])
                payload = None if actor is None else (actor.state, actor.cause)
            else:
                raise ValueError(f"unknown node request {op!r}")
            self.emit(ident, (Kind.REPLY, req_id, True, payload))
        except Exception as e:
            self.emit(ident, (Kind.REPLY, req_id, False, e))

    def on_bye(self, ident: bytes, msg: tuple) -> None:
        self.drop_process(ident)

    def drop_process(self, ident: bytes) -> None:
        """A driver or worker left: its refs go, a driver's tasks and actors too."""
        proc = self.procs.pop(ident, None)
        self.table.drop_holder(ident)
        if proc is None or proc.role != "driver":
            return
        for actor in list(self.actors.values()):
            if actor.owner == ident and not actor.detached and actor.state != DEAD:
                self.kill_actor(actor, "its driver exited", restart=False)
        for task in list(self.running.values()):
            if task.spec.owner == ident and task.worker is not None and task.spec.kind != ACTOR_CALL:
                task.cancelled = True
                task.retries_left = 0
                try:
                    os.kill(task.worker.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for shape_q in self.scheduler.queues.values():
            for entry in list(shape_q):
                if entry[3].spec.owner == ident:
                    shape_q.remove(entry)
                    self.scheduler.queued -= 1
                    self.task_cleanup(entry[3])
        for task_id, (_, task) in list(self.scheduler.infeasible.items()):
            if task.spec.owner == ident:
                del self.scheduler.infeasible[task_id]
                self.task_cleanup(task)
        for dep, tasks in list(self.waiting_deps.items()):
            kept = [t for t in tasks if t.spec.owner != ident]
            for t in tasks:
                if t.spec.owner == ident:
                    self.task_cleanup(t)
            if kept:
                self.waiting_deps[dep] = kept
            else:
                del self.waiting_deps[dep]

    # -------------------------------------------------------------- actors
    def pump_actor(self, actor: Actor) -> None:
        if actor.state == DEAD:
            while actor.queue:
                self.fail_actor_call(actor, actor.queue.popleft())
            return
        if actor.state != ALIVE or actor.worker is None:
            return
        entries = self.table.entries
        w = actor.worker
        while actor.queue:
            task = actor.queue[0]
            for dep in task.spec.deps:
                e = entries.get(dep)
                if e is None or not e.ready:
                    self.actor_dep_waiters.setdefault(dep, set()).add(actor.actor_id)
                    return
            actor.queue.popleft()
            if task.cancelled:
                continue
            failed = next((entries[d] for d in task.spec.deps if entries[d].is_error), None)
            if failed is not None:
                self.finish_with_error(task, failed.value)
                continue
            task.worker = w
            actor.inflight[task.spec.task_id] = task
            self.running[task.spec.task_id] = task
            self.emit(w.identity, (Kind.EXECUTE, task.spec, self.resolve(task.spec), w.gpu_ids))
        if actor.terminate_requested and not actor.inflight:
            actor.state = TERMINATING
            self.emit(w.identity, (Kind.EXIT,))

    def fail_actor_call(self, actor: Actor, task: Task) -> None:
        self.finish_with_error(
            task,
            _err(
                ActorDiedError(
                    f"actor {actor.class_name} ({actor.actor_id.hex()[:12]}) is dead: {actor.cause}"
                )
            ),
        )

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
        if actor.name:
            self.head_out.append(
                (Kind.ACTOR_EVENT, actor_id, actor.name, actor.namespace, ALIVE, self.node_id, None)
            )
        self.pump_actor(actor)

    def on_kill_actor(self, ident: bytes, msg: tuple) -> None:
        _, actor_id, no_restart = msg
        actor = self.actors.get(actor_id)
        if actor is not None:
            self.kill_actor(actor, "it was killed with kill()", restart=not no_restart)

    def kill_actor(self, actor: Actor, cause: str, restart: bool) -> None:
        if not restart:
            actor.restarts_left = 0
        actor.cause = cause
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
        """The last handle is gone: finish the queued calls, then exit."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.detached or actor.state == DEAD:
            return
        actor.cause = "all handles to it went out of scope"
        actor.restarts_left = 0
        if actor.state in (PENDING, RESTARTING) and actor.worker is None:
            self.scheduler.remove(actor.create.spec.task_id)
            self.actor_died(actor, actor.cause)
            return
        actor.terminate_requested = True
        self.pump_actor(actor)

    def actor_died(self, actor: Actor, reason: str) -> None:
        w = actor.worker
        actor.worker = None
        if actor.demand:
            self.scheduler.release(actor.demand)
            actor.demand = {}
            self.dirty = True
        if w is not None and w.gpu_ids:
            self.free_gpus.extend(w.gpu_ids)
            w.gpu_ids = []
        if not actor.cause:
            actor.cause = reason
        inflight = list(actor.inflight.values())
        actor.inflight.clear()
        for task in inflight:
            self.running.pop(task.spec.task_id, None)
            self.fail_actor_call(actor, task)
        if actor.restarts_left != 0 and actor.state != TERMINATING and not actor.terminate_requested:
            if actor.restarts_left > 0:
                actor.restarts_left -= 1
            log.info("restarting actor %s: %s", actor.class_name, reason)
            actor.state = RESTARTING
            create = actor.create
            create.worker = None
            self.scheduler.add(create.spec.task_id, create.spec.resources, create)
            self.dirty = True
            return
        actor.state = DEAD
        while actor.queue:
            self.fail_actor_call(actor, actor.queue.popleft())
        if actor.name:
            self.head_out.append(
                (Kind.ACTOR_EVENT, actor.actor_id, actor.name, actor.namespace, DEAD, self.node_id, None)
            )
        self.task_cleanup(actor.create)

    # ---------------------------------------------------------------- head
    def on_head_message(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == Kind.EXIT:
            log.info("the head asked this node to stop")
            self.running_flag = False
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

        running = Counter(t.spec.name for t in self.running.values() if t.spec.kind != ACTOR_CALL)
        pending = Counter()
        for q in self.scheduler.queues.values():
            for entry in q:
                pending[entry[3].spec.name] += 1
        for tasks in self.waiting_deps.values():
            for t in tasks:
                pending[t.spec.name] += 1
        infeasible = [
            {"name": item.spec.name, "resources": dict(shape)}
            for shape, item in self.scheduler.infeasible.values()
        ]
        mem = psutil.virtual_memory()
        busy = sum(1 for w in self.workers.values() if w.state == BUSY)
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
            "workers_busy": busy,
            "workers_idle": len(self.idle),
            "workers_blocked": sum(1 for w in self.workers.values() if w.blocked),
            "running": dict(running),
            "pending": dict(pending),
            "infeasible": infeasible,
            "tasks_finished": self.tasks_finished,
            "actors": [
                {
                    "actor_id": a.actor_id.hex(),
                    "class_name": a.class_name,
                    "name": a.name,
                    "state": a.state,
                    "pid": a.worker.pid if a.worker else 0,
                    "pending_calls": len(a.queue) + len(a.inflight),
                }
                for a in self.actors.values()
                if a.state != DEAD
            ],
        }


# ------------------------------------------------------------------ process
def main(conf: dict, parent_fd: int | None = None) -> None:
    """Run a node daemon in this (freshly forked or started) process."""
    from . import worker

    _setup_logging(conf, f"node-{conf['node_id']}")
    node = Node(conf)

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
