"""The client's decisions, apart from I/O: how many tasks a leased worker gets,
how many more workers to ask for, when an idle worker takes queued work back
from a busy one, and whether a call whose attempt failed runs again.

::

    events (plain data)                        decisions              actions
    ────────────────────────────────────────   ────────────────────   ──────────────────────────────
    when this shape's first open request   ──▶ depth_limit()      ──▶ tasks a lease may hold (1, 2
      was sent, now; the node had no room;                            or PIPELINE)
      the burst's time per task
    how long a task ran on its worker      ──▶ task_time()        ──▶ the burst's time per task
      (its DONE says)
    a lease's task done: what it holds,    ──▶ refill()           ──▶ top it up now, or at LOW_WATER
      were all leases full?
    a shape's queue, its leases, the limit ──▶ assign()           ──▶ (lease, call): send EXECUTE
    one call, nothing queued, the leases   ──▶ free_lease()       ──▶ the lease to send it to now
    tasks queued here or behind running    ──▶ backlog()          ──▶ keep a granted worker? ask for
      ones; lease requests still open          more_leases()          how many more (LEASE_REQUEST)?
    the first request for a shape          ──▶ idle_elsewhere()   ──▶ leases of other shapes to give back
    a lease running its last task or none, ──▶ steal()            ──▶ Steal(victim, task ids): CANCEL
      its shape's busy leases                                         "steal" to the victim
    a cancelled task still runs            ──▶ interrupt_again()  ──▶ SIGINT to its worker again
    idle leases, their shapes, now         ──▶ expired()          ──▶ leases to give back (LEASE_RETURN)
    an attempt failed (its worker died, or ──▶ retry()            ──▶ Retry(retries left): the front of
      it asked to be retried)                                         its queue; Fail(cancelled|crashed)
    a node died                            ──▶ void_requests()    ──▶ lease requests spilled there, per
                                                                      shape, to ask again
    what a flush has for our node          ──▶ node_last()        ──▶ send it after the workers' batches?

Nothing here sends, reads a socket, takes a lock or reads the clock: `Leases`
and `ActorCalls` feed the records in (`records.Call`, `records.Lease`) and
send what comes back. `assign` and `void_requests` do the bookkeeping of what
they decide on those records (a call's lease, a lease's calls in flight, the
counts of spilled requests), as `runtime.node.placement.start` takes items
from the node's scheduler. `tests/test_decisions.py` drives them with plain
data; the real-process tests cover the wiring.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..wire.protocol import Kind
from .records import Call, Lease

# Seconds an idle lease is kept for the next task of its shape. A burst after a pause (a
# notebook cell, a loop alternating local work with remote tasks) then finds its workers
# leased, and filled as deep as depth_limit allows while its node said it had no room
# (Leases.cancel_requests keeps that): no LEASE_REQUEST / LEASE_GRANT round trip. A Monte
# Carlo burst after 0.28 s of serial work: its first chunk starts after 0.6 ms instead of
# 1.0-1.5 (benchmarks/mc_vs_pool.py). Others lose nothing: the node revokes an idle lease at
# once when work it cannot start waits (placement.unblock).
LEASE_IDLE = 1.0
# Only leases of these are kept idle. One holding a GPU or a custom resource (a licence, a
# database connection) goes back at once: `available_resources()` shows it free as soon as
# its task ended, as in Ray, and nobody waits for a revocation of a scarce resource.
KEPT_IDLE = frozenset({"CPU", "memory"})
PIPELINE = 16  # tasks queued at a leased worker when there is a backlog (idle ones steal)
LOW_WATER = PIPELINE // 2  # a full lease is topped up once it holds this many or fewer
PATIENCE = 0.2  # seconds to wait for more workers before queueing tasks behind running ones
# s: tasks shorter than this fill a worker's whole pipeline while its node has no room: the
# backlog that lets their worker hold their replies while the next one runs, for as long
# (runtime.worker.replies.HOLD_S is this)
DEEP_BELOW = 0.010
TASK_TIME_WEIGHT = 0.25  # of the newest task's time in the running mean of a burst's time per task
MAX_REQUESTS = 16  # lease requests open at once for one shape

CANCELLED = "cancelled"
CRASHED = "crashed"

# ---------------------------------------------------------------- pipelining


def depth_limit(
    asked_at: float | None, now: float, no_room: bool = False, task_s: float | None = None
) -> int:
    """How many tasks a leased worker may hold at once.

    One, until the node had `PATIENCE` seconds to lend more workers since we
    first asked (`asked_at`); then up to `PIPELINE`, queued behind the running
    one (a worker answers a steal between two tasks, or within ~20 ms of a task
    that runs long: its watch thread). Once the node said
    it had no room for another worker (`no_room`), no new worker will come soon
    to take queued tasks, and the next one starts without waiting for a round
    trip to this process: two, or `PIPELINE` for tasks known to take under
    `DEEP_BELOW` (`task_s`, this burst's time per task). Their worker then
    has a backlog and may hold their replies and send them together
    (`runtime.worker.replies`): fewer messages, and fewer wake-ups of this
    process taken from the workers' CPU. Longer tasks stay two deep: a task
    queued behind a long one would wait for it even when another worker is
    free (measured before workers read during long tasks), so the workers finish
    a burst together (8 Monte Carlo chunks of ~50 ms: one worker ended ~10 ms after
    the other when each got four at once).
    """
    if asked_at is not None and now - asked_at > PATIENCE:
        return PIPELINE
    if no_room:
        return PIPELINE if task_s is not None and task_s < DEEP_BELOW else 2
    return 1


def task_time(previous: float | None, took: float) -> float:
    """A burst's time per task, given one more task that ran `took` seconds (its worker
    measures it and says in the DONE). The worker's own figure, not the interval between
    two DONEs here: that one carries when replies were held and sent together, and how
    late this process read them (the first DONEs of a burst arrive while the driver still
    submits). A burst of ~8 ms Monte Carlo chunks went deep after its first DONE, not its
    tenth."""
    return took if previous is None else previous + TASK_TIME_WEIGHT * (took - previous)


def refill(held: int, full: bool) -> bool:
    """A task of a lease finished: give the lease more now? Not while every lease of its shape
    was filled to `PIPELINE` (`full`) and it still holds over `LOW_WATER`: topped up later by
    half a pipeline at once, one batch instead of one message per task (its worker still
    has `LOW_WATER` queued meanwhile)."""
    return not full or held <= LOW_WATER


def assign(queue: deque[Call], leases: list[Lease], limit: int) -> list[tuple[Lease, Call]]:
    """Take calls from the front of `queue` for `leases`, round robin, one level at a time.

    Every lease is filled to the same depth before any gets one more, up to
    `limit` each. A cancelled call is dropped from the queue (its lease's
    turn at that level passes). Returns (lease, call) in the order to send;
    each call is recorded on its lease (`call.lease`, `lease.inflight`).
    """
    out: list[tuple[Lease, Call]] = []
    depth = min((len(lease.inflight) for lease in leases), default=limit) + 1
    while queue and depth <= limit:
        for lease in leases:
            if not queue:
                break
            if len(lease.inflight) < depth:
                call = queue.popleft()
                if call.cancelled:
                    continue
                give(lease, call)
                out.append((lease, call))
        depth += 1
    return out


def give(lease: Lease, call: Call) -> None:
    """Record that `call` goes to `lease` (its worker runs them in this order)."""
    call.lease = lease
    lease.inflight[call.task_id] = call


def free_lease(leases: list[Lease]) -> Lease | None:
    """The lease `assign` would give a lone call to when nothing is queued: the first one
    that holds nothing, if no lease of the shape holds a task behind a running one (else
    None: `dispatch` also weighs that backlog). A sync task's path: one pass over one or
    two leases in place of dispatch's (the limit, assign, the backlog, cancelling requests)."""
    free = None
    for lease in leases:
        held = len(lease.inflight)
        if held > 1:
            return None
        if free is None and not held and not lease.revoked:
            free = lease
    return free


