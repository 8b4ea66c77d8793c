"""Actors: the node keeps the record of every actor created through it, wherever it runs.

::

    owner ──SUBMIT(creation)──▶ on_submit: pin arguments ─▶ wait for them (objects.arrived)
        ─▶ place(): ClusterView.route ─▶ here: queue (leases.enqueue) ─Node.schedule─▶ start(worker)
                                     └─▶ node B: RELAY(SUBMIT) ══▶ B hosts it, tells us (on_location)
    worker ──ACTOR_READY──▶ ALIVE: watchers, the head (named actors), the home node get ACTOR_LOCATION
    callers ──request "actor_location"──▶ tell_location: now, or once it is alive or dead
    process died ─▶ died(): placement.actor_restarts ─▶ place() again (RESTARTING) or DEAD
    KILL_ACTOR ─▶ kill(): SIGKILL (or RELAY to its host); last handle gone ─▶ terminate(): EXIT

An actor that does not fit here is hosted by another node while this one,
its home (the first bytes of its id), keeps the record, restarts it and
answers where it is. States: see `records`.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import Any

from ..wire import protocol
from ..wire.protocol import ACTOR_CREATE, Kind, TaskSpec
from . import placement
from .objects import Objects
from .outbox import Outbox, kill
from .placement import ClusterView
from .pool import WorkerPool
from .records import ACTOR, ALIVE, DEAD, PENDING, RESTARTING, TERMINATING, Actor, Creation, Worker
from .scheduler import Scheduler

log = logging.getLogger("runtime.node")

Enqueue = Callable[[bytes, tuple, Any, bytes, str, Any], None]


def _describe_error(value) -> str:
    try:
        return str(pickle.loads(value))
    except Exception:
        return "(unreadable error)"


def worker_place(w: Worker) -> tuple:
    """Where a caller finds an actor's worker: (identity, socket path, pid, direct address)."""
    return (w.identity, w.path, w.pid, w.direct)


def alive_at(actor_id: bytes, place: tuple, node_id: str) -> tuple:
    identity, path, pid, direct = place
    return (Kind.ACTOR_LOCATION, actor_id, "alive", identity, path, pid, "", node_id, direct)


def dead_at(actor_id: bytes, cause: str) -> tuple:
    return (Kind.ACTOR_LOCATION, actor_id, "dead", b"", "", 0, cause, "", "")


