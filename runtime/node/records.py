"""The node's records: workers, lease requests and leases, actors, processes.

Plain data with no behaviour; the node's concerns (`pool`, `leases`,
`actors`) own collections of them and `placement` decides over them.

Life of a worker::

    STARTING ──HELLO──▶ IDLE ──grant──▶ LEASED ──return / revoke / owner gone──▶ IDLE
                          └──start actor──▶ ACTOR (until it exits)

Life of an actor (its home node keeps the record, wherever it runs)::

    PENDING ──ACTOR_READY──▶ ALIVE ──process died, restarts left──▶ RESTARTING ──▶ ALIVE
       │                      ├──died, no restarts left / kill──▶ DEAD
       │                      └──last handle gone──▶ TERMINATING ──exit──▶ DEAD
       └──constructor failed / argument failed / killed──▶ DEAD
"""

from __future__ import annotations

import time

from ..wire.protocol import TaskSpec
from .scheduler import to_units

STARTING, IDLE, LEASED, ACTOR = "starting", "idle", "leased", "actor"
PENDING, ALIVE, RESTARTING, DEAD, TERMINATING = "pending", "alive", "restarting", "dead", "terminating"


class Worker:
    __slots__ = (
        "wid",
        "pid",
        "identity",
        "path",
        "state",
        "actor_id",
        "known",
        "blocked",
        "idle_since",
        "busy_since",
        "gpu_ids",
        "lease",
        "direct",
    )

    def __init__(self, wid: int, path: str, node_id: str) -> None:
        self.wid = wid
        self.pid = 0
        self.identity = worker_identity(wid, node_id)
        self.path = path
        self.state = STARTING
        self.actor_id = b""
        self.known: set[bytes] = set()
        self.blocked = False
        self.idle_since = time.monotonic()
        self.busy_since = 0.0  # when it was lent (LEASED) or took its actor (ACTOR)
        self.gpu_ids: list[int] = []
        self.lease: Lease | None = None
        self.direct = ""  # "ip:port" of its listener for callers on other nodes ("": none)


def worker_identity(wid: int, node_id: str) -> bytes:
    """Unique in the cluster: clients of other nodes reach workers by it."""
    return b"w%d." % wid + node_id.encode()


class LeaseRequest:
    __slots__ = ("owner", "request_id", "shape", "name", "demand")

    def __init__(self, owner: bytes, request_id: int, shape: tuple, name: str) -> None:
        self.owner, self.request_id, self.shape, self.name = owner, request_id, shape, name
        self.demand = to_units(shape)


class Lease:
    __slots__ = ("lease_id", "owner", "worker", "demand", "shape", "name", "revoked")

    def __init__(self, lease_id: int, req: LeaseRequest, worker: Worker) -> None:
        self.lease_id = lease_id
        self.owner = req.owner
        self.worker = worker
        self.demand = req.demand
        self.shape = req.shape
        self.name = req.name
        self.revoked = False


class Creation:
    """An actor's creation task, waiting for its arguments or for resources."""

    __slots__ = ("spec", "demand", "waiting")

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.demand = to_units(spec.resources)
        self.waiting = 0


class Actor:
    __slots__ = (
        "actor_id",
        "create",
        "worker",
        "state",
        "restarts_left",
        "name",
        "namespace",
        "detached",
        "cause",
        "class_name",
        "owner",
        "demand",
        "watchers",
        "remote",
        "location",
        "home",
    )

    def __init__(self, create: Creation) -> None:
        opts = create.spec.options or {}
        self.actor_id = create.spec.actor_id
        self.create = create
        self.worker: Worker | None = None
        self.state = PENDING
        self.restarts_left = opts.get("max_restarts", 0)
        self.name = opts.get("name") or ""
        self.namespace = opts.get("namespace") or ""
        self.detached = opts.get("lifetime") == "detached"
        self.cause = ""
        self.class_name = create.spec.name.split(".")[0]
        self.owner = create.spec.owner
        self.demand: dict[str, int] = {}
        self.watchers: set[bytes] = set()
        self.remote = ""  # home record of an actor placed on another node: that node
        self.location: tuple = ()  # (worker identity, socket path, pid, direct address) there, once alive
        self.home = opts.get("_home", "")  # an actor hosted here for another node: that node


class Proc:
    __slots__ = ("identity", "role", "pid", "job_id", "sys_path", "stats")

    def __init__(self, identity: bytes, role: str, pid: int, job_id: int, sys_path: list) -> None:
        self.identity, self.role, self.pid, self.job_id, self.sys_path = identity, role, pid, job_id, sys_path
        self.stats: tuple[dict, dict] = ({}, {})
