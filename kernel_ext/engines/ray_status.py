"""A `ClusterSnapshot` of a Ray cluster, from Ray's public APIs.

::

    GCS:        ray.nodes()                       nodes, alive, resources total
                per-node available resources      (Ray's GlobalState)
                pending demands by shape          (autoscaler SDK's cluster resource state):
                                                  a shape no alive node has is infeasible
    dashboard:  ray.util.state list_tasks/actors  tasks by name and state, actors
                GET /nodes?view=summary            per-node CPU %, memory, object store
                list_tasks FINISHED/FAILED, detail the task stream (`task_events`)

Without the dashboard (``ray`` without ``[default]``, ``include_dashboard=False``)
the snapshot has nodes and resources only, and says so in its notes. The
calls are a handful per snapshot; the views take one every `REFRESH` seconds.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from runtime.snapshot import ActorInfo, ClusterSnapshot, NodeSnapshot

from . import ray_tags

REFRESH = 2.0
NO_DASHBOARD = (
    "Ray's dashboard is not running here: no per-node CPU/memory, tasks or actors (install ray[default])."
)
PENDING = {
    "PENDING_ARGS_AVAIL",
    "PENDING_NODE_ASSIGNMENT",
    "PENDING_OBJ_STORE_MEM_AVAIL",
    "SUBMITTED_TO_WORKER",
}


def _per_node_available() -> dict[str, dict[str, float]]:
    try:
        import ray._private.state as state

        return state.state.available_resources_per_node()
    except Exception:
        return {}


def _dashboard_summary(url: str, token: str | None) -> dict[str, dict]:
    """Per-node hardware stats from the dashboard, keyed by node id (empty if unreachable)."""
    if not url:
        return {}
    if not url.startswith("http"):
        url = "http://" + url
    req = urllib.request.Request(url.rstrip("/") + "/nodes?view=summary")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            data = json.load(resp)
    except Exception:
        return {}
    out = {}
    for n in (data.get("data") or {}).get("summary") or []:
        raylet = n.get("raylet") or {}
        node_id = raylet.get("nodeId")
        if node_id:
            out[node_id] = n
    return out


def _pending_shapes(address: str) -> list[tuple[dict[str, float], int]]:
    """Resource shapes that tasks and actors wait for, with their counts, as the raylets report
    them to the GCS (what ``ray status`` calls pending demands; no dashboard needed)."""
    if not address or address.startswith("ray://"):
        return []  # Ray Client: the GCS is not ours to reach
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        client = getattr(ray._private.worker.global_worker, "gcs_client", None)
        state = get_cluster_resource_state(client)
    except Exception:
        return []
    return [(dict(r.request.resources_bundle), int(r.count)) for r in state.pending_resource_requests]


def fits(shape: dict[str, float], total: dict[str, float]) -> bool:
    """Whether a node with these resources in total could ever run a demand of this shape."""
    return all(v <= total.get(k, 0.0) + 1e-9 for k, v in shape.items() if v > 0)


def infeasible(
    shapes: list[tuple[dict[str, float], int]],
    totals: list[dict[str, float]],
    names: dict[tuple, list[str]] | None = None,
) -> tuple[dict, ...]:
    """The demands no alive node can meet: ``{"name", "resources", "count"}`` each (the names of
    the waiting tasks when the dashboard gave them, else "task or actor")."""
    out = []
    for shape, count in shapes:
        if any(fits(shape, total) for total in totals):
            continue
        known = (names or {}).get(_key(shape)) or []
        name = ", ".join(sorted(set(known))) if known else "task or actor"
        out.append({"name": name, "resources": {k: v for k, v in shape.items() if v > 0}, "count": count})
    return tuple(out)


def _key(shape: dict[str, float]) -> tuple:
    return tuple(sorted((k, float(v)) for k, v in shape.items() if v > 0))


def _waiting_names(api: str | None) -> dict[tuple, list[str]]:
    """Names of the tasks and actors waiting for a node, by resource shape (dashboard only)."""
    names: dict[tuple, list[str]] = {}
    tasks = _state(
        "list_tasks", api, filters=[("state", "=", "PENDING_NODE_ASSIGNMENT")], detail=True, limit=200
    )
    actors = _state("list_actors", api, filters=[("state", "=", "PENDING_CREATION")], detail=True, limit=200)
    for t in tasks or []:
        name = ray_tags.split(getattr(t, "name", "") or "")[0] or "?"
        names.setdefault(_key(getattr(t, "required_resources", None) or {}), []).append(name)
    for a in actors or []:
        names.setdefault(_key(getattr(a, "required_resources", None) or {}), []).append(a.class_name or "?")
    return names


def _api(address: str, dashboard_url: str) -> str | None:
    """Where Ray's state API is: this cluster's dashboard, named. Left to Ray, it looks for Ray
    processes on the machine and refuses when it finds several clusters."""
    if dashboard_url:
        return dashboard_url if "://" in dashboard_url else "http://" + dashboard_url
    return address or None


def _state(fn: str, api: str | None = None, **kwargs: Any) -> list | None:
    try:
        from ray.util import state

        return getattr(state, fn)(address=api, timeout=3, raise_on_missing_output=False, **kwargs)
    except Exception:
        return None


KINDS = {"NORMAL_TASK": "task", "ACTOR_TASK": "actor_call", "ACTOR_CREATION_TASK": "actor_create"}
# Tasks of each end state read per refresh. Ray's state API sorts by task id, not by time, before
# it cuts: a cluster keeping more finished tasks than this shows a part of them.
EVENTS_LIMIT = 2000


def task_event(task: Any) -> dict[str, Any] | None:
    """A finished task of Ray's state API (a REST dict or a `TaskState`) as a task stream event
    (the shape of `runtime.timeline.task_events`); None if it never ran."""

    def field(key: str) -> Any:
        return task.get(key) if isinstance(task, dict) else getattr(task, key, None)

    start, end = field("start_time_ms"), field("end_time_ms")
    if not start or not end:
        return None
    return {
        "name": ray_tags.split(field("name") or field("func_or_class_name") or "?")[0],
        "start": float(start) / 1000.0,
        "end": float(end) / 1000.0,
        "ok": field("state") == "FINISHED",
        "kind": KINDS.get(field("type") or "", "task"),
        "node": (field("node_id") or "")[:12],  # as the snapshot names Ray's nodes
        "host": "",
        "worker": int(field("worker_pid") or 0),
    }


def task_events(address: str, dashboard_url: str, since: float) -> list[dict[str, Any]] | None:
    """Ray's finished tasks that ended after `since`, oldest first (None: no dashboard)."""
    api = _api(address, dashboard_url)
    found: list[dict[str, Any]] = []
    for state in ("FINISHED", "FAILED"):
        tasks = _state("list_tasks", api, filters=[("state", "=", state)], detail=True, limit=EVENTS_LIMIT)
        if tasks is None:
            return None
        found += [e for e in map(task_event, tasks) if e is not None and e["end"] > since]
    found.sort(key=lambda e: e["start"])
    return found


