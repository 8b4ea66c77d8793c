"""Submissions: the calls this process made, from `.remote()` until their results arrive.

::

    .remote() ─▶ submit ─▶ Call (calls{}) ─▶ its ObjectRef arguments all here?
        no:  dep_waiters[arg] ─▶ SUBSCRIBE ... arrived() ─▶ deps_arrived ─▶ ready
        ready: an argument is an error ─▶ finish_error (the call fails with it)
               a task ─▶ Leases.enqueue          an actor call ─▶ ActorCalls.pump
    actor creation ─▶ submit_to_node ─▶ SUBMIT ──▶ our node (it places the actor)
    DONE ─▶ on_done ─▶ the lease's slot freed (a retry goes back to the queue) ─▶ finish:
        results into the memstore (Objects.keep_results), waiters woken ─▶ the lease's next task
    cancel() ─▶ Leases.cancel / ActorCalls.cancel

Every method runs under `Client.lock` (submit and cancel take it).
"""

from __future__ import annotations

import os

from ..wire import transport
from ..wire.protocol import Kind, TaskSpec
from .outbox import NODE
from .records import Call
from .services import CoreServices


class Submissions:
    """The calls in flight (until done) and the calls waiting for an argument."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core  # sending, the lock and the condition waiters sleep on
        self.objects = core.objects  # values, subscriptions, results
        self.memstore = core.objects.memstore
        self.leases = core.leases  # where tasks go
        self.actor_calls = core.actor_calls  # where actor calls go
        self.calls: dict[bytes, Call] = {}  # task id -> call, until done
        self.dep_waiters: dict[bytes, list[Call]] = {}  # object id -> calls waiting for it
        self.tasks_by_name: dict[str, int] = {}  # tasks (not actor calls) in `calls`, per name

    def task_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(running, queued) tasks per name, for STATS: from the counts kept as calls come
        and go and the leases' calls in flight, without a pass over every call."""
        running: dict[str, int] = {}
        for leases in self.leases.leases.values():
            for lease in leases:
                for call in lease.inflight.values():
                    name = call.template.name
                    running[name] = running.get(name, 0) + 1
        queued = {}
        for name, n in self.tasks_by_name.items():
            left = n - running.get(name, 0)
            if left > 0:
                queued[name] = left
        return running, queued

    def submit(self, spec: TaskSpec, keep: tuple = ()) -> None:
        """Run a task or an actor call: straight to a worker once its arguments exist."""
        self.submit_call(Call(spec, keep))

    def submit_call(self, call: Call) -> None:
        """`submit` for a call already made (`Call.of` a template: a task without ObjectRef
        arguments, the compact kind a driver queues by the million)."""
        core, objects = self.core, self.objects
        spec = call.template  # its deps, contained refs, actor and name
        if spec.contained:
            objects.promote(spec.contained)
        with core.lock:
            self.calls[call.task_id] = call
            objects.pending.update(call.return_ids)
            if spec.actor_id:
                self.actor_calls.enqueue(call)
            else:
                counts = self.tasks_by_name
                counts[spec.name] = counts.get(spec.name, 0) + 1
            for dep in spec.deps:
                if dep not in self.memstore:
                    waiters = self.dep_waiters.setdefault(dep, [])
                    if call not in waiters:
                        waiters.append(call)
                        call.missing += 1
            if call.missing:
                objects.subscribe(spec.deps)
            else:
                self.ready(call)

    def submit_to_node(self, spec: TaskSpec) -> None:
        """An actor's creation: the node places it; it needs the argument values."""
        self.objects.promote(spec.deps)
        self.objects.promote(spec.contained)
        self.core.send(NODE, (Kind.SUBMIT, spec))

    def deps_arrived(self, object_id: bytes) -> None:
        """A value arrived: calls that waited for it as their last argument go on."""
        waiting = self.dep_waiters.pop(object_id, None)
        if waiting:
            for call in waiting:
                call.missing -= 1
                if call.missing == 0:
                    self.ready(call)

    def ready(self, call: Call) -> None:
        """Every argument of `call` is here: fail it with an argument's error, or send it."""
        spec = call.template
        for dep in spec.deps:
            is_error, value = self.memstore[dep]
            if is_error:
                self.finish_error(call, value)
                return
        if spec.actor_id:
            self.actor_calls.pump(self.actor_calls.conns[spec.actor_id])
        else:
            self.leases.enqueue(call)

    def resolved(self, spec: TaskSpec) -> dict:
        """The values of a call's top-level ObjectRef arguments, as its worker receives them."""
        memstore = self.memstore
        return {dep: memstore[dep] for dep in spec.deps}

    def finish(self, call: Call, results: list, notify: bool = True) -> None:
        """Results of a call arrived (from its worker, or made up here on failure); `notify`
        False when the caller wakes the waiters itself (`Client.dispatch`, once a batch)."""
        template = call.template
        if self.calls.pop(call.task_id, None) is not None and not template.actor_id:
            counts = self.tasks_by_name
            left = counts[template.name] - 1
            if left:
                counts[template.name] = left
            else:
                del counts[template.name]
        if isinstance(call.args, str):  # large arguments went through shared memory
            try:
                os.unlink(call.args)
            except OSError:
                pass
        # Kept under our own id objects, not the copies unpickled from the message: one
        # bytes object per result instead of two (a million results held: ~50 MB less).
        self.objects.keep_results(results, call.return_ids)
        if notify:
            cv = self.core.cv
            with cv:
                cv.notify_all()

    def finish_error(self, call: Call, error: bytes) -> None:
        self.finish(call, [(rid, True, error, len(error), ()) for rid in call.return_ids])

    def on_done(self, msg: tuple, link: transport.Link | None) -> bool:
        """DONE from a worker: the call's results, or a retry (Leases.on_done decides).
        True if results were kept (`Client.dispatch` wakes the waiters after the batch)."""
        _, task_id, results, retryable, took = msg
        with self.core.lock:
            call = self.calls.get(task_id)
            if call is None:
                return False
            lease = call.lease
            actor = call.template.actor_id
            if actor:
                self.actor_calls.on_done(call)
            elif self.leases.on_done(call, retryable, took):
                return False  # queued again: a retry
            self.finish(call, results, notify=False)
            if not actor and lease is not None:
                self.leases.next_for(lease)
        return True

    def forget_waiting(self, call: Call) -> None:
        """A cancelled call no longer waits for its arguments."""
        for waiters in self.dep_waiters.values():
            if call in waiters:
                waiters.remove(call)

    def cancel(self, task_id: bytes, force: bool) -> None:
        with self.core.lock:
            call = self.calls.get(task_id)
            if call is None:
                return
            if call.template.actor_id:
                self.actor_calls.cancel(call)
            else:
                self.leases.cancel(call, force)
