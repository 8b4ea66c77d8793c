"""Ray clusters the user added to the sidebar by address: remembered, described, forgotten.

::

    Add (GCS host:port, token) ─▶ TCP probe ─▶ ray_locate subprocess (GCS ─▶ dashboard URL) ─▶ saved
        <jupyter data dir>/nbcluster/ray-clusters.json   address, dashboard, when (no secret)
        <jupyter data dir>/nbcluster/ray-tokens/<id>      the token, readable by its owner only
    the panel's poll ─▶ describe ─▶ the dashboard's REST API (plain HTTP, five small GETs,
        at most once per REFRESH seconds per cluster however many browsers poll) ─▶ a
        `ClusterSnapshot`, the record every other card shows
    the task stream's poll ─▶ events ─▶ /api/v0/tasks (FINISHED, FAILED; two GETs, cached the
        same way) ─▶ events shaped as `runtime.timeline.task_events`'s
    Remove ─▶ forgotten; the Ray cluster is not touched (we did not start it, we never stop it)

The Jupyter server never imports Ray for this: `ray.init` would make it a Ray driver,
and Ray's GCS client keeps process-wide state (address, token). Only finding the
dashboard needs the GCS, and that runs in a short-lived subprocess, once per cluster.
A cluster that stops answering is shown as unreachable and asked again only every
RETRY seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runtime.snapshot import ActorInfo, ClusterSnapshot, NodeSnapshot

from ..engines.ray_status import EVENTS_LIMIT, task_event

INSTALL = 'pip install "nbcluster[ray]"'
REFRESH = 2.0  # seconds a description is reused
RETRY = 10.0  # seconds before an unreachable cluster is asked again
RELOCATE = 60.0  # seconds between two searches for a moved dashboard (each imports Ray)
LOCATE_TIMEOUT = 60.0  # the locating subprocess imports Ray (seconds on a busy machine)
HTTP_TIMEOUT = 3.0
LIMIT = 2000  # tasks and actors read per snapshot
PENDING = {
    "PENDING_ARGS_AVAIL",
    "PENDING_NODE_ASSIGNMENT",
    "PENDING_OBJ_STORE_MEM_AVAIL",
    "PENDING_ARGS_FETCH",
    "SUBMITTED_TO_WORKER",
}


class RayClusterError(ValueError):
    """A Ray cluster could not be added; the message says what to do."""


def ray_installed() -> bool:
    """Whether Ray can be imported where the Jupyter server runs (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def store_dir() -> Path:
    """``<jupyter data dir>/nbcluster`` (``JUPYTER_DATA_DIR`` moves it)."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "nbcluster"


def cluster_id(address: str) -> str:
    return "ray-" + hashlib.sha1(address.encode()).hexdigest()[:12]


def check_address(address: str) -> str:
    """`address` as host:port, or a `RayClusterError` saying what a Ray address looks like."""
    address = address.strip()
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep or not host or not port.isdigit() or int(port) > 65535:
        raise RayClusterError(
            f"{address!r} is not a Ray GCS address: give host:port as `ray start --head` prints it "
            "(e.g. 10.0.0.5:6379)"
        )
    return address


def probe(address: str, timeout: float = 2.0) -> str:
    """ "" when something listens at `address`, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return ""
    except (OSError, ValueError) as e:
        return f"no Ray cluster answers at {address} ({getattr(e, 'strerror', None) or e})"


def locate(address: str, token: str) -> str:
    """The cluster's dashboard URL, asked of its GCS in a subprocess (see ray_locate.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "kernel_ext.lab.ray_locate", address],
            capture_output=True,
            text=True,
            timeout=LOCATE_TIMEOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RayClusterError(f"the Ray cluster at {address} did not say where its dashboard is") from None
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    answer = json.loads(lines[-1]) if lines else {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    if "dashboard" not in answer:
        raise RayClusterError(answer.get("error") or "unknown error")
    return answer["dashboard"]


# ------------------------------------------------------------------ the dashboard's REST API
def _get(dashboard: str, path: str, token: str) -> Any:
    request = urllib.request.Request(dashboard.rstrip("/") + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        return json.load(response)


def _state_list(
    dashboard: str,
    what: str,
    token: str,
    exclude: tuple[str, ...],
    detail: bool = False,
    only: str = "",
    limit: int = LIMIT,
) -> list[dict]:
    """A list of Ray's state API (``/api/v0/<what>``) without the states in `exclude` (and only
    state `only` if given)."""
    query = [("limit", str(limit)), ("detail", "true" if detail else "false")]
    for state in exclude:
        query += [("filter_keys", "state"), ("filter_predicates", "!="), ("filter_values", state)]
    if only:
        query += [("filter_keys", "state"), ("filter_predicates", "="), ("filter_values", only)]
    data = _get(dashboard, f"/api/v0/{what}?{urllib.parse.urlencode(query)}", token)
    return ((data.get("data") or {}).get("result") or {}).get("result") or []


def finished_tasks(dashboard: str, token: str) -> list[dict[str, Any]]:
    """The cluster's finished and failed tasks that ran, as task stream events, oldest first."""
    with ThreadPoolExecutor(2) as pool:
        parts = [
            pool.submit(_state_list, dashboard, "tasks", token, (), True, state, EVENTS_LIMIT)
            for state in ("FINISHED", "FAILED")
        ]
        tasks = [t for part in parts for t in part.result()]
    events = [e for e in map(task_event, tasks) if e is not None]
    events.sort(key=lambda e: e["start"])
    return events


