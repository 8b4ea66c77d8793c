"""The owner's side of leases: tasks queued per resource shape, the workers leased for them.

::

    submit ─▶ arguments here? ─▶ enqueue(call) ─▶ queue per shape ─▶ dispatch(shape):
        round robin over our leases of that shape, one task each; once a grant said
        its node had no room for more, two (PIPELINE for tasks known short); after
        PATIENCE seconds without more workers, up to PIPELINE queued behind a running
        one (decisions.depth_limit, assign)
        ─▶ EXECUTE ──▶ leased worker (Unix socket, or RemoteLink through our node)
    backlog ─▶ LEASE_REQUEST ──▶ node ─▶ LEASE_GRANT: on_grant (a lease; steal half of a
        busy worker's queue: decisions.steal) │ LEASE_SPILL: on_spill (ask the node it names)
    DONE ─▶ on_done: retry (retryable, decisions.retry) or finish; the lease gets the next
        task (a full one: half a pipeline at once, decisions.refill), or an idle one is
        returned after LEASE_IDLE, or at once when revoked
    REJECTED (a worker blocked in get, or a steal's answer) ─▶ on_rejected: back to the
        front of the queue, if the task is still on that worker
    worker gone ─▶ peer_closed: its tasks retried (max_retries) or WorkerCrashedError
    LEASE_KILLED (the node's memory monitor, sent before its kill) ─▶ on_killed: the
        tasks of that worker are retried after decisions.oom_delay or OutOfMemoryError
    NODE_DEAD ─▶ on_node_dead: requests spilled there are void (decisions.void_requests)

The node is off the per-task path: it only lends workers. What to grant,
revoke or spill is the node's decision (`runtime.node.placement`); how deep
to fill a worker, how many more to ask for, when to steal and whether to
retry are this process's, apart from I/O in `decisions.py`.
"""

from __future__ import annotations

import time
from collections import deque

from ..exceptions import OutOfMemoryError, TaskCancelledError, WorkerCrashedError
from ..wire import transport
from ..wire.protocol import Kind
from . import decisions
from .decisions import Retry
from .records import Call, Lease, error_value
from .services import CoreServices


