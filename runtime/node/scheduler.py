"""Resource accounting and the queue of a node: decisions only, no I/O.

The node daemon feeds it ready tasks (their arguments exist) and asks which
ones to start now. Resources are kept as integers in 1/10,000 units, so
fractional demands (``num_cpus=0.5``) add up exactly.

A demand that no node of this size can ever meet is *infeasible*: it is
kept aside (visible in status) instead of blocking the queue, and runs if
the totals grow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

UNIT = 10_000


def to_units(resources: dict[str, float] | Iterable[tuple[str, float]]) -> dict[str, int]:
    items = resources.items() if isinstance(resources, dict) else resources
    return {k: round(v * UNIT) for k, v in items if v}


def from_units(resources: dict[str, int]) -> dict[str, float]:
    return {k: v / UNIT for k, v in resources.items()}


class Scheduler:
    """FIFO per resource shape; the oldest runnable task of any shape goes first."""

    def __init__(self, total: dict[str, float]) -> None:
        self.total = to_units(total)
        self.available = dict(self.total)
        self.queues: dict[tuple, deque] = {}
        self.infeasible: dict[bytes, object] = {}
        self.queued = 0
        self._seq = 0

    # -- resources --------------------------------------------------------
    def fits(self, demand: dict[str, int], pool: dict[str, int] | None = None) -> bool:
        pool = self.available if pool is None else pool
        return all(pool.get(k, 0) >= v for k, v in demand.items())

    def acquire(self, demand: dict[str, int]) -> None:
        for k, v in demand.items():
            self.available[k] = self.available.get(k, 0) - v

    def release(self, demand: dict[str, int]) -> None:
        for k, v in demand.items():
            self.available[k] = self.available.get(k, 0) + v

    def feasible(self, demand: dict[str, int]) -> bool:
        return self.fits(demand, self.total)

    # -- queue ------------------------------------------------------------
    def add(self, task_id: bytes, shape: tuple, item: object) -> bool:
        """Queue a ready task. False when it is infeasible (kept aside)."""
        demand = to_units(shape)
        if not self.feasible(demand):
            self.infeasible[task_id] = (shape, item)
            return False
        self._seq += 1
        self.queues.setdefault(shape, deque()).append((self._seq, task_id, demand, item))
        self.queued += 1
        return True

    def remove(self, task_id: bytes) -> object | None:
        """Take a queued (not started) task out; its item, or None."""
        if task_id in self.infeasible:
            return self.infeasible.pop(task_id)[1]
        for q in self.queues.values():
            for entry in q:
                if entry[1] == task_id:
                    q.remove(entry)
                    self.queued -= 1
                    return entry[3]
        return None

    def pop_runnable(self, limit: int) -> list[tuple[bytes, dict[str, int], object]]:
        """Up to `limit` tasks that fit now, oldest first; their resources are taken."""
        out = []
        while len(out) < limit:
            best = None
            for shape, q in self.queues.items():
                if q and (best is None or q[0][0] < best[1][0][0]) and self.fits(q[0][2]):
                    best = (shape, q)
            if best is None:
                break
            _, task_id, demand, item = best[1].popleft()
            self.queued -= 1
            self.acquire(demand)
            out.append((task_id, demand, item))
        return out

    def has_runnable(self) -> bool:
        return any(q and self.fits(q[0][2]) for q in self.queues.values())

    def grow(self, extra: dict[str, float]) -> list:
        """Totals grew (a resource was added): infeasible tasks may now run."""
        for k, v in to_units(extra).items():
            self.total[k] = self.total.get(k, 0) + v
            self.available[k] = self.available.get(k, 0) + v
        retry = list(self.infeasible.items())
        self.infeasible.clear()
        for task_id, (shape, item) in retry:
            self.add(task_id, shape, item)
        return retry

    def pending_by_shape(self) -> dict[tuple, int]:
        return {shape: len(q) for shape, q in self.queues.items() if q}