def snapshot(address: str, dashboard_url: str, token: str | None, started_at: float) -> ClusterSnapshot:
    import ray

    notes: list[str] = []
    available = _per_node_available()
    hw = _dashboard_summary(dashboard_url, token)
    api = _api(address, dashboard_url)
    tasks = _state(
        "list_tasks", api, filters=[("state", "!=", "FINISHED"), ("state", "!=", "FAILED")], limit=2000
    )
    actors = _state("list_actors", api, filters=[("state", "!=", "DEAD")], limit=2000)
    if tasks is None or not hw:
        notes.append(NO_DASHBOARD)
    running: dict[str, dict[str, int]] = {}
    pending: dict[str, int] = {}
    for t in tasks or []:
        name = ray_tags.split(getattr(t, "name", "") or "")[0] or "?"
        state = getattr(t, "state", "")
        if state == "RUNNING":
            per = running.setdefault(getattr(t, "node_id", "") or "", {})
            per[name] = per.get(name, 0) + 1
        elif state in PENDING:
            pending[name] = pending.get(name, 0) + 1
    actors_by_node: dict[str, list[ActorInfo]] = {}
    for a in actors or []:
        actors_by_node.setdefault(getattr(a, "node_id", "") or "", []).append(
            ActorInfo(
                actor_id=a.actor_id,
                class_name=a.class_name or "",
                name=a.name or "",
                state=a.state or "",
                pid=a.pid or 0,
                pending_calls=0,
            )
        )
    raw_nodes = sorted(ray.nodes(), key=lambda n: (not n.get("Alive"), n.get("NodeManagerAddress", "")))
    alive_totals = [
        {k: float(v) for k, v in (n.get("Resources") or {}).items()} for n in raw_nodes if n.get("Alive")
    ]
    shapes = _pending_shapes(address)
    stuck = infeasible(shapes, alive_totals)
    if stuck and tasks is not None:  # name them: one more dashboard call, only when some are stuck
        stuck = infeasible(shapes, alive_totals, _waiting_names(api))
    nodes = []
    for i, n in enumerate(raw_nodes):
        node_id = n.get("NodeID", "")
        total = {k: float(v) for k, v in (n.get("Resources") or {}).items() if not k.startswith("node:")}
        avail = available.get(node_id, total if not n.get("Alive") else {})
        avail = {k: float(v) for k, v in avail.items() if k in total}
        stats = hw.get(node_id, {})
        mem = stats.get("mem") or [0, 0, 0, 0]  # total, available, percent, used
        store_used = (stats.get("raylet") or {}).get("objectStoreUsedMemory", 0)
        mine = running.get(node_id, {})
        nodes.append(
            NodeSnapshot(
                node_id=node_id[:12],
                address=f"{n.get('NodeManagerAddress', '')}:{n.get('NodeManagerPort', '')}",
                ip=n.get("NodeManagerAddress", ""),
                hostname=n.get("NodeManagerHostname", ""),
                alive=bool(n.get("Alive")),
                resources_total=total,
                resources_available=avail,
                cpu_percent=float(stats.get("cpu") or 0.0),
                memory_total=int(mem[0] or 0),
                memory_used=int(mem[3] if len(mem) > 3 else 0),
                object_store_used=int(store_used or 0),
                object_store_capacity=int(total.get("object_store_memory", 0)),
                workers_busy=sum(mine.values()),
                running=mine,
                pending=pending if i == 0 else {},
                infeasible=stuck if i == 0 else (),
                actors=tuple(actors_by_node.get(node_id, ())),
            )
        )
    return ClusterSnapshot(
        cluster_id="ray",
        head_address=address,
        started_at=started_at or time.time(),
        nodes=tuple(nodes),
        notes=tuple(notes),
    )