class Leases:
    """This process's task queues per shape and the leases it holds; under `Client.lock`."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core  # sending, values, the lock, results
        self.task_queues: dict[tuple, deque[Call]] = {}
        self.leases: dict[tuple, list[Lease]] = {}
        self.lease_requests: dict[tuple, int] = {}
        self.requested_at: dict[tuple, float] = {}  # when the oldest open request was sent
        self.no_room: set[tuple] = set()  # shapes whose last grant said its node had no room for more
        self.lease_by_id: dict[int, Lease] = {}
        self.spilled: dict[tuple, dict[str, int]] = {}  # shape -> node -> lease requests sent there
        self.killed: dict[int, str] = {}  # lease id -> why the node's memory monitor killed its worker
        self.delayed: list[tuple[float, Call]] = []  # (when, call): retried after a memory kill
        # Running tasks cancelled with SIGINT, and when it was last sent: sent again while the
        # task still runs (a SIGINT that came just before the worker started it is lost).
        self.interrupting: dict[bytes, tuple[Call, float]] = {}
        # Shapes whose last dispatch left tasks queued with every lease at PIPELINE: until the
        # next dispatch (a lease's task done, a grant, a retry, a tick) none can take more.
        self.full: set[tuple] = set()
        self.task_s: dict[tuple, float] = {}  # shape -> its burst's time per task (decisions.task_time)

    def enqueue(self, call: Call) -> None:
        """A task whose arguments are all here: run it on a leased worker."""
        shape = call.template.resources
        queue = self.task_queues.get(shape)
        if not queue and shape in self.task_s and not any(x.inflight for x in self.leases.get(shape, ())):
            # A new burst of this shape: how deep to fill is decided by its own tasks' times
            # (a burst of long tasks after short ones of the same shape is not dealt deep).
            del self.task_s[shape]
        if not queue and not self.lease_requests.get(shape):
            # Nothing queued, no workers asked for: a free worker takes it now (a sync task).
            lease = decisions.free_lease(self.leases.get(shape, ()))
            if lease is not None:
                decisions.give(lease, call)
                self.full.discard(shape)
                self.requested_at.pop(shape, None)  # (as dispatch's cancel_requests)
                self.execute(lease, call)
                return
        if queue is None:
            queue = self.task_queues[shape] = deque()
        elif queue and shape in self.full and self.lease_requests.get(shape, 0) >= decisions.MAX_REQUESTS:
            # Behind others that wait: every lease holds PIPELINE and every request is out, so
            # dispatch could neither send it nor ask for more (a million queued: ~4 µs each).
            queue.append(call)
            return
        queue.append(call)
        self.dispatch(shape)

    def dispatch(self, shape: tuple) -> None:
        core = self.core
        queue = self.task_queues.get(shape)
        if not queue:
            self.cancel_requests(shape)
            return
        leases = [lease for lease in self.leases.get(shape, ()) if not lease.revoked]
        # The last grant's node had no room, and no request of ours waits at another node.
        node_full = shape in self.no_room and not any(self.spilled.get(shape, {}).values())
        limit = decisions.depth_limit(
            self.requested_at.get(shape), time.monotonic(), node_full, self.task_s.get(shape)
        )
        for lease, call in decisions.assign(queue, leases, limit):
            self.execute(lease, call)
        if queue and limit == decisions.PIPELINE:
            self.full.add(shape)  # every lease holds all it may: enqueue need not dispatch
        else:
            self.full.discard(shape)
        # Tasks queued behind a running one (here or at a worker) could run on
        # another worker: ask the node for more; new workers steal their share.
        backlog = decisions.backlog(len(queue), leases)
        if not backlog:
            self.cancel_requests(shape)
            return
        asked = self.lease_requests.get(shape, 0)
        want = decisions.more_leases(backlog, asked)
        if want > 0:
            name = (queue[0] if queue else next(iter(leases[0].inflight.values()))).name
            if not asked:
                self.requested_at[shape] = time.monotonic()
                for lease in decisions.idle_elsewhere(self.leases, shape):
                    self.return_lease(lease)
            self.lease_requests[shape] = asked + want
            for _ in range(want):
                core.send_node((Kind.LEASE_REQUEST, core.next_request_id(), shape, name))

    def execute(self, lease: Lease, call: Call) -> None:
        """Send `call` to its leased worker (its function first, the first time)."""
        core = self.core
        template = call.template  # its function and its arguments' refs are the call's
        self.send_function(lease.link, template.function_id)
        resolved = core.resolved(template) if template.deps else {}
        core.queue(lease.link, (Kind.EXECUTE, call.fields(), resolved, ()))

    def send_function(self, link: transport.Link, function_id: bytes) -> None:
        """A worker gets a function's code with its first task (no round trip to the node)."""
        known = link.state
        if known is None:
            known = link.state = set()
        if function_id not in known:
            known.add(function_id)
            blob = self.core.function_blobs.get(function_id)
            if blob is not None:
                self.core.queue(link, (Kind.FUNC, function_id, blob[0], blob[1]))

    def cancel_requests(self, shape: tuple) -> None:
        """Nothing left to run for this shape: lease requests still waiting are void. Whether
        its node had room stays known while we hold its leases: the next burst fills them
        at once (`decisions.depth_limit`) instead of one task per round trip."""
        self.requested_at.pop(shape, None)
        if not self.leases.get(shape):
            self.no_room.discard(shape)
        if self.lease_requests.get(shape):
            self.lease_requests[shape] = 0
            self.core.send_node((Kind.LEASE_CANCEL, shape))
            for node_id in self.spilled.pop(shape, {}):
                self.core.to_node(node_id, (Kind.LEASE_CANCEL, shape))

    # ------------------------------------------------------------ from the node
    def on_spill(self, msg: tuple) -> None:
        """Our node has no room: ask the node it named."""
        _, req_id, shape, name, node_id = msg
        with self.core.lock:
            if not self.lease_requests.get(shape):
                return  # cancelled meanwhile
            counts = self.spilled.setdefault(shape, {})
            counts[node_id] = counts.get(node_id, 0) + 1
            self.core.to_node(node_id, (Kind.LEASE_REQUEST, req_id, shape, name))

    def on_node_dead(self, node_id: str) -> None:
        """Requests we sent to a node that died are void: ask again (under the lock)."""
        for shape, n in decisions.void_requests(self.spilled, node_id).items():
            self.lease_requests[shape] = max(0, self.lease_requests.get(shape, 0) - n)
            self.dispatch(shape)

    def on_grant(self, msg: tuple, node_id: str = "") -> None:
        _, _req, lease_id, identity, path, pid, shape, room, address = msg
        core = self.core
        with core.lock:
            self.lease_requests[shape] = max(0, self.lease_requests.get(shape, 0) - 1)
            if room:
                self.no_room.discard(shape)
            else:
                self.no_room.add(shape)
            if node_id:
                counts = self.spilled.get(shape)
                if counts and counts.get(node_id):
                    counts[node_id] -= 1
            queue = self.task_queues.get(shape)
            busy = decisions.backlog(len(queue) if queue else 0, self.leases.get(shape, ())) > 0
            link = core.worker_link(identity, path, node_id, address) if busy else None
            if link is None:
                core.to_node(node_id, (Kind.LEASE_RETURN, lease_id))
                if not self.task_queues.get(shape):
                    self.cancel_requests(shape)
                else:
                    self.dispatch(shape)  # that worker just died: ask again
                return
            lease = Lease(lease_id, shape, link, pid, node_id)
            self.leases.setdefault(shape, []).append(lease)
            self.lease_by_id[lease_id] = lease
            self.dispatch(shape)
            if not lease.inflight:
                self.steal_for(lease)

    def return_lease(self, lease: Lease) -> None:
        leases = self.leases.get(lease.shape)
        if leases and lease in leases:
            leases.remove(lease)
        if not leases and not self.lease_requests.get(lease.shape):
            self.no_room.discard(lease.shape)  # the next grant says again
        self.lease_by_id.pop(lease.lease_id, None)
        self.core.to_node(lease.node, (Kind.LEASE_RETURN, lease.lease_id))

    def on_revoke(self, lease_id: int) -> None:
        with self.core.lock:
            lease = self.lease_by_id.get(lease_id)
            if lease is not None:
                lease.revoked = True
                if not lease.inflight:
                    self.return_lease(lease)

    # ----------------------------------------------------------- from workers
    def on_done(self, call: Call, retryable: bool, took: float) -> bool:
        """A task's DONE (it ran `took` seconds on its worker): free its place on its lease.
        True if it is queued again (a retry)."""
        lease = call.lease
        if lease is not None:
            self.task_s[lease.shape] = decisions.task_time(self.task_s.get(lease.shape), took)
            lease.forget(call.task_id)  # (a steal may have asked for it too late: it ran)
            if not lease.inflight:
                lease.idle_since = time.monotonic()
        call.lease = None
        if retryable:
            outcome = decisions.retry(call.retries_left, call.cancelled)
            if isinstance(outcome, Retry):
                call.retries_left = outcome.retries_left
                self.task_queues.setdefault(call.shape, deque()).appendleft(call)
                self.dispatch(call.shape)
                return True
        return False

    def next_for(self, lease: Lease) -> None:
        """A task of `lease` finished: give it the next one, or give it back if revoked."""
        if lease.revoked and not lease.inflight:
            self.return_lease(lease)
        elif decisions.refill(len(lease.inflight), lease.shape in self.full):
            self.dispatch(lease.shape)
            if len(lease.inflight) <= 1:  # its last task, or none: nothing more here for it
                self.steal_for(lease)

    def steal_for(self, thief: Lease) -> None:
        """A worker on its last task or idle while others have tasks queued behind a
        running one: take half. Not for a revoked lease: it goes back once its task ends."""
        leases = self.leases.get(thief.shape, [])
        if len(leases) < 2 or thief.revoked or thief not in leases:
            return  # (a sync loop on one worker comes here after every task)
        steal = decisions.steal(thief, leases)
        if steal is None:
            return
        steal.victim.asked.update(steal.task_ids)
        # First in line when they come back: the victim's own DONE may come in the same
        # batch as its REJECTED, and at the same depth the first lease gets the task.
        leases.remove(thief)
        leases.insert(0, thief)
        for task_id in steal.task_ids:
            self.core.queue(steal.victim.link, (Kind.CANCEL, task_id, "steal"))  # answered by REJECTED

    def on_rejected(self, task_ids: list, link: transport.Link | None = None) -> None:
        """A worker hands back tasks it had not started (it blocked in get(), or answers a
        steal). Only the worker a task is on now may: a late answer from one it left must
        not take it from the next."""
        with self.core.lock:
            shapes = set()
            for task_id in reversed(task_ids):
                call = self.core.calls.get(task_id)
                if call is None or call.lease is None:
                    continue
                if link is not None and call.lease.link is not link:
                    continue
                call.lease.forget(task_id)
                call.lease = None
                self.task_queues.setdefault(call.shape, deque()).appendleft(call)
                shapes.add(call.shape)
            for shape in shapes:
                self.dispatch(shape)

    def peer_closed(self, link: transport.Link) -> None:
        """A leased worker is gone: retry its tasks, or fail them when retries ran out."""
        finish_error = self.core.finish_error
        for shape, leases in list(self.leases.items()):
            for lease in [x for x in leases if x.link is link]:
                leases.remove(lease)
                self.lease_by_id.pop(lease.lease_id, None)
                if link.direct:  # its worker may live on (only the connection broke): give it back
                    self.core.to_node(lease.node, (Kind.LEASE_RETURN, lease.lease_id))
                oom = self.killed.pop(lease.lease_id, "")
                for call in lease.inflight.values():
                    call.lease = None
                    outcome = decisions.retry(call.retries_left, call.cancelled)
                    if isinstance(outcome, Retry):
                        call.retries_left = outcome.retries_left
                        if oom:
                            self.retry_later(call)
                        else:
                            self.task_queues.setdefault(shape, deque()).appendleft(call)
                    elif outcome.cause == decisions.CANCELLED:
                        finish_error(call, error_value(TaskCancelledError(call.spec.name)))
                    elif oom:
                        finish_error(
                            call,
                            error_value(
                                OutOfMemoryError(
                                    f"{call.spec.name}() ran out of memory and its retries ran out "
                                    f"(max_retries={call.spec.max_retries}): {oom}"
                                )
                            ),
                        )
                    else:
                        finish_error(
                            call,
                            error_value(
                                WorkerCrashedError(
                                    f"the worker running {call.spec.name}() (pid {lease.pid}) died and "
                                    f"its retries ran out (max_retries={call.spec.max_retries}). If it "
                                    "was killed by memory pressure, give it more memory or smaller "
                                    "inputs; raise max_retries for flaky machines."
                                )
                            ),
                        )
                lease.inflight.clear()
                self.dispatch(shape)

    def on_killed(self, lease_id: int, reason: str) -> None:
        """The node's memory monitor is killing this lease's worker: its socket closes next."""
        with self.core.lock:
            self.killed[lease_id] = reason

    def retry_later(self, call: Call) -> None:
        """A task killed for memory runs again once memory had time to fall (backoff)."""
        delay = decisions.oom_delay(call.oom_kills)
        call.oom_kills += 1
        self.delayed.append((time.monotonic() + delay, call))

    # ------------------------------------------------------------ from the user
    def cancel(self, call: Call, force: bool) -> None:
        """Cancel a task: queued here, queued at its worker, or running there."""
        core = self.core
        spec = call.spec
        call.cancelled = True
        lease = call.lease
        if lease is not None:
            running = next(iter(lease.inflight)) == spec.task_id  # a worker runs them in order
            if force or running:
                if not force:
                    # Sent before the signal: a worker that has not started the task yet
                    # ignores the SIGINT, and finds this when it starts it.
                    core.queue(lease.link, (Kind.CANCEL, spec.task_id, "interrupt"))
                    core.flush()
                    self.interrupting[spec.task_id] = (call, time.monotonic())
                core.signal_worker(lease, force)
            else:  # still queued in the worker: it will skip it
                lease.forget(spec.task_id)
                self.full.discard(lease.shape)  # room on that lease: the next enqueue dispatches
                call.lease = None
                core.queue(lease.link, (Kind.CANCEL, spec.task_id, "drop"))
                core.finish_error(call, error_value(TaskCancelledError(spec.name)))
            return
        queue = self.task_queues.get(call.shape)
        if queue is not None and call in queue:
            queue.remove(call)
        self.delayed = [(when, c) for when, c in self.delayed if c is not call]
        core.forget_waiting(call)
        core.finish_error(call, error_value(TaskCancelledError(spec.name)))

    def tick(self, now: float) -> None:
        """Every ~100 ms: queue waiting tasks behind running ones; give back idle leases; run
        again the tasks whose memory backoff ended."""
        if self.delayed:
            due = [call for when, call in self.delayed if when <= now]
            self.delayed = [(when, call) for when, call in self.delayed if when > now]
            for call in due:
                self.task_queues.setdefault(call.shape, deque()).append(call)
        for shape, queue in list(self.task_queues.items()):
            if queue:  # no more workers came: queue behind the running tasks
                self.dispatch(shape)
        for leases in list(self.leases.values()):
            for lease in decisions.expired(leases, now):
                self.return_lease(lease)
        for task_id, (call, sent) in list(self.interrupting.items()):
            lease = call.lease
            if lease is None or task_id not in lease.inflight:
                del self.interrupting[task_id]  # over (or handed back): nothing to interrupt
            elif decisions.interrupt_again(sent, now, len(lease.inflight) == 1):
                self.interrupting[task_id] = (call, now)
                self.core.signal_worker(lease, False)

    def return_all(self) -> None:
        for leases in self.leases.values():
            for lease in list(leases):
                self.return_lease(lease)
