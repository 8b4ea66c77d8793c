"""One plain record of what a cluster is doing, for every view of it.

`nbcluster status`, the notebook's resource view and the lab sidebar all
read a `ClusterSnapshot` instead of poking at internals. Nodes send their
part to the head every second; `snapshot()` asks the head for the lot.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tabulate import tabulate


@dataclasses.dataclass(frozen=True)
class ActorInfo:
    actor_id: str
    class_name: str
    name: str
    state: str
    pid: int
    pending_calls: int


@dataclasses.dataclass(frozen=True)
class NodeSnapshot:
    node_id: str
    address: str
    ip: str
    hostname: str
    alive: bool
    resources_total: dict[str, float]
    resources_available: dict[str, float]
    cpu_percent: float = 0.0
    memory_total: int = 0
    memory_used: int = 0
    object_store_used: int = 0
    object_store_capacity: int = 0
    object_store_spilled: int = 0
    num_objects: int = 0
    workers_busy: int = 0
    workers_idle: int = 0
    workers_blocked: int = 0
    running: dict[str, int] = dataclasses.field(default_factory=dict)
    pending: dict[str, int] = dataclasses.field(default_factory=dict)
    infeasible: tuple[dict, ...] = ()
    tasks_finished: int = 0
    gateway: str = ""  # where other nodes reach it
    transfer_in: int = 0  # bytes of objects pulled from other nodes
    transfer_out: int = 0  # bytes of objects sent to other nodes
    actors: tuple[ActorInfo, ...] = ()

    @property
    def resources_used(self) -> dict[str, float]:
        return {
            k: round(v - self.resources_available.get(k, 0.0), 4) for k, v in self.resources_total.items()
        }


@dataclasses.dataclass(frozen=True)
class ClusterSnapshot:
    cluster_id: str
    head_address: str
    started_at: float
    nodes: tuple[NodeSnapshot, ...]
    named_actors: tuple[dict, ...] = ()
    taken_at: float = dataclasses.field(default_factory=time.time)
    notes: tuple[str, ...] = ()  # what this snapshot could not see (e.g. an engine without a dashboard)

    @property
    def alive_nodes(self) -> list[NodeSnapshot]:
        return [n for n in self.nodes if n.alive]

    def total(self, resource: str) -> float:
        return sum(n.resources_total.get(resource, 0.0) for n in self.alive_nodes)

    def used(self, resource: str) -> float:
        return sum(n.resources_used.get(resource, 0.0) for n in self.alive_nodes)

    @property
    def pending(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.alive_nodes:
            for k, v in n.pending.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def running(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.alive_nodes:
            for k, v in n.running.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def infeasible(self) -> list[dict]:
        return [t for n in self.alive_nodes for t in n.infeasible]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSnapshot:
        node_fields = {f.name for f in dataclasses.fields(NodeSnapshot)}
        nodes = []
        for raw in data.get("nodes", []):
            fields = {k: v for k, v in raw.items() if k in node_fields}
            fields["actors"] = tuple(ActorInfo(**a) for a in raw.get("actors", []))
            fields["infeasible"] = tuple(raw.get("infeasible", []))
            fields.setdefault("resources_available", dict(raw.get("resources_total", {})))
            nodes.append(NodeSnapshot(**fields))
        return cls(
            cluster_id=data.get("cluster_id", ""),
            head_address=data.get("head_address", ""),
            started_at=data.get("started_at", 0.0),
            nodes=tuple(nodes),
            named_actors=tuple(data.get("named_actors", [])),
        )


def describe_infeasible(demand: dict) -> str:
    """``"f ×3 needs {'GPU': 8.0}"``: one infeasible demand, as every view shows it."""
    count = int(demand.get("count", 1) or 1)
    times = f" ×{count}" if count > 1 else ""
    return f"{demand['name']}{times} needs {demand['resources']}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _num(v: float) -> str:
    return f"{v:g}"


def format_text(snap: ClusterSnapshot) -> str:
    """The terminal/plain-text view (``nbcluster status``, notebook fallback)."""
    lines = [
        f"Cluster {snap.cluster_id} at {snap.head_address} — {len(snap.alive_nodes)} node(s) alive, "
        f"up {time.time() - snap.started_at:.0f} s",
        "",
    ]
    rows = []
    for n in snap.nodes:
        res = ", ".join(
            f"{k} {_num(n.resources_used.get(k, 0))}/{_num(v)}"
            for k, v in sorted(n.resources_total.items())
            if k != "memory"
        )
        rows.append(
            [
                n.node_id,
                n.ip,
                "alive" if n.alive else "DEAD",
                f"{n.cpu_percent:.0f}%",
                f"{_gib(n.memory_used)}/{_gib(n.memory_total)}",
                f"{_gib(n.object_store_used)}/{_gib(n.object_store_capacity)}"
                + (f" (+{_gib(n.object_store_spilled)} spilled)" if n.object_store_spilled else ""),
                f"{n.workers_busy} busy, {n.workers_idle} idle"
                + (f", {n.workers_blocked} blocked" if n.workers_blocked else ""),
                res,
            ]
        )
    lines.append(
        tabulate(
            rows,
            headers=[
                "node",
                "ip",
                "state",
                "cpu",
                "memory",
                "object store",
                "workers",
                "resources used/total",
            ],
        )
    )
    running = snap.running
    pending = snap.pending
    moved = [n for n in snap.nodes if n.transfer_in or n.transfer_out]
    if moved:
        lines.append(
            "Objects moved between nodes: "
            + ", ".join(f"{n.node_id} {_gib(n.transfer_in)} in / {_gib(n.transfer_out)} out" for n in moved)
        )
    lines.append("")
    lines.append("Running tasks: " + (", ".join(f"{k} ×{v}" for k, v in sorted(running.items())) or "none"))
    lines.append("Pending tasks: " + (", ".join(f"{k} ×{v}" for k, v in sorted(pending.items())) or "none"))
    infeasible = snap.infeasible
    if infeasible:
        lines.append("Infeasible (no node has the resources; pending until one joins):")
        for t in infeasible:
            lines.append(f"  {describe_infeasible(t)}")
    actors = [a for n in snap.nodes for a in n.actors]
    if actors:
        lines.append("")
        lines.append(
            tabulate(
                [[a.class_name, a.name or "", a.state, a.pid or "", a.pending_calls] for a in actors],
                headers=["actor", "name", "state", "pid", "pending calls"],
            )
        )
    lines.extend(f"Note: {note}" for note in snap.notes)
    return "\n".join(lines)


def snapshot(timeout: float | None = 30.0) -> ClusterSnapshot:
    """The current state of the cluster this process is connected to (waiting up to `timeout` s)."""
    from . import session

    return ClusterSnapshot.from_dict(session.client().request("snapshot", timeout=timeout))
