"""A worker's replies held back while it runs tasks of a few ms or less back to back.

::

    task ends ──▶ hold(DONE), its event line buffered (timeline.Recorder)
    next task taken from the inbox ──▶ may_hold(its function, now, tasks queued behind it)?
        yes: it runs; the replies wait          (it ends, if it runs as long as its function
                                                 did here last time, before the oldest held
                                                 reply is HOLD_S old; QUEUED more tasks wait
                                                 here; fewer than HOLD_MAX held)
        no ──▶ release: the held DONEs as one batch per owner, the events as one write
    the inbox is empty (about to wait), the task blocks in get(), exit ──▶ release
    a task runs while replies are held over LATE_S ──▶ the watch thread releases them

A DONE sent per task cost a worker of no-op tasks a fifth of its time in `send`
alone, and woke its owner once per task; held back, one send and one wake carry
many (5,000 no-op tasks: the owner's CPU per task 57-64 -> 45-49 µs, the
worker's 60-68 -> 48-52 µs). Tasks of a few ms pay the same per message: ~0.2 ms
of a worker's time between two chunks, and the owner's wake-up taken from the
workers' CPU (64 Monte Carlo chunks of ~4 ms on 2 cores, benchmarks/mc_vs_pool.py).
So a reply is held while the next task, expected to run as long as its function
did last time here, ends before the oldest held reply is HOLD_S old: a result
waits at most HOLD_S, or one task that was expected to end in time and did not,
and no longer than LATE_S even then: a thread of the worker (the watch thread,
parked while the worker is idle) sends what is held that long while a task runs.
Holding stops while fewer than QUEUED tasks wait here: the owner must hear of
finished ones in time to send more, and a task waiting for a held result could
not run here before those queued anyway. Nothing here sends: the worker loop
feeds it and does the I/O.
"""

from __future__ import annotations

from typing import Any

from ..client.decisions import DEEP_BELOW, LOW_WATER

# s: a held reply goes out before its wait would pass this (the next task's expected end). Dask
# batches its workers' messages every 2 ms; 10 ms lets replies of ~4 ms tasks go two or three
# to a message, and is far below what a person or a progress bar notices. The owner fills a
# worker deep with tasks below the same bound (decisions.depth_limit): holding needs a backlog.
HOLD_S = DEEP_BELOW
HOLD_MAX = 64  # replies held at most
LATE_S = 0.02  # s: held this long, a reply is sent by the worker's watch thread
# Tasks queued here for holding to go on: below it the owner must hear of the finished ones
# to send more in time (it tops a worker up once it holds LOW_WATER of PIPELINE). Half of
# LOW_WATER: 10,000 no-op tasks on two workers ran ~8 % faster than with LOW_WATER itself.
QUEUED = LOW_WATER // 2


class Replies:
    """The DONEs held back, and how long each function last took here."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, tuple]] = []  # (link, message)
        self.since = 0.0  # when the oldest held reply was held
        self.took: dict[bytes, float] = {}  # function id (an actor's: method name) -> its last run, s

    def ran(self, function_id: bytes, seconds: float) -> None:
        self.took[function_id] = seconds

    def hold(self, link: Any, msg: tuple, now: float, queued: int = QUEUED) -> bool:
        """Hold a finished task's reply, with `queued` tasks behind it; False (send it now)
        with fewer than QUEUED: the owner must hear in time to send more."""
        if queued < QUEUED:
            return False
        if not self.held:
            self.since = now
        self.held.append((link, msg))
        return True

    def overdue(self, now: float) -> bool:
        """Held past LATE_S: the task expected short runs long (the watch thread's test)."""
        return bool(self.held) and now - self.since > LATE_S

    def may_hold(self, function_id: bytes, now: float, queued: int) -> bool:
        """Keep holding while the next task (of `function_id`) runs, `queued` more behind it?"""
        took = self.took.get(function_id)  # None: never ran here, not known to end in time
        return (
            queued >= QUEUED
            and len(self.held) < HOLD_MAX
            and took is not None
            and now - self.since + took < HOLD_S
        )

    def take(self) -> list[tuple[Any, tuple]]:
        held, self.held = self.held, []
        return held
