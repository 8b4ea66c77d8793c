"""A node's decisions, apart from I/O: what starts, what is revoked, where work
goes, whether an actor restarts, and what a dead node or worker takes with it.

::

    events (plain data)                      decisions                 actions (records)
    ─────────────────────────────────────    ──────────────────────    ───────────────────────────
    queue changed, idle workers          ──▶ start()               ──▶ Start (a lease, an actor)
    a pass's starts                      ──▶ more_coming()         ──▶ per grant: another follows it
    still queued: workers, leases        ──▶ unblock()             ──▶ SpawnWorkers, Revoke
    a request / an actor does not fit    ──▶ ClusterView.route()   ──▶ a node id (spill there) or ""
    a new cluster view                   ──▶ ClusterView.rebalance ──▶ SpillLease, PlaceActor
    an actor's process died              ──▶ actor_restarts()      ──▶ restart or not, restarts left
    a worker process exited              ──▶ worker_death()        ──▶ ActorDied, EndLease, DropProcess,
                                                                       SpawnWorkers
    the head says a node died            ──▶ node_death()          ──▶ DropProcess, ActorDied, KillActor,
                                                                       FailObjects, Broadcast

Nothing here sends, forks, kills or reads the clock: the daemon
(`daemon.Node`) feeds events in and executes the actions it gets back, in
order. The only state is what a decision needs to remember between events
(`ClusterView`: the head's last view and what this node spilled since),
and the `Scheduler`'s queue, which `start` and `rebalance` take items
from. `tests/test_decisions.py` drives all of it with plain data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .records import DEAD, TERMINATING, Actor, Creation, Lease, LeaseRequest, Worker
from .scheduler import Scheduler, to_units

# ----------------------------------------------------------------- actions


@dataclass(frozen=True)
class Start:
    """Give the next idle worker this queued item (its resources are taken)."""

    item: LeaseRequest | Creation


@dataclass(frozen=True)
class SpawnWorkers:
    """Fork this many more workers."""

    count: int


@dataclass(frozen=True)
class Revoke:
    """Ask the owner of a lease to give it back as soon as its worker is idle."""

    lease_id: int
    owner: bytes


@dataclass(frozen=True)
class SpillLease:
    """Tell the requester to ask node `target` (counted there already)."""

    request: LeaseRequest
    target: str


@dataclass(frozen=True)
class PlaceActor:
    """Place an actor again: on node `target` (counted there already), or "" to decide anew."""

    actor_id: bytes
    target: str = ""


@dataclass(frozen=True)
class ActorDied:
    """An actor's process is gone (it may restart: `actor_restarts`)."""

    actor_id: bytes
    reason: str


@dataclass(frozen=True)
class KillActor:
    """End an actor for good."""

    actor_id: bytes
    cause: str


@dataclass(frozen=True)
class EndLease:
    """A lease ends: its resources come back, its worker (if alive) is idle."""

    lease_id: int


@dataclass(frozen=True)
class DropProcess:
    """A process is gone: its references, leases, requests and actors go too."""

    identity: bytes


@dataclass(frozen=True)
class FailObjects:
    """Objects kept by this (dead) node: whoever waits for them gets ObjectLostError."""

    node_id: str
    reason: str


@dataclass(frozen=True)
class Broadcast:
    """Tell every process connected here that a node died."""

    node_id: str
    reason: str


Action = (
    Start
    | SpawnWorkers
    | Revoke
    | SpillLease
    | PlaceActor
    | ActorDied
    | KillActor
    | EndLease
    | DropProcess
    | FailObjects
    | Broadcast
)


# ------------------------------------------------------- leases and workers


def start(sched: Scheduler, idle: int) -> list[Start]:
    """The queued items the `idle` workers take now: the oldest that fit, in order.

    Their resources are taken from `sched`; the daemon gives each the next
    idle worker (a lease for a `LeaseRequest`, an actor for a `Creation`).
    """
    starts: list[Start] = []
    while idle and sched.queued:
        runnable = sched.pop_runnable(idle)
        if not runnable:
            break
        for _task_id, _demand, item in runnable:
            starts.append(Start(item))  # type: ignore[arg-type]
            idle -= 1
    return starts