def _camel(name: str) -> str:
    """A resource name as the dashboard's /api/cluster_status spells it (Ray's to_camel_case)."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def snapshot(dashboard: str, token: str, address: str) -> tuple[ClusterSnapshot, float | None]:
    """The cluster as a `ClusterSnapshot`, and how long it has been idle (seconds; None: unknown)."""
    with ThreadPoolExecutor(5) as pool:
        nodes_f = pool.submit(_state_list, dashboard, "nodes", token, (), True)
        summary_f = pool.submit(_get, dashboard, "/nodes?view=summary", token)
        status_f = pool.submit(_get, dashboard, "/api/cluster_status", token)
        tasks_f = pool.submit(_state_list, dashboard, "tasks", token, ("FINISHED", "FAILED"))
        actors_f = pool.submit(_state_list, dashboard, "actors", token, ("DEAD",))
        raw_nodes = nodes_f.result()  # the one that must answer; the rest may fail alone
        parts = {}
        for name, fut in (
            ("summary", summary_f),
            ("status", status_f),
            ("tasks", tasks_f),
            ("actors", actors_f),
        ):
            try:
                parts[name] = fut.result()
            except Exception:  # noqa: BLE001 - a part missing leaves its numbers at zero
                parts[name] = None
    hw: dict[str, dict] = {}
    for n in ((parts["summary"] or {}).get("data") or {}).get("summary") or []:
        node_id = (n.get("raylet") or {}).get("nodeId")
        if node_id:
            hw[node_id] = n
    report = (((parts["status"] or {}).get("data") or {}).get("clusterStatus") or {}).get("loadMetricsReport")
    usage = (report or {}).get("usageByNode") or {}
    running: dict[str, dict[str, int]] = {}
    pending: dict[str, int] = {}
    for t in parts["tasks"] or []:
        name = t.get("name") or t.get("func_or_class_name") or "?"
        if t.get("state") == "RUNNING":
            per = running.setdefault(t.get("node_id") or "", {})
            per[name] = per.get(name, 0) + 1
        elif t.get("state") in PENDING:
            pending[name] = pending.get(name, 0) + 1
    actors: dict[str, list[ActorInfo]] = {}
    for a in parts["actors"] or []:
        actors.setdefault(a.get("node_id") or "", []).append(
            ActorInfo(
                actor_id=a.get("actor_id") or "",
                class_name=a.get("class_name") or "",
                name=a.get("name") or "",
                state=a.get("state") or "",
                pid=a.get("pid") or 0,
                pending_calls=0,
            )
        )
    nodes, idle, started = [], [], []
    raw_nodes = sorted(raw_nodes, key=lambda n: (n.get("state") != "ALIVE", not n.get("is_head_node")))
    for i, n in enumerate(raw_nodes):
        node_id = n.get("node_id") or ""
        alive = n.get("state") == "ALIVE"
        total = {
            k: float(v) for k, v in (n.get("resources_total") or {}).items() if not k.startswith("node:")
        }
        used = usage.get(node_id) or {}
        available = {k: round(v - float((used.get(_camel(k)) or [0.0])[0]), 4) for k, v in total.items()}
        stats = hw.get(node_id) or {}
        raylet = stats.get("raylet") or {}
        mem = stats.get("mem") or [0, 0, 0, 0]  # total, available, percent, used
        idle_ms = (raylet.get("stateSnapshot") or {}).get("idleDurationMs")
        if alive and idle_ms is not None:
            idle.append(float(idle_ms) / 1000.0)
        if n.get("start_time_ms"):
            started.append(float(n["start_time_ms"]) / 1000.0)
        mine = running.get(node_id, {})
        nodes.append(
            NodeSnapshot(
                node_id=node_id[:12],
                address=f"{n.get('node_ip', '')}:{raylet.get('nodeManagerPort', '')}",
                ip=n.get("node_ip") or "",
                hostname=stats.get("hostname") or n.get("node_name") or "",
                alive=alive,
                resources_total=total,
                resources_available=available,
                cpu_percent=float(stats.get("cpu") or 0.0),
                memory_total=int(mem[0] or 0),
                memory_used=int(mem[3] if len(mem) > 3 else 0),
                object_store_used=int(raylet.get("objectStoreUsedMemory") or 0),
                object_store_capacity=int(total.get("object_store_memory", 0)),
                workers_busy=sum(mine.values()),
                running=mine,
                pending=pending if i == 0 else {},
                actors=tuple(actors.get(node_id, ())),
            )
        )
    notes = tuple(
        f"Ray's dashboard did not send {what}"
        for what in ("summary", "status", "tasks", "actors")
        if parts[what] is None
    )
    snap = ClusterSnapshot(
        cluster_id=cluster_id(address),
        head_address=address,
        started_at=min(started) if started else 0.0,
        nodes=tuple(nodes),
        notes=notes,
    )
    return snap, (min(idle) if idle else None)


# ------------------------------------------------------------------ the remembered list
@dataclasses.dataclass
class RayCluster:
    cluster_id: str
    address: str
    added_at: float
    dashboard: str = ""
    has_token: bool = False


class RayClusters:
    """The Ray clusters added by address, kept in the user's Jupyter data dir."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.cache: dict[str, tuple[float, dict[str, Any]]] = {}  # id -> (monotonic, described)
        self.fetching: dict[str, threading.Lock] = {}
        self.located: dict[str, float] = {}  # id -> when its dashboard was last searched for
        self.event_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # id -> (monotonic, events)

    # -- the files
    @property
    def path(self) -> Path:
        return (self.folder or store_dir()) / "ray-clusters.json"

    def token_path(self, cid: str) -> Path:
        return (self.folder or store_dir()) / "ray-tokens" / cid

    def list(self) -> list[RayCluster]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        fields = {f.name for f in dataclasses.fields(RayCluster)}
        return [RayCluster(**{k: v for k, v in c.items() if k in fields}) for c in raw.get("clusters", [])]

    def _save(self, clusters: list[RayCluster]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"clusters": [dataclasses.asdict(c) for c in clusters]}, indent=1))
        tmp.replace(self.path)

    def token(self, cluster: RayCluster) -> str:
        if not cluster.has_token:
            return ""
        try:
            return self.token_path(cluster.cluster_id).read_text().strip()
        except OSError:
            return ""

    def find(self, cid: str) -> RayCluster | None:
        return next((c for c in self.list() if c.cluster_id == cid), None)

    # -- acting
    def add(self, address: str, token: str = "") -> RayCluster:
        """Remember the Ray cluster at `address` once it answered; `RayClusterError` says why not."""
        if not ray_installed():
            raise RayClusterError(f"adding a Ray cluster needs Ray where Jupyter runs: run {INSTALL}")
        address = check_address(address)
        token = token.strip()
        why = probe(address)
        if why:
            raise RayClusterError(
                f"{why}: check the address `ray start --head` printed and that the head runs"
            )
        dashboard = locate(address, token)
        cluster = RayCluster(cluster_id(address), address, time.time(), dashboard, bool(token))
        with self.lock:
            if token:
                path = self.token_path(cluster.cluster_id)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(token)
            self._save([c for c in self.list() if c.cluster_id != cluster.cluster_id] + [cluster])
            self.cache.pop(cluster.cluster_id, None)
            self.event_cache.pop(cluster.cluster_id, None)
        return cluster

    def remove(self, cid: str) -> bool:
        """Forget a cluster (it keeps running); whether it was listed."""
        with self.lock:
            clusters = self.list()
            kept = [c for c in clusters if c.cluster_id != cid]
            if len(kept) == len(clusters):
                return False
            self._save(kept)
            self.cache.pop(cid, None)
            self.event_cache.pop(cid, None)
        try:
            self.token_path(cid).unlink()
        except FileNotFoundError:
            pass
        return True

    def _set_dashboard(self, cid: str, dashboard: str) -> None:
        with self.lock:
            clusters = self.list()
            for c in clusters:
                if c.cluster_id == cid:
                    c.dashboard = dashboard
            self._save(clusters)

    # -- describing
    def connect_code(self, cluster: RayCluster) -> str:
        code = f"%load_ext kernel_ext\n%cluster connect {cluster.address} --engine ray"
        if cluster.has_token:  # the file, not the secret: the cell may be saved in a notebook
            code += f" --token-file {shlex.quote(str(self.token_path(cluster.cluster_id)))}"
        return code

    def describe(self, cluster: RayCluster) -> dict[str, Any]:
        """One Ray cluster as JSON for the sidebar (the same shape as ours); cached."""
        lock = self.fetching.setdefault(cluster.cluster_id, threading.Lock())
        with lock:  # concurrent polls wait for one fetch instead of each asking the cluster
            taken, described = self.cache.get(cluster.cluster_id, (0.0, None))
            if described is not None:
                fresh_for = RETRY if described["error"] else REFRESH
                if time.monotonic() - taken < fresh_for:
                    return described
            described = self._describe(cluster)
            self.cache[cluster.cluster_id] = (time.monotonic(), described)
            return described

    def events(self, cluster: RayCluster, since: float) -> list[dict[str, Any]]:
        """Ray's finished tasks that ended after `since`, for the task stream; cached as `describe`.

        A dashboard that does not answer gives no events (the card says why).
        """
        lock = self.fetching.setdefault("events-" + cluster.cluster_id, threading.Lock())
        with lock:
            taken, events = self.event_cache.get(cluster.cluster_id, (0.0, []))
            if not taken or time.monotonic() - taken >= REFRESH:
                try:
                    events = finished_tasks(cluster.dashboard, self.token(cluster))
                except Exception:  # noqa: BLE001 - unreachable: describe() says so on the card
                    events = []
                self._name_hosts(cluster.cluster_id, events)
                self.event_cache[cluster.cluster_id] = (time.monotonic(), events)
        return [e for e in events if e["end"] > since]

    def _name_hosts(self, cid: str, events: list[dict[str, Any]]) -> None:
        """Fill each event's host from the nodes of the last description (Ray's tasks name none)."""
        described = self.cache.get(cid, (0.0, None))[1]
        nodes = ((described or {}).get("snapshot") or {}).get("nodes") or []
        hosts = {n["node_id"]: n.get("hostname") or n.get("ip") or "" for n in nodes}
        for e in events:
            e["host"] = hosts.get(e["node"], "")

    def _describe(self, cluster: RayCluster) -> dict[str, Any]:
        from .registry import summary

        out: dict[str, Any] = {
            "cluster_id": cluster.cluster_id,
            "head_address": cluster.address,
            "started_at": 0.0,
            "embedded": False,
            "role": "head",
            "owner": {"kind": "ray", "pid": 0, "name": "added by address"},
            "connect_code": self.connect_code(cluster),
            "engine": "ray",
            "dashboard": cluster.dashboard,
        }
        token = self.token(cluster)
        try:
            snap, idle = snapshot(cluster.dashboard, token, cluster.address)
        except Exception as e:  # noqa: BLE001 - unreachable: said on the card, asked again after RETRY
            gcs_down = probe(cluster.address)
            why = (
                gcs_down or f"Ray's dashboard at {cluster.dashboard} did not answer ({e or type(e).__name__})"
            )
            found = None
            # Only a head that came back with its dashboard elsewhere (the GCS answers, the old
            # dashboard port is closed) is worth locating again, and not more than every RELOCATE s.
            dashboard_at = cluster.dashboard.split("//")[-1].rstrip("/")
            moved = not gcs_down and (not dashboard_at or bool(probe(dashboard_at)))
            last = self.located.get(cluster.cluster_id, 0.0)
            if moved and time.monotonic() - last > RELOCATE:
                self.located[cluster.cluster_id] = time.monotonic()
                try:
                    dashboard = locate(cluster.address, token)
                    self._set_dashboard(cluster.cluster_id, dashboard)
                    found = snapshot(dashboard, token, cluster.address)
                    out["dashboard"] = dashboard
                except Exception as again:  # noqa: BLE001
                    why = str(again) or type(again).__name__
            if found is None:
                out.update(error=f"unreachable: {why}", snapshot=None, summary=None, idle_seconds=None)
                return out
            snap, idle = found
        numbers = summary(snap)
        busy = numbers["running"] or numbers["pending"]
        out.update(
            started_at=snap.started_at,
            error="",
            snapshot=dataclasses.asdict(snap),
            summary=numbers,
            idle_seconds=0.0 if busy else idle,
        )
        return out
