"""The node's memory monitor at work: it reads the node's memory and kills one worker past the
threshold (what to measure and whom to kill are decided in `memory`).

::

    daemon loop ── every `refresh` s ──▶ MemoryMonitor.check()
        a kill pending (its process not gone yet): nothing, its memory is not freed
        Reader.usage() (files opened once, pread) ─▶ memory.above(threshold)? ─▶ memory.pick(leased and actor workers)
        ─▶ LEASE_KILLED(lease, reason) to the lease's owner, flushed before the kill, so its
           socket closing finds the reason there ─▶ SIGKILL
    zygote "exit" of that pid ─▶ cause_of(pid): an actor's death says why (placement.worker_death)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import config as cfg
from ..wire.protocol import Kind
from . import memory
from .outbox import Outbox, kill
from .pool import WorkerPool
from .records import ACTOR, LEASED, Worker

log = logging.getLogger("runtime.node")


def rss(pid: int) -> int:
    """A process's resident memory in bytes; 0 when it is gone."""
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return 0


class MemoryMonitor:
    """Whom the memory monitor killed, and why; one kill at a time."""

    def __init__(
        self, node_id: str, conf: dict, pool: WorkerPool, outbox: Outbox, flush: Callable[[], None]
    ) -> None:
        self.node_id, self.pool, self.outbox, self.flush = node_id, pool, outbox, flush
        self.threshold, self.refresh = memory.settings(conf)
        self.pending = 0  # the worker it killed, until that process is gone
        self.causes: dict[int, str] = {}  # pid -> why it was killed
        self.reader: memory.Reader | None = None  # opened at the first check
        # Gives memory back without killing anyone (the store's spare segments); whether it
        # freed any. Tried first; the next check sees whether that was enough.
        self.relieve: Callable[[], bool] = lambda: False

    def check(self) -> None:
        if self.pending:
            if cfg.pid_alive(self.pending):
                return
            self.pending = 0
        if self.reader is None:
            self.reader = memory.Reader()
        used, total = self.reader.usage()
        if not memory.above(used, total, self.threshold) or self.relieve():
            return
        by_pid: dict[int, Worker] = {}
        candidates = []
        for w in self.pool.workers.values():
            if w.pid and (w.state == ACTOR or (w.state == LEASED and w.lease is not None)):
                by_pid[w.pid] = w
                kind = "actor" if w.state == ACTOR else "task"
                candidates.append(memory.Candidate(w.pid, kind, w.busy_since))
        victim = memory.pick(candidates)
        if victim is None:
            return
        victim = memory.Candidate(victim.pid, victim.kind, victim.since, rss(victim.pid))
        reason = memory.describe(victim, used, total, self.threshold, self.node_id)
        log.warning("%s", reason)
        w = by_pid[victim.pid]
        self.causes[victim.pid] = reason
        if w.lease is not None:
            self.outbox.emit(w.lease.owner, (Kind.LEASE_KILLED, w.lease.lease_id, reason))
            self.flush()
        self.pending = victim.pid
        kill(victim.pid)

    def cause_of(self, pid: int) -> str:
        """Why the monitor killed `pid` ("" if it did not); asked once, when the process exited."""
        return self.causes.pop(pid, "")