def more_coming(starts: list[Start]) -> list[bool]:
    """Per start: does a later start of the same pass go to the same owner and shape?

    Its grant is on its way, so a grant sent before it must not tell the owner
    the node is full (`Leases.grant`'s `room`): all of a pass's resources are
    taken before the first grant goes out.
    """
    seen: set[tuple] = set()
    out: list[bool] = []
    for s in reversed(starts):
        item = s.item
        key = (item.owner, item.shape) if isinstance(item, LeaseRequest) else None
        out.append(key in seen)
        if key is not None:
            seen.add(key)
    return out[::-1]


def unblock(
    sched: Scheduler,
    idle: int,
    starting: int,
    workers: int,
    max_workers: int,
    leases: Iterable[Lease],
) -> list[SpawnWorkers | Revoke]:
    """Work is still queued after `start`: fork workers for it, or revoke leases.

    If more could run but no worker is idle, fork one per waiting item, minus
    those `starting`, up to `max_workers` in all. If nothing queued fits, the
    resources are held by leases: every lease whose owner has no request
    waiting is revoked (its owner gives it back as soon as it is idle).
    """
    if not sched.queued:
        return []
    if not idle and sched.has_runnable():
        count = min(sched.queued, max_workers - workers) - starting
        return [SpawnWorkers(count)] if count > 0 else []
    if sched.has_runnable():
        return []
    waiting = {item.owner for q in sched.queues.values() for *_, item in q if isinstance(item, LeaseRequest)}
    return [
        Revoke(lease.lease_id, lease.owner)
        for lease in leases
        if not lease.revoked and lease.owner not in waiting
    ]


def fits_here_now(sched: Scheduler, demand: dict[str, int]) -> bool:
    """`demand` starts here at once: it fits, and nothing queued is ahead of it."""
    return sched.feasible(demand) and sched.fits(demand) and not sched.queued


def worker_death(
    worker: Worker,
    status: int,
    actors: Mapping[bytes, Actor],
    plain_workers_left: int,
    pool_size: int,
    running: bool,
    cause: str = "",
) -> list[Action]:
    """A worker process exited with `status` (negative: killed by that signal).

    Its actor dies (and may restart), or its lease ends (the owner sees the
    socket close and retries its tasks); the process is dropped; the pool
    is refilled to `pool_size` plain workers while the node runs. `cause`:
    why the node killed it, when it did (the memory monitor).
    """
    how = f"killed by signal {-status}" if status < 0 else f"exit code {status}"
    actions: list[Action] = []
    if worker.actor_id:
        if worker.actor_id in actors:
            why = cause or f"its worker process (pid {worker.pid}) died ({how})"
            actions.append(ActorDied(worker.actor_id, why))
    elif worker.lease is not None:
        actions.append(EndLease(worker.lease.lease_id))
    actions.append(DropProcess(worker.identity))
    if running and plain_workers_left < pool_size:
        actions.append(SpawnWorkers(1))
    return actions


# ------------------------------------------------------------------ actors


def actor_restarts(actor: Actor) -> tuple[bool, int]:
    """After its process died: (restart it?, restarts left then).

    ``max_restarts=-1`` restarts forever; an actor being terminated (its
    last handle went) never restarts.
    """
    left = actor.restarts_left
    if left != 0 and actor.state != TERMINATING:
        return True, left - 1 if left > 0 else left
    return False, left


# ------------------------------------------------------------------ cluster


