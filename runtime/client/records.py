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
    """A task or actor call this process submitted and has not seen finish.

    Compact, since a driver may queue a million: the fields every call of one
    function shares (its name, function, owner, resources, retries, output
    context) live once in a `template` TaskSpec; a call keeps only its own id,
    arguments and result ids, and `spec` puts the whole TaskSpec together when
    it is sent. A call made from a whole spec (`Call(spec, keep)`, an actor
    call, a task with ObjectRef arguments) keeps that spec as its template.
    """

    __slots__ = (
        "template",
        "task_id",
        "args",
        "return_ids",
        "keep",
        "missing",
        "retries_left",
        "cancelled",
        "lease",
        "oom_kills",
    )

    def __init__(self, spec: TaskSpec, keep: tuple) -> None:
        self.template = spec
        self.task_id = spec.task_id
        self.args = spec.args
        self.return_ids = spec.return_ids
        self.keep = keep  # refs/handles inside the arguments, alive until done
        self.missing = 0
        self.retries_left = spec.max_retries
        self.cancelled = False
        self.lease: Lease | None = None
        self.oom_kills = 0  # times the memory monitor killed its worker

    @classmethod
    def of(cls, template: TaskSpec, task_id: bytes, args: bytes | str, return_ids: tuple) -> Call:
        """A call of `template`'s function with its own id, arguments and result ids (no keep)."""
        call = cls.__new__(cls)
        call.template = template
        call.task_id = task_id
        call.args = args
        call.return_ids = return_ids
        call.keep = ()
        call.missing = 0
        call.retries_left = template.max_retries
        call.cancelled = False
        call.lease = None
        call.oom_kills = 0
        return call

    @property
    def spec(self) -> TaskSpec:
        """The whole TaskSpec (made anew for a call of a template)."""
        t = self.template
        if t.task_id is self.task_id:
            return t
        return TaskSpec._make(self.fields())

    def fields(self) -> tuple:
        """The whole TaskSpec as the plain tuple an EXECUTE carries (`protocol.spec_of`)."""
        t = self.template
        if t.task_id is self.task_id:
            return tuple(t)
        return (
            self.task_id,
            t.kind,
            t.name,
            t.function_id,
            self.args,
            t.deps,
            t.contained,
            self.return_ids,
            t.owner,
            t.resources,
            t.max_retries,
            t.retry_exceptions,
            t.actor_id,
            t.ctx,
            t.options,
        )

    @property
    def shape(self) -> tuple:
        return self.template.resources

    @property
    def name(self) -> str:
        return self.template.name

    @property
    def actor_id(self) -> bytes:
        return self.template.actor_id


class Lease:
    __slots__ = ("lease_id", "shape", "link", "pid", "inflight", "asked", "idle_since", "revoked", "node")

    def __init__(self, lease_id: int, shape: tuple, link, pid: int, node: str = "") -> None:
        self.node = node  # "" for our own node
        self.lease_id = lease_id
        self.shape = shape
        self.link = link
        self.pid = pid
        self.inflight: dict[bytes, Call] = {}
        self.asked: set[bytes] = set()  # of those, the ones a steal asked back (no answer yet)
        self.idle_since = time.monotonic()
        self.revoked = False

    def forget(self, task_id: bytes) -> None:
        """A call left this lease: done, handed back, or cancelled before it ran."""
        self.inflight.pop(task_id, None)
        self.asked.discard(task_id)


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
