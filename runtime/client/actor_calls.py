"""Actor calls: this process's connection to each actor it calls, and the calls in order.

::

    handle.method.remote() ─▶ submit: the actor's queue (calls from one caller run in order)
        unknown ──REQUEST actor_location──▶ its home node ──ACTOR_LOCATION──▶ on_location
        alive: pump() ─▶ EXECUTE ──▶ the actor's worker directly (Unix socket or RemoteLink)
        dead:  every queued call fails with ActorDiedError (the cause the node gave)
    its worker gone ─▶ peer_closed: calls in flight run again where it restarts, in order
        (decisions.retry: max_task_retries); the others wait, as orphans, for the home node's
        word and fail with its cause (a memory kill says so) once it answers dead or restarted;
        queued ones wait for where it restarts
    kill(no_restart) ─▶ KILL_ACTOR to its home node; later calls fail here
"""

from __future__ import annotations

from ..exceptions import ActorDiedError, TaskCancelledError
from ..wire import protocol, transport
from ..wire.protocol import Kind
from . import decisions
from .decisions import Retry
from .records import ActorConn, Call, error_value
from .services import CoreServices


class ActorCalls:
    """This process's view of the actors it calls; under `Client.lock`."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core  # sending, values, the lock, results
        self.conns: dict[bytes, ActorConn] = {}

    def conn(self, actor_id: bytes) -> ActorConn:
        ac = self.conns.get(actor_id)
        if ac is None:
            ac = self.conns[actor_id] = ActorConn(actor_id)
        return ac

    def enqueue(self, call: Call) -> None:
        """A call is submitted: it takes its place in the actor's order."""
        self.conn(call.actor_id).queue.append(call)

    def pump(self, ac: ActorConn) -> None:
        """Send the calls whose arguments are here, in order; locate the actor first."""
        core = self.core
        if ac.orphans and ac.state in ("dead", "alive"):
            orphans, ac.orphans = ac.orphans, []
            for call in orphans:
                self.fail_call(ac, call)
        if ac.state == "dead":
            while ac.queue:
                self.fail_call(ac, ac.queue.popleft())
            return
        if ac.state != "alive":
            if ac.state == "unknown":
                ac.state = "locating"
                core.to_node(
                    protocol.home_of(ac.actor_id),
                    (Kind.REQUEST, 0, "actor_location", (ac.actor_id, ac.dead_pid)),
                )
            return
        while ac.queue:
            call = ac.queue[0]
            if call.missing:
                return
            ac.queue.popleft()
            if call.cancelled:
                continue
            ac.inflight[call.task_id] = call
            core.queue(ac.link, (Kind.EXECUTE, call.fields(), core.resolved(call.template), ()))

    def fail_call(self, ac: ActorConn, call: Call) -> None:
        self.core.finish_error(
            call,
            error_value(
                ActorDiedError(
                    f"actor {call.spec.name.split('.')[0]} ({ac.actor_id.hex()[:12]}) is dead: {ac.cause}"
                )
            ),
        )

    def on_location(self, msg: tuple) -> None:
        """ACTOR_LOCATION from its home node: alive at a worker, dead, or not yet."""
        _, actor_id, state, identity, path, pid, cause, node_id, address = msg
        with self.core.lock:
            ac = self.conn(actor_id)
            if state == "alive":
                link = self.core.worker_link(identity, path, node_id, address)
                if link is None:
                    ac.state = "unknown"  # it died meanwhile: ask again, once its node says so
                    ac.dead_pid = pid
                    self.pump(ac)
                    return
                ac.state, ac.link, ac.pid = "alive", link, pid
            elif state == "dead":
                ac.state, ac.cause = "dead", cause
            else:
                ac.state = "locating"  # the node tells us when it is up
                return
            self.pump(ac)

    def on_done(self, call: Call) -> None:
        ac = self.conns.get(call.actor_id)
        if ac is not None:
            ac.inflight.pop(call.task_id, None)

    def peer_closed(self, link: transport.Link) -> None:
        """An actor's worker is gone: calls in flight run again where it restarts (within
        max_task_retries, in order) or fail; queued ones go where it restarts."""
        for ac in self.conns.values():
            if ac.link is link:
                ac.link = None
                ac.state = "unknown"
                if link.direct:
                    # Its worker died, or only the connection broke: its home node knows which.
                    ac.cause = f"the connection to its worker process (pid {ac.pid}) broke"
                    ac.dead_pid = 0
                else:
                    ac.cause = f"its worker process (pid {ac.pid}) died"
                    ac.dead_pid = ac.pid
                retry = []
                for call in ac.inflight.values():
                    outcome = decisions.retry(call.retries_left, call.cancelled)
                    if isinstance(outcome, Retry):
                        call.retries_left = outcome.retries_left
                        retry.append(call)
                    elif outcome.cause == decisions.CANCELLED:
                        self.fail_call(ac, call)
                    else:
                        ac.orphans.append(call)
                ac.inflight.clear()
                ac.queue.extendleft(reversed(retry))
                if ac.queue or ac.orphans:
                    self.pump(ac)

    def kill(self, actor_id: bytes, no_restart: bool) -> None:
        core = self.core
        core.to_node(protocol.home_of(actor_id), (Kind.KILL_ACTOR, actor_id, no_restart))
        core.flush()
        if no_restart:  # later calls fail here; calls in flight fail when its socket closes
            with core.lock:
                ac = self.conn(actor_id)
                ac.state, ac.cause = "dead", "it was killed with kill()"
                self.pump(ac)

    def cancel(self, call: Call) -> None:
        """A queued call is dropped; a running actor call is not interrupted (as in Ray)."""
        ac = self.conns.get(call.actor_id)
        if ac is not None and call in ac.queue:
            ac.queue.remove(call)
            self.core.finish_error(call, error_value(TaskCancelledError(call.name)))
