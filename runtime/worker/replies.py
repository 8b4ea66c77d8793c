"""A worker's replies held back while it runs short tasks back to back.

::

    task ends ──▶ hold(DONE), its event line buffered (timeline.Recorder)
    next task taken from the inbox ──▶ may_hold(its function, now, tasks queued behind it)?
        yes: it runs; the replies wait          (its function ran short here last time,
                                                 QUEUED more tasks wait here, the oldest
                                                 held reply is < HOLD_S old, fewer than
                                                 HOLD_MAX held)
        no ──▶ release: the held DONEs as one batch per owner, the events as one write
    the inbox is empty (about to wait), the task blocks in get(), exit ──▶ release
    a task runs while replies are held over LATE_S ──▶ the late sender thread releases them

A DONE sent per task cost a worker of no-op tasks a fifth of its time in `send`
alone, and woke its owner once per task; held back, one send and one wake carry
many (5,000 no-op tasks: the owner's CPU per task 57-64 -> 45-49 µs, the
worker's 60-68 -> 48-52 µs). A reply waits at most HOLD_S, or one task that
was expected short and was not, and no longer than LATE_S even then: a
thread of the worker (the late sender, parked while nothing is held) sends
what is held that long while a task runs. Holding stops while fewer than
QUEUED tasks wait here: the owner must hear of finished ones in time to send
more. Nothing here sends: the worker loop feeds it and does the I/O.
"""

from __future__ import annotations

from typing import Any

from ..client.decisions import LOW_WATER

SHORT = 0.0005  # s: a function whose last run here took less is expected short
HOLD_S = 0.002  # s: the oldest held reply goes out after this long
HOLD_MAX = 64  # replies held at most
LATE_S = 0.02  # s: held this long, a reply is sent by the worker's late sender thread
# Tasks queued here for holding to go on: below it the owner must hear of the finished ones
# to send more in time (it tops a worker up once it holds LOW_WATER of PIPELINE). Half of
# LOW_WATER: 10,000 no-op tasks on two workers ran ~8 % faster than with LOW_WATER itself.
QUEUED = LOW_WATER // 2


class Replies:
    """The DONEs held back, and how long each function last took here."""

    def __init__(self) -> None:
        self.held: list[tuple[Any, tuple]] = []  # (link, message)
        self.since = 0.0  # when the oldest held reply was held
        self.watched = False  # the late sender was woken for this batch
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
            self.watched = False
        self.held.append((link, msg))
        return True

    def watch(self) -> bool:
        """A task starts while replies are held: True the first time for this batch
        (the late sender is woken once a batch, not once a task)."""
        first = not self.watched
        self.watched = True
        return first

    def overdue(self, now: float) -> bool:
        """Held past LATE_S: the task expected short runs long (the late sender's test)."""
        return bool(self.held) and now - self.since > LATE_S

    def may_hold(self, function_id: bytes, now: float, queued: int) -> bool:
        """Keep holding while the next task (of `function_id`) runs, `queued` more behind it?"""
        return (
            queued >= QUEUED
            and len(self.held) < HOLD_MAX
            and now - self.since < HOLD_S
            and self.took.get(function_id, SHORT) < SHORT  # never ran here: not known to be short
        )

    def take(self) -> list[tuple[Any, tuple]]:
        held, self.held = self.held, []
        return held