class ClusterView:
    """The cluster as the head last showed it, and what this node sent where since.

    Picks the node that takes work this node cannot start now (spillback,
    as Ray's raylet does), and counts what it sent there until the next
    view shows it, so one second-old view does not send everything to the
    same node.
    """

    def __init__(self, node_id: str, rng: random.Random | None = None) -> None:
        self.node_id = node_id
        self.view: dict[str, dict] = {}  # node id -> summary (resources_total/available, alive)
        self.spilled: dict[str, dict[str, int]] = {}  # node id -> demand sent there since the view
        self.rng = rng or random.Random()

    def update(self, nodes: list[dict]) -> None:
        """A new view from the head: what was spilled is in it now."""
        self.view = {n["node_id"]: n for n in nodes}
        self.spilled.clear()

    def mark_dead(self, node_id: str) -> None:
        info = self.view.get(node_id)
        if info is not None:
            info["alive"] = False

    def alive(self, node_id: str) -> bool:
        return self.view.get(node_id, {}).get("alive", True)

    def pick(self, demand: dict[str, int], now: bool) -> str:
        """Another alive node for `demand`: one with room now (`now`), else any big enough; or "".

        The better of two picked at random (the "power of two choices"): nodes that
        decide on the same second-old view do not all send their work to one node.
        """
        scored: list[tuple] = []
        for node_id, info in self.view.items():
            if node_id == self.node_id or not info.get("alive", True):
                continue
            total = to_units(info["resources_total"])
            total[f"node:{node_id}"] = to_units({"x": 1.0})["x"]  # every node has its affinity
            if not all(total.get(k, 0) >= v for k, v in demand.items()):
                continue
            avail = to_units(info["resources_available"])
            avail.setdefault(f"node:{node_id}", total[f"node:{node_id}"])
            for k, v in self.spilled.get(node_id, {}).items():
                avail[k] = avail.get(k, 0) - v
            room = all(avail.get(k, 0) >= v for k, v in demand.items())
            if now and not room:
                continue
            scored.append((room, avail.get("CPU", 0), node_id))
        if not scored:
            return ""
        return max(self.rng.sample(scored, min(2, len(scored))))[2]

    def spill(self, node_id: str, demand: dict[str, int]) -> None:
        """Count what we sent there until the next view shows it."""
        acc = self.spilled.setdefault(node_id, {})
        for k, v in demand.items():
            acc[k] = acc.get(k, 0) + v

    def route(self, sched: Scheduler, demand: dict[str, int], may_spill: bool) -> str:
        """Where work that arrives here goes: "" to queue it here, or a node to send it to.

        Work that starts here now stays. Otherwise another node with room now
        takes it; work no node here could ever run goes to any node big enough.
        Work relayed from another node, or hosted here for one, is never sent on
        (`may_spill` False). The demand is counted at the node picked.
        """
        if not may_spill or fits_here_now(sched, demand):
            return ""
        target = self.pick(demand, now=sched.feasible(demand))
        if target:
            self.spill(target, demand)
        return target

    def rebalance(
        self, sched: Scheduler, relayed: Callable[[bytes], bool], actors: Mapping[bytes, Actor]
    ) -> list[Action]:
        """After a new view: work waiting here that another node can take goes there.

        Infeasible work goes to a node big enough for it, if one joined. Queued
        work that does not fit here now goes to a node with room now, oldest
        first per shape, until one fits here. Requests relayed from other nodes
        (`relayed(owner)`) and actors hosted for another node stay. The items
        taken are removed from `sched`.
        """
        actions: list[Action] = []
        for key, (shape, item) in list(sched.infeasible.items()):
            demand = to_units(shape)
            if isinstance(item, LeaseRequest) and not relayed(item.owner):
                target = self.pick(demand, now=False)
                if target:
                    del sched.infeasible[key]
                    self.spill(target, demand)
                    actions.append(SpillLease(item, target))
            elif isinstance(item, Creation):
                actor = actors.get(item.spec.actor_id)
                if actor is not None and not actor.home and self.pick(demand, now=False):
                    del sched.infeasible[key]
                    actions.append(PlaceActor(actor.actor_id))
        for q in list(sched.queues.values()):
            for entry in list(q):
                demand, item = entry[2], entry[3]
                if sched.fits(demand):
                    break  # it starts here at the next turn
                if isinstance(item, LeaseRequest) and relayed(item.owner):
                    continue
                actor = None
                if isinstance(item, Creation):
                    actor = actors.get(item.spec.actor_id)
                    if actor is None or actor.home:
                        continue
                target = self.pick(demand, now=True)
                if not target:
                    break
                q.remove(entry)
                sched.queued -= 1
                self.spill(target, demand)
                if actor is None:
                    actions.append(SpillLease(item, target))
                else:
                    actions.append(PlaceActor(actor.actor_id, target))
        return actions


def node_death(
    node_id: str, reason: str, remote: Mapping[bytes, str], actors: Mapping[bytes, Actor]
) -> list[Action]:
    """What node `node_id`'s death takes with it, as seen from this node.

    Its processes that talked to us are dropped; actors of ours it hosted
    died (they may restart here or elsewhere); actors it owned that we host
    end; objects it kept fail for whoever waits for them; every process
    connected here is told.
    """
    actions: list[Action] = [DropProcess(ident) for ident, where in remote.items() if where == node_id]
    for actor in actors.values():
        if actor.state == DEAD:
            continue
        if actor.remote == node_id:
            actions.append(ActorDied(actor.actor_id, f"its node ({node_id}) died: {reason}"))
        elif actor.home == node_id:
            actions.append(KillActor(actor.actor_id, f"the node that owns it ({node_id}) died"))
    actions.append(FailObjects(node_id, reason))
    actions.append(Broadcast(node_id, reason))
    return actions
