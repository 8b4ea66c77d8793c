"""Control-plane requests: calls to the head or to our node, and their replies.

::

    request(op, *args) ──REQUEST(req_id, op, args)──▶ the head (ZeroMQ, I/O thread)
        │   or, with no head socket (workers): ──▶ our node, which relays it ("relay")
        ├─ a driver waits on a Future the I/O thread completes
        └─ a worker (no I/O thread) reads the sockets itself until the reply is there
    REPLY(req_id, ok, payload) ─▶ on_reply ─▶ the Future ─▶ the payload, or raised
    the cluster gone / our key rejected ─▶ fail_all: every waiter learns why at once

Not on a task's path: names, nodes, snapshots, placement groups.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import Future
from typing import Any

from ..exceptions import ClusterGoneError, ConnectionFailedError
from ..wire.protocol import Kind
from .outbox import HEAD, NODE
from .services import CoreServices


class Control:
    """The requests of one process waiting for their replies."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core  # sending, the I/O loop, why the cluster is gone
        self.requests: dict[int, Future] = {}
        self._req_ids = itertools.count(1)

    def next_request_id(self) -> int:
        return next(self._req_ids)

    def request(self, op: str, *args: Any, dest: int = HEAD, timeout: float | None = 30.0) -> Any:
        """A control-plane call to the head (relayed by the node for workers) or the node."""
        core = self.core
        if dest == HEAD and core.head_sock is None:
            op, args = "relay", (op, args)
            dest = NODE
        req_id = next(self._req_ids)
        fut: Future = Future()
        self.requests[req_id] = fut
        core.send(dest, (Kind.REQUEST, req_id, op, args))
        if core.thread is None:  # a worker: read until the reply arrives
            deadline = None if timeout is None else time.monotonic() + timeout
            while not fut.done() and not core.dead_reason:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                core.io.read_or_wait(0.05 if left is None else min(left, 0.05), fut.done)
        try:
            ok, payload = fut.result(0 if core.thread is None else timeout)
        except TimeoutError:
            self.requests.pop(req_id, None)
            if core.signer.auth_failed:
                raise ConnectionFailedError(self.auth_failed_message()) from None
            if core.dead_reason:
                raise ClusterGoneError(core.dead_reason) from None
            if dest == NODE and op != "relay":
                raise ConnectionFailedError(
                    f"the cluster did not answer {op!r} within {timeout} s; is it "
                    "running? Check with `nbcluster status`."
                ) from None
            name = args[0] if op == "relay" else op
            raise ConnectionFailedError(
                f"the head did not answer {name!r} within {timeout} s: it may be down or "
                "restarting. Tasks and actor calls keep running without it; retry once "
                "`nbcluster status` answers (a head killed while its node runs comes back with its "
                "state: `nbcluster start --head` on the same port)."
            ) from None
        if not ok:
            raise payload
        return payload

    def on_reply(self, msg: tuple) -> None:
        """REPLY: its request's Future gets (ok, payload)."""
        fut = self.requests.pop(msg[1], None)
        if fut is not None and not fut.done():
            fut.set_result((msg[2], msg[3]))

    def fail_all(self, error: BaseException) -> None:
        """Every request still waiting fails with `error` (the cluster is gone, or our key)."""
        for fut in list(self.requests.values()):
            if not fut.done():
                fut.set_result((False, error))

    def auth_failed_message(self) -> str:
        return (
            f"authentication failed: the cluster at {self.core.head_address} rejected our key. "
            "Use the key of that cluster (its connection file, --token-file or token=...)."
        )
