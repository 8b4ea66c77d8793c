"""The runtime's decisions with plain data: no process, no socket, no clock.

`runtime.node.placement` takes events (the queue, idle workers, leases, the
cluster view, a death) and returns actions; the daemon executes them.
`runtime.client.decisions` does the same for a task's owner (pipelining,
lease requests, stealing, retries) and `runtime.head.membership` for the
head (which nodes are dead). The real-process tests (test_api, test_faults,
test_multinode) cover the wiring.
"""

from __future__ import annotations

import random
from collections import deque

from runtime.client import decisions
from runtime.client.decisions import CANCELLED, CRASHED, MAX_REQUESTS, PIPELINE, Fail, Retry, Steal
from runtime.client.records import Call
from runtime.client.records import Lease as ClientLease
from runtime.head import membership
from runtime.head.membership import NodeDead
from runtime.node import placement
from runtime.node.placement import (
    ActorDied,
    Broadcast,
    ClusterView,
    DropProcess,
    EndLease,
    FailObjects,
    KillActor,
    PlaceActor,
    Revoke,
    SpawnWorkers,
    SpillLease,
    Start,
)
from runtime.node.records import (
    ALIVE,
    DEAD,
    PENDING,
    TERMINATING,
    Actor,
    Creation,
    Lease,
    LeaseRequest,
    Worker,
)
from runtime.node.scheduler import Scheduler, to_units
from runtime.wire.protocol import ACTOR_CREATE, TASK, TaskSpec

ME = "aaaa0001"


def request(owner: bytes, n: int, cpus: float = 1.0, **resources: float) -> LeaseRequest:
    shape = tuple(sorted({"CPU": cpus, **resources}.items()))
    return LeaseRequest(owner, n, shape, f"f{n}")


def queue(sched: Scheduler, req: LeaseRequest) -> bool:
    return sched.add(b"L%d" % req.request_id + req.owner, req.shape, req)


def lease(lease_id: int, owner: bytes, wid: int = 1) -> Lease:
    return Lease(lease_id, request(owner, lease_id), Worker(wid, f"/w{wid}", ME))


def creation(actor_id: bytes, owner: bytes = b"d1", **options) -> Creation:
    spec = TaskSpec(
        task_id=b"t" + actor_id,
        kind=ACTOR_CREATE,
        name="Counter.__init__",
        function_id=b"f",
        args=b"",
        deps=(),
        contained=(),
        return_ids=(),
        owner=owner,
        resources=(("CPU", 1.0),),
        max_retries=0,
        retry_exceptions=False,
        actor_id=actor_id,
        ctx=None,
        options=options,
    )
    return Creation(spec)


def actor(actor_id: bytes, state: str = ALIVE, **options) -> Actor:
    a = Actor(creation(actor_id, **options))
    a.state = state
    return a


def node(node_id: str, total: dict, available: dict | None = None, alive: bool = True) -> dict:
    return {
        "node_id": node_id,
        "resources_total": total,
        "resources_available": total if available is None else available,
        "alive": alive,
    }


# ------------------------------------------------------------ start, unblock


def test_idle_workers_take_the_oldest_requests_that_fit():
    sched = Scheduler({"CPU": 2})
    reqs = [request(b"d1", i) for i in range(3)]
    for r in reqs:
        assert queue(sched, r)
    starts = placement.start(sched, idle=5)
    assert starts == [Start(reqs[0]), Start(reqs[1])]  # two CPUs: the third waits
    assert sched.queued == 1 and sched.available == {"CPU": 0}


def test_a_grant_followed_by_another_of_its_pass_does_not_say_the_node_is_full():
    """All of a pass's resources are taken before its first grant goes out: an owner told
    "no room" by the first would queue a task behind a running one, with a worker on its way."""
    sched = Scheduler({"CPU": 3})
    reqs = [request(b"d1", 0), request(b"d2", 1), request(b"d1", 2)]
    for r in reqs:
        assert queue(sched, r)
    starts = placement.start(sched, idle=3)
    assert placement.more_coming(starts) == [True, False, False]


def test_start_is_limited_by_idle_workers():
    sched = Scheduler({"CPU": 4})
    for i in range(3):
        queue(sched, request(b"d1", i))
    assert len(placement.start(sched, idle=1)) == 1
    assert sched.queued == 2


