"""A node's report: its part of the cluster snapshot, sent to the head every second.

Counts only: tasks by name (from the processes' STATS), queued actor
creations, infeasible demands, workers by state, the object store, and the
actors. `runtime.snapshot` turns the head's collection of these into the
record that `nbcluster status`, the widgets and the lab panel read.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from .records import Creation, LeaseRequest, Proc
from .scheduler import Scheduler, from_units


class Reporting(Protocol):
    """What a report reads of its node (`daemon.Node` is one); no import of the daemon."""

    node_id: str
    address: str
    ip: str
    hostname: str
    total_resources: dict[str, float]
    gateway_address: str
    gateway: Any  # gateway.Gateway: bytes_in, bytes_out
    procs: dict[bytes, Proc]
    scheduler: Scheduler
    objects: Any  # objects.Objects: table
    pool: Any  # pool.WorkerPool: counts()
    leases: Any  # leases.Leases: granted
    actors: Any  # actors.Actors: rows()


def report(node: Reporting) -> dict[str, Any]:
    """This node's part of the cluster snapshot (see `snapshot.py`)."""
    import psutil

    running: dict[str, int] = {}
    pending: dict[str, int] = {}
    for proc in node.procs.values():
        for target, counts in zip((running, pending), proc.stats, strict=True):
            for name, n in counts.items():
                target[name] = target.get(name, 0) + n
    for q in node.scheduler.queues.values():
        for entry in q:
            item = entry[3]
            if isinstance(item, Creation):
                name = item.spec.name
                pending[name] = pending.get(name, 0) + 1
    infeasible = [
        {
            "name": item.name if isinstance(item, LeaseRequest) else item.spec.name,
            "resources": dict(shape),
        }
        for shape, item in node.scheduler.infeasible.values()
    ]
    mem = psutil.virtual_memory()
    table = node.objects.table
    return {
        "node_id": node.node_id,
        "address": node.address,
        "ip": node.ip,
        "hostname": node.hostname,
        "pid": os.getpid(),
        "alive": True,
        "resources_total": dict(node.total_resources),
        "resources_available": {
            k: v for k, v in from_units(node.scheduler.available).items() if k != node.affinity
        },
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_total": mem.total,
        "memory_used": mem.total - mem.available,
        "object_store_used": table.shm_used,
        "object_store_capacity": table.capacity,
        "object_store_spilled": table.spilled_bytes,
        "num_objects": len(table.entries),
        **node.pool.counts(),
        "running": running,
        "pending": pending,
        "infeasible": infeasible,
        "tasks_finished": node.leases.granted,
        "gateway": node.gateway_address,
        "transfer_in": node.gateway.bytes_in,
        "transfer_out": node.gateway.bytes_out,
        "actors": node.actors.rows(),
    }