def backlog(queued: int, leases: Iterable[Lease]) -> int:
    """Tasks that could run on another worker: queued here, or behind a running one."""
    return queued + sum(len(lease.inflight) - 1 for lease in leases if len(lease.inflight) > 1)


def more_leases(backlog: int, asked: int) -> int:
    """How many more lease requests to send, with `asked` still open (at most MAX_REQUESTS)."""
    return max(0, min(backlog, MAX_REQUESTS) - asked)


def idle_elsewhere(leases: Mapping[tuple, list[Lease]], shape: tuple) -> list[Lease]:
    """Our idle leases of other shapes: given back when `shape` starts asking for workers
    (they may hold the resources its tasks need)."""
    return [lease for other, held in leases.items() if other != shape for lease in held if not lease.inflight]


def expired(leases: Iterable[Lease], now: float) -> list[Lease]:
    """Idle leases to give back to the node: after LEASE_IDLE, or at once for a lease that
    holds more than CPUs and memory (`KEPT_IDLE`)."""
    return [
        lease
        for lease in leases
        if not lease.inflight
        and (now - lease.idle_since > LEASE_IDLE or any(k not in KEPT_IDLE for k, _ in lease.shape))
    ]


# --------------------------------------------------------------------- steal


@dataclass(frozen=True)
class Steal:
    """Ask `victim` to hand back these tasks it has not started (it answers REJECTED)."""

    victim: Lease
    task_ids: list[bytes]