def test_runnable_work_without_idle_workers_forks_workers():
    sched = Scheduler({"CPU": 4})
    for i in range(3):
        queue(sched, request(b"d1", i))
    actions = placement.unblock(sched, idle=0, starting=1, workers=2, max_workers=32, leases=[])
    assert actions == [SpawnWorkers(2)]  # three waiting, one already starting


def test_forking_stops_at_the_worker_limit():
    sched = Scheduler({"CPU": 8})
    for i in range(5):
        queue(sched, request(b"d1", i))
    assert placement.unblock(sched, 0, 0, workers=31, max_workers=32, leases=[]) == [SpawnWorkers(1)]
    assert placement.unblock(sched, 0, 0, workers=32, max_workers=32, leases=[]) == []


def test_leases_of_owners_that_wait_for_nothing_are_revoked():
    sched = Scheduler({"CPU": 1})
    sched.acquire({"CPU": 10_000})  # held by the leases below
    queue(sched, request(b"d2", 7))
    held = [lease(1, b"d1"), lease(2, b"d2"), lease(3, b"d3")]
    held[2].revoked = True  # asked already
    actions = placement.unblock(sched, idle=1, starting=0, workers=3, max_workers=32, leases=held)
    assert actions == [Revoke(1, b"d1")]  # d2 waits itself; d3 was told


def test_nothing_to_unblock_when_the_queue_is_empty():
    assert placement.unblock(Scheduler({"CPU": 1}), 0, 0, 1, 32, [lease(1, b"d1")]) == []


def test_a_request_that_fits_here_stays_here():
    view = ClusterView(ME, random.Random(0))
    view.update([node(ME, {"CPU": 2}), node("b", {"CPU": 8})])
    assert view.route(Scheduler({"CPU": 2}), to_units({"CPU": 1}), may_spill=True) == ""


# ------------------------------------------------------------------ spillback


def test_spillback_picks_a_node_with_room_and_counts_what_it_sent():
    view = ClusterView(ME, random.Random(0))
    view.update([node(ME, {"CPU": 1}), node("b", {"CPU": 2}), node("c", {"CPU": 2}, {"CPU": 0})])
    sched = Scheduler({"CPU": 1})
    sched.acquire(to_units({"CPU": 1}))  # this node is busy
    demand = to_units({"CPU": 1})
    assert view.route(sched, demand, may_spill=True) == "b"  # c has no room now
    assert view.route(sched, demand, may_spill=True) == "b"
    assert view.spilled == {"b": {"CPU": 20_000}}
    assert view.route(sched, demand, may_spill=True) == ""  # b is full with what we sent
    view.update([node("b", {"CPU": 2})])
    assert view.spilled == {}


def test_relayed_requests_are_never_sent_on():
    view = ClusterView(ME)
    view.update([node("b", {"CPU": 8})])
    sched = Scheduler({"CPU": 1})
    sched.acquire(to_units({"CPU": 1}))
    assert view.route(sched, to_units({"CPU": 1}), may_spill=False) == ""


def test_infeasible_here_goes_to_any_node_big_enough_even_if_busy():
    view = ClusterView(ME, random.Random(0))
    view.update([node("b", {"CPU": 2, "GPU": 1}, {"CPU": 0})])
    assert view.route(Scheduler({"CPU": 2}), to_units({"GPU": 1}), may_spill=True) == "b"


def test_dead_nodes_and_this_node_are_never_picked():
    view = ClusterView(ME)
    view.update([node(ME, {"CPU": 64}), node("b", {"CPU": 64}, alive=False)])
    assert view.pick(to_units({"CPU": 1}), now=False) == ""
    view.update([node("c", {"CPU": 64})])
    view.mark_dead("c")
    assert not view.alive("c") and view.pick(to_units({"CPU": 1}), now=False) == ""


def test_power_of_two_choices_prefers_room_then_cpus():
    view = ClusterView(ME, random.Random(1))
    view.update([node("b", {"CPU": 4}, {"CPU": 1}), node("c", {"CPU": 4}, {"CPU": 3})])
    assert view.pick(to_units({"CPU": 1}), now=True) == "c"  # both sampled: more CPUs free wins
    assert view.pick(to_units({"CPU": 2}), now=False) == "c"  # only c has room


