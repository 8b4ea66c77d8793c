"""The records of a process's core: its calls, its leases, its actors' connections."""

from __future__ import annotations

import time
from collections import deque

from ..wire import protocol, transport
from ..wire.protocol import TaskSpec


def error_value(exc: BaseException) -> bytes:
    """An exception as a result's (error) value on the wire."""
    import pickle

    return pickle.dumps(exc, protocol.PROTOCOL)


class Countdown:
    """Values one fetch() still waits for (compared by identity: each waiter is its own)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


class Call:
    """A task or actor call this process submitted and has not seen finish."""

    __slots__ = ("spec", "keep", "missing", "retries_left", "cancelled", "lease", "shape", "oom_kills")

    def __init__(self, spec: TaskSpec, keep: tuple) -> None:
        self.spec = spec
        self.keep = keep  # refs/handles inside the arguments, alive until done
        self.missing = 0
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.lease: Lease | None = None
        self.shape = spec.resources
        self.oom_kills = 0  # times the memory monitor killed its worker


class Lease:
    __slots__ = ("lease_id", "shape", "link", "pid", "inflight", "idle_since", "revoked", "node")

    def __init__(self, lease_id: int, shape: tuple, link, pid: int, node: str = "") -> None:
        self.node = node  # "" for our own node
        self.lease_id = lease_id
        self.shape = shape
        self.link = link
        self.pid = pid
        self.inflight: dict[bytes, Call] = {}
        self.idle_since = time.monotonic()
        self.revoked = False


class ActorConn:
    """This process's view of one actor: where it is and the calls for it."""

    __slots__ = ("actor_id", "state", "link", "pid", "queue", "inflight", "orphans", "cause", "dead_pid")

    def __init__(self, actor_id: bytes) -> None:
        self.actor_id = actor_id
        self.state = "unknown"  # unknown -> locating -> alive | dead
        self.link: transport.Link | None = None
        self.pid = 0
        self.queue: deque[Call] = deque()
        self.inflight: dict[bytes, Call] = {}
        self.orphans: list[Call] = []  # in flight when its process died, no retries: fail with the cause
        self.cause = ""
        self.dead_pid = 0  # the process we saw die: its node may not know yet
