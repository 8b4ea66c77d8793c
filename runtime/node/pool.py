"""The node's worker pool: processes forked by the zygote, idle or lent.

::

    spawn() ──"spawn wid"──▶ zygote ──fork──▶ worker ──HELLO──▶ hello(): idle
    idle ──(leases.grant / actors.start)──▶ LEASED / ACTOR ──(lease ends)──▶ idle
    zygote "exit" event ──▶ remove(): gone (placement.worker_death decides what follows)
    tick ──▶ reap_idle(): extra workers idle for IDLE_TTL seconds exit

The pool keeps `pool_size` plain workers (one per CPU) started, so a lease
is granted without a fork; more are forked while work waits (up to
`max_workers`), and the extras exit when idle. GPUs are handed to
workers by index.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from .. import config as cfg
from ..wire.protocol import Kind
from .outbox import Outbox, kill
from .records import ACTOR, IDLE, LEASED, STARTING, Worker

IDLE_TTL = 10.0  # seconds an extra idle worker waits for work before it exits


class WorkerPool:
    """The node's workers by id and identity, the idle ones in order, and free GPUs."""

    def __init__(self, node_id: str, cluster_id: str, resources: dict[str, float], outbox: Outbox) -> None:
        self.node_id, self.cluster_id = node_id, cluster_id
        self.outbox = outbox
        self.workers: dict[int, Worker] = {}
        self.by_identity: dict[bytes, Worker] = {}
        self.idle: deque[Worker] = deque()
        self.next_wid = 1
        self.free_gpus = list(range(int(resources.get("GPU", 0))))
        self.pool_size = max(1, int(resources.get("CPU", 1)))
        self.max_workers = max(self.pool_size * 4, 32)
        self.zygote: Any = None  # set by the daemon before it serves (`zygote.Zygote`)

    def spawn(self) -> Worker:
        """Have the zygote fork a new worker; it is STARTING until its HELLO."""
        wid = self.next_wid
        self.next_wid += 1
        w = Worker(wid, cfg.worker_socket(self.cluster_id, self.node_id, wid), self.node_id)
        self.workers[wid] = w
        self.by_identity[w.identity] = w
        self.zygote.spawn(wid)
        return w

    def started(self, wid: int, pid: int) -> None:
        w = self.workers.get(wid)
        if w is not None:
            w.pid = pid

    def hello(self, wid: int, pid: int, direct: str = "") -> bool:
        """A worker connected: it is idle. False if it is not (or no longer) ours.
        `direct`: the address of its listener for callers on other nodes ("": none)."""
        w = self.workers.get(wid)
        if w is None:
            return False
        w.pid = pid
        w.direct = direct
        self.make_idle(w)
        return True

    def make_idle(self, w: Worker) -> None:
        w.state = IDLE
        w.idle_since = time.monotonic()
        self.idle.append(w)
        self.outbox.reschedule()

    def remove(self, wid: int, pid: int) -> Worker | None:
        """A worker process exited: forget it (and its socket file); the record, or None."""
        w = self.workers.pop(wid, None)
        if w is None:
            return None
        self.by_identity.pop(w.identity, None)
        if w in self.idle:
            self.idle.remove(w)
        try:
            os.unlink(w.path)
        except OSError:
            pass
        w.pid = pid
        return w

    def lend(self, w: Worker, state: str, demand: dict[str, int]) -> None:
        """`w` (taken from `idle`) now serves a lease (LEASED) or hosts an actor (ACTOR)."""
        w.state = state
        w.busy_since = time.monotonic()
        self.give_gpus(w, demand)
        if state == ACTOR and self.plain() < self.pool_size:
            self.spawn()  # an actor keeps its worker: keep the pool's size

    def back(self, w: Worker) -> None:
        """A lease ended: its worker (if still alive and leased) is idle again."""
        self.take_gpus(w)
        if w.state == LEASED and w.wid in self.workers:
            self.make_idle(w)

    def give_gpus(self, w: Worker, demand: dict[str, int]) -> None:
        gpus = demand.get("GPU", 0)
        if gpus and self.free_gpus:
            n = max(1, gpus // 10_000)
            w.gpu_ids, self.free_gpus = self.free_gpus[:n], self.free_gpus[n:]

    def take_gpus(self, w: Worker) -> None:
        if w.gpu_ids:
            self.free_gpus.extend(w.gpu_ids)
            w.gpu_ids = []

    def plain(self) -> int:
        """Workers that do not host an actor."""
        return sum(1 for w in self.workers.values() if not w.actor_id)

    def starting(self) -> int:
        return sum(1 for w in self.workers.values() if w.state == STARTING)

    def reap_idle(self, now: float) -> None:
        """Extra workers idle for `IDLE_TTL` seconds are told to exit."""
        extra = self.plain() - self.pool_size
        for w in list(self.idle):
            if extra <= 0:
                break
            if now - w.idle_since > IDLE_TTL:
                self.idle.remove(w)
                self.outbox.emit(w.identity, (Kind.EXIT,))
                extra -= 1

    def kill_all(self) -> None:
        for w in self.workers.values():
            if w.pid:
                kill(w.pid)

    def counts(self) -> dict[str, int]:
        """Busy (leased), idle and blocked (in `get`) workers, for the node's report."""
        return {
            "workers_busy": sum(1 for w in self.workers.values() if w.state == LEASED),
            "workers_idle": len(self.idle),
            "workers_blocked": sum(1 for w in self.workers.values() if w.blocked),
        }