def test_a_new_view_sends_waiting_work_where_it_fits():
    sched = Scheduler({"CPU": 1})
    sched.acquire(to_units({"CPU": 1}))
    mine, relayed = request(b"d1", 1), request(b"r1", 2)
    queue(sched, mine)
    queue(sched, relayed)
    too_big = request(b"d1", 3, cpus=4)
    assert not queue(sched, too_big)  # infeasible here
    hosted = actor(b"A1", PENDING)
    hosted.home = "zzzz"  # hosted for another node: stays
    ours = actor(b"A2", PENDING)
    sched.add(b"tA1", (("CPU", 1.0),), hosted.create)
    sched.add(b"tA2", (("CPU", 1.0),), ours.create)
    view = ClusterView(ME, random.Random(0))
    view.update([node("b", {"CPU": 8})])
    actions = view.rebalance(sched, relayed=lambda owner: owner == b"r1", actors={b"A1": hosted, b"A2": ours})
    assert SpillLease(too_big, "b") in actions and SpillLease(mine, "b") in actions
    assert PlaceActor(b"A2", "b") in actions
    assert all(getattr(a, "actor_id", b"") != b"A1" for a in actions)
    assert all(getattr(a, "request", None) is not relayed for a in actions)
    assert sched.queued == 2 and not sched.infeasible  # the relayed request and the hosted actor
    assert view.spilled["b"] == {"CPU": 60_000}


def test_an_infeasible_actor_is_placed_again_when_a_big_node_joins():
    sched = Scheduler({"CPU": 1})
    big = actor(b"A1", PENDING)
    big.create.demand = to_units({"GPU": 1})
    assert not sched.add(b"tA1", (("GPU", 1.0),), big.create)
    view = ClusterView(ME, random.Random(0))
    view.update([node("b", {"CPU": 1, "GPU": 2})])
    assert view.rebalance(sched, lambda owner: False, {b"A1": big}) == [PlaceActor(b"A1")]
    assert not sched.infeasible


# ------------------------------------------------------------ actors restart


def test_actor_restarts_while_it_has_restarts_left():
    a = actor(b"A1", max_restarts=2)
    assert placement.actor_restarts(a) == (True, 1)
    a.restarts_left = 0
    assert placement.actor_restarts(a) == (False, 0)


def test_actor_with_infinite_restarts_always_restarts():
    assert placement.actor_restarts(actor(b"A1", max_restarts=-1)) == (True, -1)


def test_a_terminating_actor_never_restarts():
    assert placement.actor_restarts(actor(b"A1", TERMINATING, max_restarts=5)) == (False, 5)


# ---------------------------------------------------------- worker and node death


def test_a_leased_worker_dies_its_lease_ends_and_the_pool_refills():
    w = Worker(3, "/w3", ME)
    w.pid = 42
    w.lease = Lease(9, request(b"d1", 1), w)
    actions = placement.worker_death(w, -9, {}, plain_workers_left=1, pool_size=2, running=True)
    assert actions == [EndLease(9), DropProcess(w.identity), SpawnWorkers(1)]


def test_an_actor_worker_dies_its_actor_dies_with_the_cause():
    w = Worker(3, "/w3", ME)
    w.pid, w.actor_id = 42, b"A1"
    actions = placement.worker_death(w, 1, {b"A1": actor(b"A1")}, 2, 2, running=True)
    assert actions == [
        ActorDied(b"A1", "its worker process (pid 42) died (exit code 1)"),
        DropProcess(w.identity),
    ]


def test_no_refill_while_the_node_stops():
    w = Worker(3, "/w3", ME)
    assert placement.worker_death(w, -15, {}, 0, 2, running=False) == [DropProcess(w.identity)]


def test_node_death_drops_its_clients_fails_its_objects_and_ends_or_restarts_actors():
    hosted_there = actor(b"A1")
    hosted_there.remote = "b"
    owned_by_it = actor(b"A2")
    owned_by_it.home = "b"
    gone = actor(b"A3", DEAD)
    gone.remote = "b"
    elsewhere = actor(b"A4")
    elsewhere.remote = "c"
    actors = {a.actor_id: a for a in (hosted_there, owned_by_it, gone, elsewhere)}
    remote = {b"x1": "b", b"x2": "c", b"nb": "b"}
    assert placement.node_death("b", "missed heartbeats", remote, actors) == [
        DropProcess(b"x1"),
        DropProcess(b"nb"),
        ActorDied(b"A1", "its node (b) died: missed heartbeats"),
        KillActor(b"A2", "the node that owns it (b) died"),
        FailObjects("b", "missed heartbeats"),
        Broadcast("b", "missed heartbeats"),
    ]


