"""Leases: the node lends its workers to the owners of tasks.

::

    owner ──LEASE_REQUEST(shape)──▶ request(): ClusterView.route ──▶ LEASE_SPILL(node) ──▶ owner
                                        │ here
                                        ▼
                               Scheduler queue (FIFO per shape) ──Node.schedule──▶ grant(worker)
                                                                   ──▶ LEASE_GRANT ──▶ owner
    owner ──tasks──▶ worker directly (the node is not on a task's path)
    owner ──LEASE_RETURN──▶ end() ──▶ resources back, worker idle       (also: worker died)
    placement.unblock: requests wait on resources leases hold ──▶ LEASE_REVOKE ──▶ owner
    worker ──BLOCKED / UNBLOCKED──▶ lend / take back the lease's CPU (nested tasks never deadlock)

Only the bookkeeping lives here; what to grant, revoke or spill is
decided in `placement`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..wire.protocol import Kind
from .outbox import Outbox, kill
from .placement import ClusterView
from .pool import WorkerPool
from .records import LEASED, Lease, LeaseRequest, Worker
from .scheduler import Scheduler


class Leases:
    """The leases this node granted and the lease requests it keeps queued."""

    def __init__(
        self,
        node_id: str,
        scheduler: Scheduler,
        pool: WorkerPool,
        cluster: ClusterView,
        remote: Mapping[bytes, str],
        total_resources: dict[str, float],
        outbox: Outbox,
    ) -> None:
        self.scheduler, self.pool, self.cluster, self.outbox = scheduler, pool, cluster, outbox
        self.remote = remote  # clients of other nodes: their requests are never sent on
        self.total_resources = total_resources
        self.leases: dict[int, Lease] = {}
        self.next_lease = (int(node_id, 16) << 24) + 1  # unique across nodes
        self.granted = 0
        self.warned_infeasible: set[tuple] = set()  # (owner, shape) told "no node has that much"

    # -------------------------------------------------------------- messages
    def on_request(self, ident: bytes, msg: tuple) -> None:
        _, request_id, shape, name = msg
        req = LeaseRequest(ident, request_id, shape, name)
        # Spillback (as Ray's raylet): our own clients ask another node that
        # has room; requests relayed from other nodes are never sent on.
        target = self.cluster.route(self.scheduler, req.demand, may_spill=ident not in self.remote)
        if target:
            self.outbox.emit(ident, (Kind.LEASE_SPILL, request_id, shape, name, target))
            return
        self.enqueue(b"L%d" % request_id + ident, shape, req, ident, f"task {name}()", None)

    def on_return(self, ident: bytes, msg: tuple) -> None:
        lease = self.leases.get(msg[1])
        if lease is not None and lease.owner == ident:
            self.end(lease)

    def on_cancel(self, ident: bytes, msg: tuple) -> None:
        """The owner needs no more workers of this shape: forget its queued requests."""
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

    def on_blocked(self, ident: bytes, msg: tuple) -> None:
        """A leased worker waits in `get`: lend its CPU to other work meanwhile."""
        w = self.pool.by_identity.get(ident)
        if w is not None and w.lease is not None and not w.blocked:
            w.blocked = True
            cpu = w.lease.demand.get("CPU", 0)
            if cpu:
                self.scheduler.release({"CPU": cpu})
                self.outbox.reschedule()

    def on_unblocked(self, ident: bytes, msg: tuple) -> None:
        w = self.pool.by_identity.get(ident)
        if w is not None and w.lease is not None and w.blocked:
            w.blocked = False
            cpu = w.lease.demand.get("CPU", 0)
            if cpu:
                self.scheduler.acquire({"CPU": cpu})

    def on_signal(self, ident: bytes, msg: tuple) -> None:
        """The owner of a task on one of our workers cancels it (it cannot signal across machines)."""
        w = self.pool.by_identity.get(msg[1])
        if w is not None and w.lease is not None and w.lease.owner == ident and w.pid:
            kill(w.pid, msg[2])

    # ------------------------------------------------------------- lifecycle
    def grant(self, w: Worker, req: LeaseRequest, more_coming: bool = False) -> None:
        """Lend `w` to the request's owner; `more_coming`: another grant of this pass
        goes to the same owner and shape."""
        lease = Lease(self.next_lease, req, w)
        self.next_lease += 1
        self.leases[lease.lease_id] = lease
        self.granted += 1
        w.lease = lease
        self.pool.lend(w, LEASED, req.demand)
        # Room for another worker of this shape? Without it the owner's other requests wait
        # here, and it may queue a task behind a running one at once (decisions.depth_limit).
        room = more_coming or self.scheduler.fits(req.demand)
        self.outbox.emit(
            req.owner,
            (
                Kind.LEASE_GRANT,
                req.request_id,
                lease.lease_id,
                w.identity,
                w.path,
                w.pid,
                req.shape,
                room,
                w.direct,
            ),
        )

    def end(self, lease: Lease) -> None:
        """The lease is over: its resources come back, its worker is idle again."""
        if self.leases.pop(lease.lease_id, None) is None:
            return
        w = lease.worker
        demand = lease.demand
        if w.blocked:
            demand = {k: v for k, v in demand.items() if k != "CPU"}
            w.blocked = False
        self.scheduler.release(demand)
        w.lease = None
        self.pool.back(w)
        self.outbox.reschedule()

    def revoke(self, lease_id: int, owner: bytes) -> None:
        self.leases[lease_id].revoked = True
        self.outbox.emit(owner, (Kind.LEASE_REVOKE, lease_id))

    def enqueue(self, key: bytes, shape: tuple, item: Any, owner: bytes, name: str, ctx: Any) -> None:
        """Queue a lease request or an actor's creation here; warn its owner if no node can run it."""
        if not self.scheduler.add(key, shape, item):
            self.warn_infeasible(owner, name, shape, ctx)
        self.outbox.reschedule()

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
        self.outbox.emit(owner, (Kind.LOG, owner, ctx, 2, text, "runtime"))

    def owner_gone(self, ident: bytes) -> None:
        """A process left: its queued requests (and creations) go; its leased workers are killed."""
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
                kill(lease.worker.pid)  # its tasks' results have nowhere to go: stop them now
