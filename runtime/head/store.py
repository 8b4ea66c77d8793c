"""The head's control store on disk: SQLite (the standard library's), one file per cluster.

::

    Head (head/control.py) ── a change that matters ──▶ ControlStore.<write>() ── COMMIT ──▶
        node joined / left / dead / forgotten               <cluster dir>/control.db (WAL)
        named actor registered / moved / removed
        a driver's job id handed out
    head process start (restore) ◀── ControlStore.load() ── Stored(nodes, names, jobs, next_job)

Every write commits before the head answers the message that caused it, so
what a caller was told (a name registered, a job id) is on disk before the
caller hears it. WAL mode with ``synchronous=NORMAL``: a committed
transaction survives the head process being killed (``kill -9``); a power
loss may lose the last ones (the nodes, which hold the real state, do not
survive that either). What goes in is what the head cannot learn again from
the nodes' reports: who joined (and with which address, so drivers find their
machine's node), who died (so a node declared dead stays out), the names of
actors and the job counter. Reports themselves (resources in use, workers)
are not stored: the nodes send them again every second.

The file lives in the cluster's folder (mode 0700) and is written 0600: it
holds pickled actor metadata, which only the cluster's owner may read, like
the key next to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sqlite3
import time
from pathlib import Path
from typing import Any

FILENAME = "control.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,          -- JSON: address, resources, pid, hostname, ip, gateway, joined_at
    alive INTEGER NOT NULL,
    dead_reason TEXT NOT NULL DEFAULT '',
    dead_at REAL NOT NULL DEFAULT 0 -- wall clock, for forgetting it after a while
);
CREATE TABLE IF NOT EXISTS names (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    actor_id BLOB NOT NULL,
    meta BLOB NOT NULL,            -- pickled: the class's methods and options (ActorHandle's meta)
    state TEXT NOT NULL,
    node_id TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    hostname TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
# What a node record keeps on disk (the rest is rebuilt from its reports).
NODE_FIELDS = ("node_id", "address", "resources_total", "pid", "hostname", "ip", "gateway", "joined_at")


@dataclasses.dataclass
class Stored:
    """Everything the store holds, as plain data (see `restore.py` for what is trusted)."""

    nodes: list[dict[str, Any]]  # NODE_FIELDS + alive, dead_reason, dead_at
    names: dict[tuple[str, str], dict[str, Any]]  # (namespace, name) -> actor_id, meta, state, node_id
    jobs: list[dict[str, Any]]
    next_job: int


def path_in(cluster_dir: str | os.PathLike) -> Path:
    """Where a cluster's control store lives: next to its connection file."""
    return Path(cluster_dir) / FILENAME


class ControlStore:
    """One SQLite connection, used by the head's single thread only."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        new = not self.path.exists()
        if new:  # created 0600 before SQLite opens it
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        # isolation_level=None: autocommit; every write below is one statement or one
        # explicit transaction, committed before the method returns.
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- nodes --------------------------------------------------------------
    def node_joined(self, node: dict[str, Any]) -> None:
        record = json.dumps({k: node.get(k) for k in NODE_FIELDS})
        self.db.execute(
            "INSERT OR REPLACE INTO nodes (node_id, record, alive, dead_reason, dead_at) VALUES (?, ?, 1, '', 0)",
            (node["node_id"], record),
        )

    def node_dead(self, node_id: str, reason: str, at: float | None = None) -> None:
        self.db.execute(
            "UPDATE nodes SET alive = 0, dead_reason = ?, dead_at = ? WHERE node_id = ?",
            (reason, time.time() if at is None else at, node_id),
        )

    def forget_node(self, node_id: str) -> None:
        self.db.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))

    # -- named actors -------------------------------------------------------
    def name_registered(self, namespace: str, name: str, entry: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO names (namespace, name, actor_id, meta, state, node_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                namespace,
                name,
                entry["actor_id"],
                pickle.dumps(entry["meta"], pickle.HIGHEST_PROTOCOL),
                entry["state"],
                entry["node_id"],
            ),
        )

    def name_moved(self, namespace: str, name: str, state: str, node_id: str) -> None:
        self.db.execute(
            "UPDATE names SET state = ?, node_id = ? WHERE namespace = ? AND name = ?",
            (state, node_id, namespace, name),
        )

    def name_removed(self, namespace: str, name: str) -> None:
        self.db.execute("DELETE FROM names WHERE namespace = ? AND name = ?", (namespace, name))

    # -- jobs ---------------------------------------------------------------
    def job_started(self, job_id: int, hostname: str) -> None:
        """A driver got `job_id`: the counter moves past it in the same transaction."""
        with self.db:  # one transaction
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO jobs (job_id, hostname, started_at) VALUES (?, ?, ?)",
                (job_id, hostname, time.time()),
            )
            self.db.execute(
                "INSERT OR REPLACE INTO counters (name, value) VALUES ('next_job', ?)", (job_id + 1,)
            )

    # -- reading it back ----------------------------------------------------
    def load(self) -> Stored:
        nodes = []
        for node_id, record, alive, dead_reason, dead_at in self.db.execute(
            "SELECT node_id, record, alive, dead_reason, dead_at FROM nodes"
        ):
            node = json.loads(record)
            node.update(node_id=node_id, alive=bool(alive), dead_reason=dead_reason, dead_at=dead_at)
            nodes.append(node)
        names = {}
        for namespace, name, actor_id, meta, state, node_id in self.db.execute(
            "SELECT namespace, name, actor_id, meta, state, node_id FROM names"
        ):
            names[(namespace, name)] = {
                "actor_id": bytes(actor_id),
                "meta": pickle.loads(meta),  # our own file, in the owner's 0700 folder
                "state": state,
                "node_id": node_id,
            }
        jobs = [
            {"job_id": j, "hostname": h, "started_at": t}
            for j, h, t in self.db.execute("SELECT job_id, hostname, started_at FROM jobs ORDER BY job_id")
        ]
        row = self.db.execute("SELECT value FROM counters WHERE name = 'next_job'").fetchone()
        return Stored(nodes=nodes, names=names, jobs=jobs, next_job=int(row[0]) if row else 1)
