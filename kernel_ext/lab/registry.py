"""The clusters on this machine as the sidebar sees them: found, described, started, stopped.

Clusters are found the way ``nbcluster status`` and ``runtime.init("auto")``
find them: by their connection files (`runtime.config.list_clusters`). Each
is read through its head's ``snapshot`` request into a `ClusterSnapshot`,
the record ``nbcluster status`` and ``%cluster status`` show, with one
client per cluster kept between polls. Every method blocks: the handlers
run them in threads.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
import time
from typing import Any

from runtime import config as cfg
from runtime import launcher
from runtime.exceptions import ConnectionFailedError
from runtime.snapshot import ClusterSnapshot
from runtime.timeline import last_activity, task_events

SNAPSHOT_TIMEOUT = 3.0
NOT_CUSTOM = ("CPU", "GPU", "memory", "object_store_memory")  # the last: Ray's name for its store
STOP_TIMEOUT = 15.0


class UnknownCluster(LookupError):
    pass


def connect_code(info: cfg.ConnectionInfo) -> str:
    """The cell that connects a notebook to this cluster."""
    return f"%load_ext kernel_ext\n%cluster connect {info.head_address}"


def summary(snap: ClusterSnapshot) -> dict[str, Any]:
    """The numbers a cluster card shows, summed over the alive nodes."""
    alive = snap.alive_nodes
    custom = sorted({k for n in alive for k in n.resources_total if k not in NOT_CUSTOM})
    return {
        "nodes": len(alive),
        "nodes_dead": len(snap.nodes) - len(alive),
        "cpus_used": snap.used("CPU"),
        "cpus_total": snap.total("CPU"),
        "cpu_percent": sum(n.cpu_percent for n in alive) / len(alive) if alive else 0.0,
        "gpus_used": snap.used("GPU"),
        "gpus_total": snap.total("GPU"),
        "memory_used": sum(n.memory_used for n in alive),
        "memory_total": sum(n.memory_total for n in alive),
        "memory_reserved": snap.used("memory"),
        "custom": {k: [snap.used(k), snap.total(k)] for k in custom},
        "running": sum(snap.running.values()),
        "pending": sum(snap.pending.values()),
        "infeasible": len(snap.infeasible),
        "actors": sum(1 for n in alive for a in n.actors if a.state != "dead"),
        "object_store_used": sum(n.object_store_used for n in alive),
        "object_store_capacity": sum(n.object_store_capacity for n in alive),
        "tasks_finished": sum(n.tasks_finished for n in alive),
        "workers_busy": sum(n.workers_busy for n in alive),
        "workers_idle": sum(n.workers_idle for n in alive),
    }


class Registry:
    """Clients to the clusters on this machine, and the clusters this server started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, Any] = {}  # cluster id -> runtime.client.Client (to its head)
        self.started: dict[str, subprocess.Popen] = {}  # heads this server started (reaped here)
        self.busy_at: dict[str, float] = {}  # cluster id -> when we last saw it run or queue tasks

    # ------------------------------------------------------------ finding
    def find(self, cluster_id: str) -> cfg.ConnectionInfo:
        for info in cfg.list_clusters():
            if info.cluster_id == cluster_id:
                return info
        raise UnknownCluster(f"no running cluster {cluster_id!r} on this machine")

    def infos(self) -> list[cfg.ConnectionInfo]:
        """Running clusters, newest first; clients of the ones gone are closed."""
        found = cfg.list_clusters()
        live = {i.cluster_id for i in found}
        with self.lock:
            gone = [k for k in self.clients if k not in live]
            closing = [self.clients.pop(k) for k in gone]
            for k, proc in list(self.started.items()):
                if proc.poll() is not None:
                    del self.started[k]
        for client in closing:
            client.close(say_bye=False)
        return found

    # ------------------------------------------------------------ reading
    def snapshot(self, info: cfg.ConnectionInfo) -> ClusterSnapshot:
        """The cluster's `ClusterSnapshot`, asked of its head."""
        client = self._client(info)
        try:
            data = client.request("snapshot", timeout=SNAPSHOT_TIMEOUT)
        except Exception:
            self._drop(info.cluster_id)
            raise
        return ClusterSnapshot.from_dict(data)

    def describe(self, info: cfg.ConnectionInfo, owner: dict[str, Any] | None = None) -> dict[str, Any]:
        """One cluster as JSON for the sidebar: connection facts, owner, snapshot, summary, idleness."""
        out: dict[str, Any] = {
            "cluster_id": info.cluster_id,
            "head_address": info.head_address,
            "started_at": info.started_at,
            "embedded": info.embedded,
            "role": info.role,
            "owner": owner or _owner(info),
            "connect_code": connect_code(info),
            "engine": "nbcluster",
        }
        try:
            snap = self.snapshot(info)
        except Exception as e:  # stopping, or not answering: listed, with why
            out.update(error=str(e) or type(e).__name__, snapshot=None, summary=None, idle_seconds=None)
            return out
        numbers = summary(snap)
        now = time.time()
        if numbers["running"] or numbers["pending"]:
            self.busy_at[info.cluster_id] = now
        since = max(info.started_at, last_activity(info.cluster_id), self.busy_at.get(info.cluster_id, 0.0))
        out.update(
            error="",
            snapshot=dataclasses.asdict(snap),
            summary=numbers,
            idle_seconds=0.0 if numbers["running"] or numbers["pending"] else max(now - since, 0.0),
        )
        return out

    def events(self, info: cfg.ConnectionInfo, since: float) -> list[dict[str, Any]]:
        """Tasks of every node of the cluster that finished after `since` (`runtime.timeline`):
        this machine's from their files, the other machines' through the head."""
        try:
            head = self._client(info)
        except Exception:  # noqa: BLE001 - no head to ask: this machine's events still stand
            head = None
        events = task_events(info.cluster_id, since, head)
        if events:  # a task finished on some node: not idle (other machines' leave no file here)
            last = max(e["end"] for e in events)
            self.busy_at[info.cluster_id] = max(self.busy_at.get(info.cluster_id, 0.0), last)
        return events

    # ------------------------------------------------------------ acting
    def start(
        self,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: int | None = None,
        resources: dict[str, float] | None = None,
        object_store_memory: int | None = None,
    ) -> cfg.ConnectionInfo:
        """Start a cluster as ``nbcluster start --head`` does: on loopback, living until stopped."""
        wanted = launcher.default_resources(num_cpus, num_gpus, resources, memory)  # ValueError: 400
        info, proc, _ = launcher.start_cluster(
            resources=wanted, object_store_memory=object_store_memory, embedded=False, port=0
        )
        with self.lock:
            self.started[info.cluster_id] = proc
        return info

    def stop(self, info: cfg.ConnectionInfo) -> None:
        """Stop a cluster (a node that joined a head elsewhere only leaves); wait until it is gone."""
        if info.role == "node":
            _signal(info.head_pid, signal.SIGTERM)
        else:
            client = self._client(info)
            try:
                client.request("shutdown", timeout=5.0)
            except ConnectionFailedError:
                _signal(info.head_pid, signal.SIGTERM)
        self._drop(info.cluster_id)
        if not _gone(info, STOP_TIMEOUT):
            _signal(info.head_pid, signal.SIGKILL)  # its node and workers die with it
            _gone(info, STOP_TIMEOUT)
        with self.lock:
            proc = self.started.pop(info.cluster_id, None)
        if proc is not None:
            proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Close every client (the server stops); clusters keep running."""
        with self.lock:
            clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            client.close(say_bye=False)

    # ------------------------------------------------------------ clients
    def _client(self, info: cfg.ConnectionInfo) -> Any:
        from runtime.client import head_client

        with self.lock:
            client = self.clients.get(info.cluster_id)
            if client is None or client.dead_reason:
                client = head_client(info)
                self.clients[info.cluster_id] = client
            return client

    def _drop(self, cluster_id: str) -> None:
        with self.lock:
            client = self.clients.pop(cluster_id, None)
        if client is not None:
            client.close(say_bye=False)


def _owner(info: cfg.ConnectionInfo) -> dict[str, Any]:
    """Who keeps the cluster alive: a process (a script, or a kernel this server does not know)."""
    if not info.embedded:
        return {"kind": "detached", "pid": info.head_pid}
    name = ""
    try:
        import psutil

        name = " ".join(psutil.Process(info.owner_pid).cmdline()[:3])
    except Exception:
        pass
    return {"kind": "process", "pid": info.owner_pid, "name": name}


def _gone(info: cfg.ConnectionInfo, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the cluster's head to exit; whether it did."""
    deadline = time.monotonic() + timeout
    while info.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not info.alive()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