class Actors:
    """The actors whose home is this node, and those it hosts for other nodes."""

    def __init__(
        self,
        node_id: str,
        scheduler: Scheduler,
        pool: WorkerPool,
        objects: Objects,
        cluster: ClusterView,
        functions: dict[bytes, tuple[bytes, list]],
        enqueue: Enqueue,
        outbox: Outbox,
    ) -> None:
        self.node_id = node_id
        self.scheduler, self.pool, self.objects, self.cluster = scheduler, pool, objects, cluster
        self.functions = functions  # function id -> (pickled class, sys.path): travels with a placement
        self.enqueue = enqueue
        self.outbox = outbox
        self.actors: dict[bytes, Actor] = {}
        self.waiting: dict[bytes, list[Creation]] = {}  # object id -> creations waiting for it
        objects.arrived = self.arrived

    def get(self, actor_id: bytes) -> Actor | None:
        return self.actors.get(actor_id)

    # ------------------------------------------------------------- creation
    def on_submit(self, ident: bytes, msg: tuple) -> None:
        """An actor's creation (tasks and actor calls go to workers directly)."""
        spec: TaskSpec = msg[1]
        if spec.kind != ACTOR_CREATE:
            log.warning("ignored a SUBMIT of kind %s from %r", spec.kind, ident)
            return
        create = Creation(spec)
        table = self.objects.table
        if spec.deps:
            table.pin(spec.deps)
        if spec.contained:
            table.pin(spec.contained)
        actor = self.actors[spec.actor_id] = Actor(create)
        opts = spec.options or {}
        if not actor.detached:
            table.mark_actor(spec.actor_id, spec.owner)
        if opts.get("name"):
            self.outbox.to_head(
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
        missing = {d for d in spec.deps if not self.objects.is_ready(d)}
        if missing:
            create.waiting = len(missing)
            for dep in missing:
                self.waiting.setdefault(dep, []).append(create)
                self.objects.want_foreign(dep, subscribe=True)
        else:
            self.creation_ready(create)

    def arrived(self, object_id: bytes) -> None:
        """An object is ready: creations that waited for it as their last argument go on."""
        waiting = self.waiting.pop(object_id, None)
        if waiting:
            for create in waiting:
                create.waiting -= 1
                if create.waiting == 0:
                    self.creation_ready(create)

    def creation_ready(self, create: Creation) -> None:
        spec = create.spec
        actor = self.actors.get(spec.actor_id)
        if actor is None or actor.state == DEAD:
            return
        for dep in spec.deps:
            e = self.objects.table.entries.get(dep)
            if e is not None and e.is_error:
                actor.restarts_left = 0
                self.died(actor, "an argument of its constructor failed:\n" + _describe_error(e.value))
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
        self.outbox.relay(target, batch)

    def start(self, w: Worker, create: Creation) -> None:
        """Worker `w` (taken from the idle ones) becomes the actor."""
        spec = create.spec
        actor = self.actors[spec.actor_id]
        w.actor_id = spec.actor_id
        actor.worker = w
        actor.demand = create.demand
        self.pool.lend(w, ACTOR, create.demand)
        fn = self.functions.get(spec.function_id)
        if fn is not None and spec.function_id not in w.known:
            w.known.add(spec.function_id)
            self.outbox.emit(w.identity, (Kind.FUNC, spec.function_id, fn[0], fn[1]))
        self.outbox.emit(w.identity, (Kind.EXECUTE, tuple(spec), self.objects.resolve(spec), w.gpu_ids))

    def on_ready(self, ident: bytes, msg: tuple) -> None:
        """ACTOR_READY: its constructor returned (or raised)."""
        _, actor_id, error = msg
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        if error is not None:
            actor.restarts_left = 0
            actor.cause = f"its constructor raised:\n{error}"
            self.kill(actor, actor.cause, restart=False)
            return
        actor.state = ALIVE
        actor.cause = ""
        if actor.home:
            self.tell_home(actor)
        if actor.name:
            self.outbox.to_head(
                (Kind.ACTOR_EVENT, actor_id, actor.name, actor.namespace, ALIVE, self.node_id, None)
            )
        self.tell_watchers(actor)

    # ------------------------------------------------------------- location
    def tell_location(self, ident: bytes, actor_id: bytes, dead_pid: int = 0) -> None:
        """Tell `ident` where the actor runs, or why it is dead; if pending, once it is either.

        `dead_pid` is a process the caller saw die, which this node may not have noticed
        yet: the caller is told once the actor is back (or dead) instead."""
        emit = self.outbox.emit
        actor = self.actors.get(actor_id)
        if actor is None:
            home = protocol.home_of(actor_id)
            cause = "it is unknown to this cluster (killed long ago, or from another cluster)"
            if home != self.node_id and home in self.cluster.view and not self.cluster.alive(home):
                cause = f"the node it belonged to ({home}) died"
            emit(ident, dead_at(actor_id, cause))
        elif actor.state == ALIVE and actor.worker is not None and actor.worker.pid != dead_pid:
            emit(ident, alive_at(actor_id, worker_place(actor.worker), self.node_id))
        elif actor.state == ALIVE and actor.remote and actor.location and actor.location[2] != dead_pid:
            emit(ident, alive_at(actor_id, actor.location, actor.remote))
        elif actor.state in (DEAD, TERMINATING):
            emit(ident, dead_at(actor_id, actor.cause))
        else:
            actor.watchers.add(ident)

    def tell_home(self, actor: Actor) -> None:
        """An actor hosted for another node started or died: its home node decides what next."""
        w = actor.worker
        if actor.state == ALIVE and w is not None:
            msg = alive_at(actor.actor_id, worker_place(w), self.node_id)
        else:
            msg = dead_at(actor.actor_id, actor.cause)
        self.outbox.emit(b"n" + actor.home.encode(), msg)

    def tell_watchers(self, actor: Actor) -> None:
        watchers, actor.watchers = actor.watchers, set()
        for ident in watchers:
            self.tell_location(ident, actor.actor_id)

    def on_location(self, src_node: str, msg: tuple) -> None:
        """The node hosting one of our actors says it is alive there, or dead."""
        _, actor_id, state, identity, path, pid, cause, where, direct = msg
        actor = self.actors.get(actor_id)
        if actor is None or actor.remote != src_node:
            return
        if state == "alive":
            actor.state = ALIVE
            actor.location = (identity, path, pid, direct)  # as worker_place() says it
            actor.cause = ""
            if actor.name:
                self.outbox.to_head(
                    (Kind.ACTOR_EVENT, actor_id, actor.name, actor.namespace, ALIVE, src_node, None)
                )
            self.tell_watchers(actor)
        else:
            actor.remote, actor.location = "", ()
            self.died(actor, cause)

    # ----------------------------------------------------------------- ends
    def on_kill(self, ident: bytes, msg: tuple) -> None:
        """KILL_ACTOR: from `kill()`, or from the home node of an actor hosted here."""
        actor_id, no_restart = msg[1], msg[2]
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        if len(msg) > 3 and msg[3]:  # the home node ends an actor it placed here
            actor.detached = False
            self.terminate(actor_id)
        else:
            self.kill(actor, "it was killed with kill()", restart=not no_restart)

    def kill(self, actor: Actor, cause: str, restart: bool) -> None:
        if not restart:
            actor.restarts_left = 0
        actor.cause = cause
        if actor.remote:
            self.outbox.relay(actor.remote, [(Kind.KILL_ACTOR, actor.actor_id, True)])
            return
        w = actor.worker
        if w is not None and w.pid:
            kill(w.pid)
        elif actor.state in (PENDING, RESTARTING):
            self.scheduler.remove(actor.create.spec.task_id)
            self.died(actor, cause)

    def terminate(self, actor_id: bytes) -> None:
        """The last handle is gone: the actor finishes the calls it has, then exits."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.detached or actor.state in (DEAD, TERMINATING):
            return
        actor.cause = "all handles to it went out of scope"
        actor.restarts_left = 0
        if actor.remote:
            actor.state = TERMINATING
            self.outbox.relay(actor.remote, [(Kind.KILL_ACTOR, actor_id, True, True)])
            return
        if actor.worker is None:
            self.scheduler.remove(actor.create.spec.task_id)
            self.died(actor, actor.cause)
            return
        actor.state = TERMINATING
        self.outbox.emit(actor.worker.identity, (Kind.EXIT,))

    def died(self, actor: Actor, reason: str) -> None:
        """Its process is gone: restart it (`placement.actor_restarts`) or tell everyone it is dead."""
        w = actor.worker
        actor.worker = None
        if actor.demand:
            self.scheduler.release(actor.demand)
            actor.demand = {}
            self.outbox.reschedule()
        if w is not None:
            self.pool.take_gpus(w)
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
            self.outbox.to_head(
                (Kind.ACTOR_EVENT, actor.actor_id, actor.name, actor.namespace, DEAD, self.node_id, None)
            )
        self.cleanup(actor.create)

    def cleanup(self, create: Creation) -> None:
        """A dead actor's constructor arguments are no longer pinned."""
        spec = create.spec
        table = self.objects.table
        if spec.deps:
            table.unpin(spec.deps)
        if spec.contained:
            table.unpin(spec.contained)
        if isinstance(spec.args, str):
            table.discard_value(spec.args)

    def process_gone(self, ident: bytes, was_driver: bool) -> None:
        """A process left: it watches nothing any more; a driver's actors die with it."""
        for actor in self.actors.values():
            actor.watchers.discard(ident)
        if not was_driver:
            return
        for actor in list(self.actors.values()):
            if actor.owner == ident and not actor.detached and actor.state != DEAD:
                self.kill(actor, "its driver exited", restart=False)

    def rows(self) -> list[dict[str, Any]]:
        """The live actors, for the node's report."""
        return [
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
        ]