# ============================================================ the client's decisions

CPU1 = (("CPU", 1.0),)


def call(n: int, max_retries: int = 3, cancelled: bool = False) -> Call:
    spec = TaskSpec(
        task_id=b"T%d" % n,
        kind=TASK,
        name=f"f{n}",
        function_id=b"f",
        args=b"",
        deps=(),
        contained=(),
        return_ids=(b"R%d" % n,),
        owner=b"d1",
        resources=CPU1,
        max_retries=max_retries,
        retry_exceptions=False,
        actor_id=b"",
        ctx=None,
        options={},
    )
    c = Call(spec, ())
    c.cancelled = cancelled
    return c


def held(lease_id: int, inflight: int = 0, idle_since: float = 0.0) -> ClientLease:
    """A lease of ours with `inflight` tasks sent to its worker."""
    lease = ClientLease(lease_id, CPU1, link=None, pid=100 + lease_id)
    for i in range(inflight):
        c = call(1000 * lease_id + i)
        c.lease = lease
        lease.inflight[c.spec.task_id] = c
    lease.idle_since = idle_since
    return lease


# ----------------------------------------------------------------- pipelining


def test_one_task_per_worker_until_the_node_had_time_to_lend_more():
    assert decisions.depth_limit(None, now=100.0) == 1  # nothing asked yet
    assert decisions.depth_limit(100.0, now=100.1) == 1  # asked, still patient
    assert decisions.depth_limit(100.0, now=100.3) == PIPELINE


def test_once_the_node_has_no_room_short_tasks_fill_the_pipeline_and_long_ones_go_two_deep():
    """No other worker is coming soon: the next task waits at the worker, not for a round trip.
    Short tasks fill the whole pipeline (their worker may then send their replies together);
    longer ones, or tasks not yet timed, two deep: the workers end a burst together."""
    short, long_ = decisions.DEEP_BELOW / 2, decisions.DEEP_BELOW * 5
    assert decisions.depth_limit(100.0, now=100.1, no_room=True) == 2  # not timed yet
    assert decisions.depth_limit(100.0, now=100.1, no_room=True, task_s=long_) == 2
    assert decisions.depth_limit(None, now=100.0, no_room=True, task_s=short) == PIPELINE
    assert decisions.depth_limit(100.0, now=100.3, no_room=True, task_s=long_) == PIPELINE  # patience ran out
    assert decisions.depth_limit(None, now=100.0, task_s=short) == 1  # more workers may come
    queue = deque(call(n) for n in range(2 * PIPELINE + 1))
    a, b = held(1), held(2)
    sent = decisions.assign(queue, [a, b], decisions.depth_limit(None, now=100.0, no_room=True, task_s=short))
    assert [len(x.inflight) for x in (a, b)] == [PIPELINE, PIPELINE]
    assert len(sent) == 2 * PIPELINE and len(queue) == 1
    assert [c.lease for _, c in sent[:4]] == [a, b, a, b]  # round robin: level by level
    queue = deque(call(n) for n in range(5))
    a, b = held(1), held(2)
    sent = decisions.assign(queue, [a, b], decisions.depth_limit(None, now=100.0, no_room=True, task_s=long_))
    assert [len(x.inflight) for x in (a, b)] == [2, 2] and len(sent) == 4 and len(queue) == 1


def test_a_shapes_time_per_task_is_a_running_mean_of_what_its_tasks_ran():
    t = decisions.task_time(None, 0.006)
    assert t == 0.006 < decisions.DEEP_BELOW  # the first DONE decides at once
    t = decisions.task_time(t, 0.015)  # one longer task does not undo it
    assert t < decisions.DEEP_BELOW
    for _ in range(20):
        t = decisions.task_time(t, 0.05)
    assert t > decisions.DEEP_BELOW  # the tasks got long: two deep again
    for _ in range(20):
        t = decisions.task_time(t, 0.004)
    assert t < decisions.DEEP_BELOW


