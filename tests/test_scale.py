"""One driver, many tasks: every result right, and nothing of them left behind.

Real processes (the `ray` fixture's cluster); the compact per-call record is
also checked with plain data. No timing or memory assertions: what must hold
is that the bookkeeping of a task goes when its result has arrived and its
refs are gone.
"""

from __future__ import annotations

import gc

from conftest import wait_for

from runtime import session
from runtime.client.records import Call
from runtime.wire.protocol import TASK, TaskSpec

QUEUED = 200_000


def whole_spec(task_id: bytes, args: bytes, return_ids: tuple, template: TaskSpec) -> TaskSpec:
    return template._replace(task_id=task_id, args=args, return_ids=return_ids)


def template_of(name: str = "f") -> TaskSpec:
    return TaskSpec(
        b"", TASK, name, b"fid", b"", (), (), (), b"d1", (("CPU", 1.0),), 3, False, b"", "cell", None
    )


def test_a_call_of_a_template_is_the_whole_spec_when_sent():
    template = template_of()
    call = Call.of(template, b"T1", b"args", (b"T1\x00",))
    assert call.spec == whole_spec(b"T1", b"args", (b"T1\x00",), template)
    assert (call.task_id, call.args, call.return_ids) == (b"T1", b"args", (b"T1\x00",))
    assert (call.shape, call.name, call.actor_id) == ((("CPU", 1.0),), "f", b"")
    assert call.retries_left == 3 and call.keep == () and call.lease is None and not call.missing
    # The template itself is shared, not copied per call.
    other = Call.of(template, b"T2", b"other", (b"T2\x00",))
    assert other.template is call.template
    assert other.spec.task_id == b"T2" and call.spec.task_id == b"T1"


def test_a_call_of_a_whole_spec_keeps_that_spec():
    spec = whole_spec(b"T9", b"a", (b"T9\x00",), template_of("g"))
    call = Call(spec, ("kept",))
    assert call.spec is spec
    assert call.keep == ("kept",) and call.name == "g" and call.task_id == b"T9"


def test_many_queued_tasks_all_correct_and_nothing_kept(ray):
    @ray.remote
    def double(x):
        return 2 * x

    other = double.options(name="other")  # a second template, interleaved with the first
    refs = [(other if i % 3 == 0 else double).remote(i) for i in range(QUEUED)]
    ready, not_ready = ray.wait(refs, num_returns=QUEUED)
    assert len(ready) == QUEUED and not not_ready
    values = ray.get(refs)
    assert values == [2 * i for i in range(QUEUED)]

    client = session.client()
    with client.lock:
        assert not client.calls, "calls kept after their results arrived"
        assert not client.submissions.tasks_by_name
        assert not any(lease.inflight for leases in client.leases.leases.values() for lease in leases)
        assert not any(client.leases.task_queues.values())
        assert not client.objects.pending and not client.objects.waiters
    assert len(client.task_templates) <= 2

    del refs, ready, values
    gc.collect()
    objects = client.objects
    assert not objects.refcounts and not objects.memstore and not objects.local_only
    # The cluster is still fine afterwards.
    assert ray.get(double.remote(21)) == 42


def test_calls_of_one_function_from_two_cells_keep_their_own_cell(ray):
    """The shared template follows the submitter's output context (a notebook's cell)."""
    client = session.client()
    lines: list[tuple] = []
    client.log_handler = lambda owner, ctx, stream, text, label: lines.append((ctx, text.strip()))
    cell = ["cell-A"]
    session.state.ctx_provider = lambda: cell[0]
    try:

        @ray.remote
        def say(x):
            print(f"said {x}")
            return x

        first = [say.remote(i) for i in range(3)]
        cell[0] = "cell-B"
        second = [say.remote(i) for i in range(3, 6)]
        assert ray.get(first + second) == list(range(6))
        want = {("cell-A", f"said {i}") for i in range(3)} | {("cell-B", f"said {i}") for i in range(3, 6)}

        wait_for(lambda: want <= set(lines), what="every print, tagged with its cell")
    finally:
        session.state.ctx_provider = None
