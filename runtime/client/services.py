"""What the concerns of a process's core need of the `Client` that composes them.

`Outbox`, `Control`, `Objects`, `Submissions`, `Leases`, `ActorCalls`,
`Connections`, `Arrivals` and `IOLoop` each own their state; for sending, the shared
lock, the calls in flight and each other they go through the Client. They
depend on this interface, not on `core.py`, so no module of the package
imports another back.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Protocol

from ..wire import protocol, transport
from ..wire.protocol import TaskSpec
from .records import Call, Lease


class CoreServices(Protocol):
    # state shared by the concerns
    lock: threading.RLock  # submissions, leases, actor connections, arrivals
    cv: threading.Condition  # notified when values arrive
    calls: dict[bytes, Call]  # task id -> call, until done
    function_blobs: dict[bytes, tuple[bytes, list]]
    objects: Any  # its Objects, Leases, ActorCalls, Arrivals (typed loosely: they import this module)
    leases: Any
    actor_calls: Any
    arrivals: Any
    closed: bool
    node_id: str
    thread: Any  # the driver's I/O thread; None in a worker
    io: Any  # its IOLoop (the wake pipe)
    # connections
    signer: protocol.Signer
    link: Any  # our node (a Link, or a ZLink for a driver without a node)
    head_sock: Any
    head_address: str | None
    remote_driver: bool
    peers: dict[int, transport.Link]
    outq: dict[transport.Link, list]
    outbox: Any  # its Outbox (who flushes: the reader defers to one flush after its read)
    head_outbox: deque
    requests: dict[int, Future]
    control: Any  # its Control (requests to the head or the node)
    head_address: str | None
    dead_reason: str
    last_heard: float
    role: str
    job_id: int
    worker_id: int
    identity: bytes

    # sending
    def queue(self, link: transport.Link | None, msg: tuple, urgent: bool = True) -> None: ...
    def send_node(self, msg: tuple, urgent: bool = True) -> None: ...
    def to_node(self, node_id: str, msg: tuple) -> None: ...
    def flush(self) -> None: ...
    def wake(self) -> None: ...
    def next_request_id(self) -> int: ...
    def worker_link(self, identity: bytes, path: str, node_id: str = "", address: str = "") -> Any: ...
    def signal_worker(self, lease: Lease, force: bool) -> None: ...

    # calls and values
    def resolved(self, spec: TaskSpec) -> dict: ...
    def finish_error(self, call: Call, error: bytes) -> None: ...
    def forget_waiting(self, call: Call) -> None: ...
    def deps_arrived(self, object_id: bytes) -> None: ...

    # what the I/O loop hands over
    def dispatch(self, batch: list, link: transport.Link | None) -> None: ...
    def on_peer_closed(self, link: transport.Link) -> None: ...
    def mark_dead(self, reason: str) -> None: ...
    def tick(self) -> None: ...
    def auth_failed_message(self) -> str: ...