def test_a_full_lease_is_topped_up_by_half_a_pipeline_at_once():
    assert decisions.refill(PIPELINE - 1, full=False)  # not every lease was full: fill at once
    assert not decisions.refill(PIPELINE - 1, full=True)  # its worker still has plenty queued
    assert not decisions.refill(decisions.LOW_WATER + 1, full=True)
    assert decisions.refill(decisions.LOW_WATER, full=True)  # half empty: top it up in one batch
    assert decisions.refill(0, full=True)


def test_tasks_go_round_robin_one_level_at_a_time():
    queue = deque(call(i) for i in range(5))
    a, b = held(1), held(2, inflight=1)
    sent = decisions.assign(queue, [a, b], limit=2)
    # a is filled to b's depth first, then both one deeper, then the limit stops it
    assert [(lease.lease_id, c.spec.name) for lease, c in sent] == [(1, "f0"), (1, "f1"), (2, "f2")]
    assert len(queue) == 2 and len(a.inflight) == 2 and len(b.inflight) == 2
    assert all(c.lease is lease for lease, c in sent)


def test_a_lone_call_goes_where_assign_would_put_it_unless_a_worker_holds_a_backlog():
    """The sync task's shortcut (`Leases.enqueue`, nothing queued) picks the lease `assign`
    picks for one call, and steps aside whenever dispatch would also weigh a backlog."""
    for inflights, revoked in [((0,), ()), ((1, 0), ()), ((0, 0), ()), ((1, 1, 0), ()), ((0, 0), (0,))]:
        leases = [held(i + 1, n) for i, n in enumerate(inflights)]
        for i in revoked:
            leases[i].revoked = True
        free = decisions.free_lease(leases)
        sent = decisions.assign(deque([call(99)]), [x for x in leases if not x.revoked], limit=1)
        assert free is not None and [(free, free.inflight[b"T99"])] == sent
    assert decisions.free_lease([held(1, 1)]) is None  # every worker busy: it queues
    assert decisions.free_lease([held(1, 2), held(2)]) is None  # a backlog: dispatch asks for workers
    assert decisions.free_lease([]) is None
    revoked = held(1)
    revoked.revoked = True
    assert decisions.free_lease([revoked]) is None


def test_without_leases_nothing_is_sent():
    queue = deque([call(1)])
    assert decisions.assign(queue, [], limit=PIPELINE) == [] and len(queue) == 1


def test_a_cancelled_task_is_dropped_and_its_turn_passes():
    queue = deque([call(0, cancelled=True), call(1), call(2)])
    a, b = held(1), held(2)
    sent = decisions.assign(queue, [a, b], limit=1)
    assert [(lease.lease_id, c.spec.name) for lease, c in sent] == [(2, "f1")]
    assert [c.spec.name for c in queue] == ["f2"]  # a waits for the next round


def test_backlog_counts_queued_tasks_and_those_behind_a_running_one():
    leases = [held(1, inflight=3), held(2, inflight=1), held(3)]
    assert decisions.backlog(4, leases) == 4 + 2
    assert decisions.backlog(0, [held(1, inflight=1)]) == 0  # nothing could run elsewhere


def test_lease_requests_are_bounded_and_count_those_still_open():
    assert decisions.more_leases(backlog=3, asked=0) == 3
    assert decisions.more_leases(backlog=3, asked=2) == 1
    assert decisions.more_leases(backlog=3, asked=5) == 0
    assert decisions.more_leases(backlog=1000, asked=4) == MAX_REQUESTS - 4


def test_asking_for_a_shape_gives_back_idle_leases_of_other_shapes():
    idle_gpu, busy_gpu, idle_cpu = held(1), held(2, inflight=1), held(3)
    gpu = (("GPU", 1.0),)
    leases = {gpu: [idle_gpu, busy_gpu], CPU1: [idle_cpu]}
    assert decisions.idle_elsewhere(leases, CPU1) == [idle_gpu]


def test_leases_idle_for_long_are_given_back():
    idle = decisions.LEASE_IDLE
    leases = [held(1, idle_since=10.0), held(2, idle_since=10.0 + idle / 2), held(3, inflight=1)]
    assert decisions.expired(leases, now=10.0 + idle * 1.1) == [leases[0]]