def steal(thief: Lease, leases: Iterable[Lease]) -> Steal | None:
    """A lease with nothing more to run here while others of its shape have tasks queued
    behind a running one: take the later half of the busiest one's queue. Its worker hands
    them all back (REJECTED) when it next reads (between two tasks, or its watch thread
    within ~20 ms of a long one), not as it reaches each: the thief waits for neither the
    task running there nor the half queued before them.

    The thief asks as soon as it runs its last task (one in flight), not once it is idle:
    the answer comes when the victim's task ends, and a thief that asks only once idle
    waits for that end and then a round trip (64 Monte Carlo chunks of ~5 ms: a worker
    idle 3-9 ms at the end of most bursts, the other running a chunk it could have had).
    Running one, it takes half of what the victim has waiting beyond it, so both hold as
    many; idle, at least one. Tasks already asked for (no answer yet) are not counted."""
    running = len(thief.inflight)
    if running > 1:
        return None
    best: Lease | None = None
    waiting = 0
    for lease in leases:
        if lease is thief:
            continue
        n = len(lease.inflight) - 1 - len(lease.asked)  # queued behind its running task
        if n > waiting:
            best, waiting = lease, n
    take = waiting // 2 if running else max(1, waiting // 2)
    if best is None or take < 1:
        return None
    free = [task_id for task_id in best.inflight if task_id not in best.asked][1:]
    return Steal(best, free[-take:])


# -------------------------------------------------------------------- cancel

INTERRUPT_AGAIN = 1.0  # s: a cancelled task still running is sent SIGINT again after this long


def interrupt_again(sent: float, now: float, alone: bool) -> bool:
    """A task cancelled without force still runs: send its worker SIGINT again?

    A SIGINT can be lost for as long as the task blocks: CPython runs a signal's
    handler between bytecodes, and a blocking call (``time.sleep``, a read) is
    cut short only by a signal that comes while it waits. One that comes in
    the few microseconds between the task's last bytecode and the call's
    system call waits for the call to end (traced: a cancel sent right after
    `.remote()` reached the worker 40 µs before it started the task, and the
    task slept its 3 s). The CANCEL sent with it is read only between tasks.
    As Ray retries a cancel, send it again every INTERRUPT_AGAIN seconds; only
    while the task is `alone` on its lease, so that no other task of ours can
    be running there when the signal lands."""
    return alone and now - sent >= INTERRUPT_AGAIN


# --------------------------------------------------------------------- retry


@dataclass(frozen=True)
class Retry:
    """Run the call again: back to the front of its queue (its shape's for a task; its
    actor's, in the order it was sent, for an actor call)."""

    retries_left: int  # after this attempt; -1: no limit


@dataclass(frozen=True)
class Fail:
    """Do not run it again: `cause` is CANCELLED (the user cancelled it) or CRASHED
    (no retries left: WorkerCrashedError, or ActorDiedError for an actor call)."""

    cause: str


def retry(retries_left: int, cancelled: bool) -> Retry | Fail:
    """An attempt failed in a way that may be retried (its worker died, or it asked to be)."""
    if cancelled:
        return Fail(CANCELLED)
    if retries_left == 0:
        return Fail(CRASHED)
    return Retry(retries_left - 1 if retries_left > 0 else retries_left)


OOM_BACKOFF = 1.0  # seconds before a task killed for memory runs again; doubles each time (Ray's)
OOM_BACKOFF_MAX = 60.0


def oom_delay(times_killed: int) -> float:
    """How long a task the memory monitor killed `times_killed` times (before this one) waits
    before it runs again, so memory has time to fall: 1 s, 2 s, 4 s... at most a minute."""
    return min(OOM_BACKOFF * 2**times_killed, OOM_BACKOFF_MAX)


def void_requests(spilled: dict[tuple, dict[str, int]], node_id: str) -> dict[tuple, int]:
    """Node `node_id` died: the lease requests we spilled to it will never be answered.

    Removes it from `spilled` (shape -> node -> requests sent there) and
    returns how many requests to take back per shape (then ask again).
    """
    void: dict[tuple, int] = {}
    for shape, counts in spilled.items():
        n = counts.pop(node_id, 0)
        if n:
            void[shape] = n
    return void


# ---------------------------------------------------------------- sending order

# What may reach our node after the batches for the workers: asking for workers, giving them
# back, counts. Anything else to the node goes first: a HOLD of a ref we received before the
# results that make its sender let go of it, a PUT or a TRANSIT before the task or the DONE
# that names the object, a FORWARD in the order it was queued.
LEASE_TRAFFIC = frozenset({Kind.LEASE_REQUEST, Kind.LEASE_CANCEL, Kind.LEASE_RETURN, Kind.STATS})


def node_last(batch: list) -> bool:
    """Send our node's `batch` after the other links' batches of the same flush?

    A burst's flush holds the tasks for its leased workers and the lease requests for the
    rest. Written first, the requests woke the node daemon first, on this process's CPU
    (a Unix socket's reader is woken beside its writer), and the second worker of an 8-task
    Monte Carlo burst got its first task 2-6 ms after the first in most bursts.
    """
    return all(msg[0] in LEASE_TRAFFIC for msg in batch)
