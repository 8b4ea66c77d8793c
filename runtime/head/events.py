"""The head's task stream: the last minute of every node's finished tasks, in one ring.

::

    node ──TASK_EVENTS (node_id, events)──▶ valid() ──▶ EventRing.add ──▶ trim(): at most
                                                          WINDOW s (by arrival) and CAPACITY events
    reader ──REQUEST events(since)──▶ EventRing.since(since) ──▶ REPLY [event dicts, oldest first]

Nodes send what their workers recorded (`runtime.node.events`); a reader
(`runtime.timeline.task_events`: the lab sidebar, ``%cluster status``,
``runtime.timeline()``) asks here for the tasks of machines whose files it
cannot read. Memory stays bounded whatever the nodes send. No I/O here.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from ..node.events import MAX_NAME, PER_REPORT, as_dict

WINDOW = 60.0  # seconds an event is kept after it arrived
CAPACITY = 5000  # events kept at most (the newest)


def valid(events: Any, limit: int = PER_REPORT) -> list[tuple]:
    """The well-formed events of a TASK_EVENTS message (at most `limit`); the rest is dropped.

    A node with the key is trusted not to attack, but a bug (or another
    version) must not put anything but these small tuples in the ring.
    """
    if not isinstance(events, list):
        return []
    kept = []
    for e in events[:limit]:
        if (
            type(e) is tuple
            and len(e) == 6
            and isinstance(e[0], str)
            and isinstance(e[1], float)
            and isinstance(e[2], float)
            and math.isfinite(e[1])
            and math.isfinite(e[2])
            and isinstance(e[3], bool)
            and isinstance(e[4], str)
            and type(e[5]) is int
        ):
            kept.append((e[0][:MAX_NAME], e[1], e[2], e[3], e[4][:16], e[5]))
    return kept


def trim(ring: deque, now: float, window: float = WINDOW, capacity: int = CAPACITY) -> None:
    """Drop from the left what arrived more than `window` s before `now`, and past `capacity`."""
    while ring and (len(ring) > capacity or ring[0][0] < now - window):
        ring.popleft()


class EventRing:
    """``(arrived, node_id, event)`` triples, oldest arrival first."""

    def __init__(self, window: float = WINDOW, capacity: int = CAPACITY) -> None:
        self.window = window
        self.capacity = capacity
        self.ring: deque[tuple[float, str, tuple]] = deque()

    def add(self, node_id: str, events: list[tuple], now: float) -> None:
        """Keep `events` of `node_id` (checked by `valid`), arrived at `now` (monotonic)."""
        self.ring.extend((now, node_id, e) for e in events)
        trim(self.ring, now, self.window, self.capacity)

    def since(self, since: float, now: float, hosts: dict[str, str]) -> list[dict[str, Any]]:
        """The events that ended after `since`, oldest start first, with their node's host."""
        trim(self.ring, now, self.window, self.capacity)
        found = [as_dict(e, node, hosts.get(node, "")) for _, node, e in self.ring if e[2] > since]
        found.sort(key=lambda e: e["start"])
        return found