def test_idle_leases_of_gpus_or_custom_resources_go_back_at_once():
    cpu, gpu, bob = held(1, idle_since=10.0), held(2, idle_since=10.0), held(3, idle_since=10.0)
    gpu.shape = (("CPU", 1.0), ("GPU", 1.0))
    bob.shape = (("CPU", 1.0), ("bob", 1.0))
    busy = held(4, inflight=1)
    busy.shape = bob.shape
    assert decisions.expired([cpu, gpu, bob, busy], now=10.01) == [gpu, bob]


# ---------------------------------------------------------------------- steal


def test_an_idle_worker_takes_the_later_half_of_the_busiest_queue():
    idle, small, busy = held(1), held(2, inflight=3), held(3, inflight=7)
    steal = decisions.steal(idle, [idle, small, busy])
    assert steal == Steal(busy, list(busy.inflight)[-3:])  # 6 waiting behind the running one
    assert list(busy.inflight)[0] not in steal.task_ids  # never the running task


def test_steal_takes_at_least_one_and_nothing_from_workers_without_a_queue():
    idle, two = held(1), held(2, inflight=2)
    assert decisions.steal(idle, [idle, two]) == Steal(two, list(two.inflight)[-1:])
    assert decisions.steal(idle, [idle, held(3, inflight=1)]) is None


def test_a_worker_on_its_last_task_takes_half_of_what_waits_beyond_the_victims_running_one():
    last, busy = held(1, inflight=1), held(2, inflight=5)  # 4 waiting behind the running one
    assert decisions.steal(last, [last, busy]) == Steal(busy, list(busy.inflight)[-2:])  # 1+2 each
    assert decisions.steal(last, [last, held(3, inflight=2)]) is None  # 1 each already
    assert decisions.steal(held(4, inflight=2), [busy]) is None  # it has one more to run itself


def test_tasks_a_steal_already_asked_for_are_neither_asked_again_nor_counted():
    thief, busy = held(1), held(2, inflight=7)
    first = decisions.steal(thief, [thief, busy])
    assert first == Steal(busy, list(busy.inflight)[-3:])
    busy.asked.update(first.task_ids)  # no answer yet
    again = decisions.steal(thief, [thief, busy])  # 3 not asked for wait behind the running one
    assert again == Steal(busy, list(busy.inflight)[3:4])
    busy.asked.update(again.task_ids)
    last = held(3, inflight=1)
    assert decisions.steal(last, [busy]) == Steal(busy, list(busy.inflight)[2:3])  # 2 left: 1 each
    busy.asked.add(list(busy.inflight)[2])
    assert decisions.steal(last, [busy]) is None  # one left: it stays
    assert decisions.steal(thief, [busy]) == Steal(busy, list(busy.inflight)[1:2])  # idle: it goes


# ---------------------------------------------------------------------- retry


def test_a_failed_attempt_runs_again_while_retries_are_left():
    assert decisions.retry(3, cancelled=False) == Retry(2)
    assert decisions.retry(1, cancelled=False) == Retry(0)
    assert decisions.retry(0, cancelled=False) == Fail(CRASHED)


def test_infinite_retries_never_run_out():
    assert decisions.retry(-1, cancelled=False) == Retry(-1)


def test_a_cancelled_call_is_never_retried():
    assert decisions.retry(3, cancelled=True) == Fail(CANCELLED)
    assert decisions.retry(0, cancelled=True) == Fail(CANCELLED)


def test_lease_requests_spilled_to_a_dead_node_are_void():
    gpu = (("GPU", 1.0),)
    spilled = {CPU1: {"b": 2, "c": 1}, gpu: {"c": 4}}
    assert decisions.void_requests(spilled, "b") == {CPU1: 2}
    assert spilled == {CPU1: {"c": 1}, gpu: {"c": 4}}
    assert decisions.void_requests(spilled, "zz") == {}


# ============================================================ the head's decisions


def member(node_id: str, last_seen: float, alive: bool = True) -> dict:
    return {"node_id": node_id, "last_seen": last_seen, "alive": alive}


def test_a_node_silent_for_longer_than_the_timeout_is_dead():
    nodes = [member("a", 99.0), member("b", 94.5), member("c", 90.0, alive=False)]
    assert membership.silent(nodes, now=100.0, timeout=5.0) == [NodeDead("b", "no heartbeat for 5.5 s")]
    assert membership.silent(nodes, now=99.5, timeout=5.0) == []  # b: 5.0 s is not over the timeout


def test_the_other_live_nodes_hear_of_a_death():
    nodes = {"a": member("a", 0), "b": member("b", 0), "c": member("c", 0, alive=False)}
    assert membership.told("b", nodes, nodes) == ["a"]


def test_a_node_declared_dead_must_exit_when_it_reports_again():
    assert membership.must_exit(member("a", 0, alive=False))
    assert not membership.must_exit(member("a", 0))
    assert not membership.must_exit(None)  # unknown: ignored


def test_dead_nodes_are_forgotten_after_a_while():
    nodes = {"a": member("a", 0.0, alive=False), "b": member("b", 500.0, alive=False), "c": member("c", 0.0)}
    assert membership.forgotten(nodes, now=700.0) == ["a"]  # c is alive, b died recently


def test_silence_is_checked_often_enough_for_short_timeouts():
    assert membership.check_interval(5.0) == 1.0
    assert membership.check_interval(1.0) == 0.25


def test_a_task_killed_for_memory_waits_longer_each_time():
    from runtime.client import decisions as client_decisions

    assert [client_decisions.oom_delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


# ---------------------------------------------------------------- the task stream across nodes
def test_a_node_sends_whole_lines_only_and_at_most_a_reports_worth():
    from runtime.node import events

    lines, used = events.complete_lines(b'{"a":1}\n{"b":2}\n{"c"')
    assert lines == [b'{"a":1}', b'{"b":2}'] and used == 16  # the line being written waits
    assert events.complete_lines(b'{"c"') == ([], 0)

    line = b'{"name":"' + b"f" * 500 + b'","start":1.5,"end":2.0,"ok":false,"kind":"task","node":"n1"}'
    assert events.parse(line, 42) == ("f" * events.MAX_NAME, 1.5, 2.0, False, "task", 42)
    assert events.parse(b"not json", 42) is None
    assert events.parse(b'{"name":"f"}', 42) is None  # no times: not an event

    pending = deque((f"t{i}", 0.0, 1.0, True, "task", 1) for i in range(5))
    assert [e[0] for e in events.for_report(pending, limit=3)] == ["t0", "t1", "t2"]  # the oldest first
    assert [e[0] for e in pending] == ["t3", "t4"]
    assert events.for_report(deque()) == []

    assert events.worker_of("aaaa0001-4242.jsonl", "aaaa0001") == 4242
    assert events.worker_of("aaaa0001-4242.jsonl.1", "aaaa0001") == 4242
    assert events.worker_of("bbbb0002-4242.jsonl", "aaaa0001") is None  # another node's file
    assert events.worker_of("aaaa0001-x.jsonl", "aaaa0001") is None


def test_the_head_keeps_a_bounded_minute_of_well_formed_events():
    from runtime.head import events as ring

    good = ("f", 1.0, 2.0, True, "task", 7)
    bad = [("f", 1, 2.0, True, "task", 7), ("f", float("nan"), 2.0, True, "task", 7), ("f",), "x", None]
    assert ring.valid([good, *bad]) == [good]
    assert ring.valid("not a list") == []
    assert len(ring.valid([good] * 50, limit=10)) == 10
    assert ring.valid([("g" * 999, 1.0, 2.0, True, "k" * 99, 7)])[0][0] == "g" * 200

    r = deque((float(t), "n", good) for t in range(10))
    ring.trim(r, now=65.0, window=60.0, capacity=100)
    assert [t for t, _, _ in r] == [5.0, 6.0, 7.0, 8.0, 9.0]  # arrived more than a minute ago: gone
    ring.trim(r, now=65.0, window=60.0, capacity=2)
    assert [t for t, _, _ in r] == [8.0, 9.0]  # and never more than the capacity (the newest kept)

    events = ring.EventRing(window=60.0, capacity=3)
    events.add("a", [("late", 5.0, 6.0, True, "task", 1), ("early", 1.0, 3.0, False, "task", 2)], now=100.0)
    events.add("b", [("other", 2.0, 4.0, True, "task", 3)], now=101.0)
    got = events.since(2.5, now=101.0, hosts={"a": "alpha"})
    assert [(e["name"], e["node"], e["host"], e["worker"], e["ok"]) for e in got] == [
        ("early", "a", "alpha", 2, False),  # sorted by start; each with its node and host
        ("other", "b", "", 3, True),
        ("late", "a", "alpha", 1, True),
    ]
    assert events.since(5.5, now=101.0, hosts={})[0]["name"] == "late"
    assert events.since(0.0, now=162.0, hosts={}) == []  # all arrived over a minute ago


def test_a_reader_takes_each_node_from_one_source():
    from runtime.timeline import merge

    local = [{"name": "here", "node": "a", "start": 2.0}]
    remote = [
        {"name": "dup", "node": "a", "start": 2.0},  # a's files are here: the head's copy is not used
        {"name": "far", "node": "b", "start": 1.0},
    ]
    assert [e["name"] for e in merge(local, {"a"}, remote)] == ["far", "here"]
    assert [e["name"] for e in merge([], set(), remote)] == ["far", "dup"]  # oldest start first


# ------------------------------------------------- a worker's held replies


def test_a_worker_holds_replies_only_while_the_next_task_ends_in_time_and_a_backlog_follows():
    from runtime.worker.replies import HOLD_MAX, HOLD_S, LATE_S, QUEUED, Replies

    r = Replies()
    r.hold("owner", ("DONE", 1), now=10.0)
    assert not r.may_hold(b"f", now=10.0, queued=QUEUED)  # f never ran here: not known to end in time
    r.ran(b"f", HOLD_S / 4)
    assert r.may_hold(b"f", now=10.0, queued=QUEUED)
    assert not r.may_hold(b"f", now=10.0, queued=QUEUED - 1)  # the owner must hear in time to send more
    assert r.may_hold(b"f", now=10.0 + HOLD_S / 2, queued=QUEUED)  # ends at 3/4 of HOLD_S
    assert not r.may_hold(b"f", now=10.0 + HOLD_S * 0.8, queued=QUEUED)  # would end past HOLD_S
    r.ran(b"g", HOLD_S)
    assert not r.may_hold(b"g", now=10.0, queued=QUEUED)  # g ran too long last time
    r.ran(b"h", 1e-5)  # a no-op's replies: held up to HOLD_MAX per batch
    for i in range(HOLD_MAX - 1):
        r.hold("owner", ("DONE", i), now=10.001)
    assert not r.may_hold(b"h", now=10.001, queued=QUEUED)  # enough for one batch
    assert len(r.take()) == HOLD_MAX and r.held == []
    r.hold("owner", ("DONE", 2), now=20.0)
    assert r.since == 20.0  # a new batch's age counts from its first reply
    assert not r.overdue(now=20.0) and r.overdue(now=20.0 + LATE_S * 2)
    r.take()
    assert not r.overdue(now=40.0)  # nothing held


def test_a_cancelled_task_that_still_runs_is_interrupted_again_only_alone_on_its_worker():
    again = decisions.INTERRUPT_AGAIN
    assert not decisions.interrupt_again(sent=10.0, now=10.0 + again / 2, alone=True)  # give it time
    assert decisions.interrupt_again(sent=10.0, now=10.0 + again, alone=True)
    assert not decisions.interrupt_again(sent=10.0, now=10.0 + 5 * again, alone=False)  # may hit the next


def test_our_nodes_batch_goes_after_the_workers_only_when_it_asks_for_or_returns_workers():
    from runtime.wire.protocol import Kind

    asking = [(Kind.LEASE_REQUEST, 1, (("CPU", 1.0),), "f"), (Kind.LEASE_REQUEST, 2, (("CPU", 1.0),), "f")]
    assert decisions.node_last(asking)  # a burst's flush: its workers' first tasks go before
    assert decisions.node_last([(Kind.LEASE_RETURN, 7), (Kind.LEASE_CANCEL, (("CPU", 1.0),))])
    assert decisions.node_last([(Kind.STATS, {"f": 2}, {})])
    # A HOLD must reach the node before the results that make a ref's sender let go of it;
    # a PUT before the task that names the object; a FORWARD in the order it was queued.
    assert not decisions.node_last([*asking, (Kind.HOLD, b"o" * 20)])
    assert not decisions.node_last([(Kind.PUT, b"o" * 20, False, b"", 1, [])])
    assert not decisions.node_last([(Kind.TRANSIT, ["/dev/shm/x"])])
    assert not decisions.node_last([(Kind.FORWARD, "node", b"", [])])
