"""Task events: which function ran on which worker, and when.

::

    worker ──one line per finished task (one write(2))──▶ <cluster dir>/timeline/<node>-<pid>.jsonl
                                                               │ read on demand         │ tailed by its
                                                               │ (this machine's nodes) │ node, every s
                                                               │                        ▼
                                                               │   head: the last minute of every node
                                                               │   (TASK_EVENTS, head/events.py)
                                                               │                        │ "events" request
    runtime.timeline() (Chrome trace events) ◀────────────────┤◀───────────────────────┤ (the other
    lab panel's task stream (/nbcluster/clusters/<id>/events) ◀┤◀───────────────────────┤  machines'
    %cluster status's task stream ◀───────────────────────────┘◀───────────────────────┘  nodes)

Every worker appends its own file, so writers never share a lock; only its
node reads it back (`runtime.node.events`), once a second, what is new. The
cost on the task's path is one small unbuffered ``write``, made just after
the task's result was sent (so a caller may see its result a moment before
the event). A file is rotated (renamed to ``.1``, replacing the older one)
past `ROTATE_LINES` lines, so a long run keeps only recent history on disk.
The files live in the cluster's folder and go with it.

One source per node: `task_events` reads the files of the nodes that write
them here (no delay, and the whole history on disk), and asks the head for
the events of every other node (other machines: about a second late, the
last minute). Without an answer from the head it returns this machine's.

Example::

    import runtime as ray
    ray.init()

    @ray.remote
    def f(x):
        return x

    ray.get([f.remote(i) for i in range(4)])
    events = ray.timeline()                  # Chrome trace events, as Ray's ray.timeline()
    ray.timeline("trace.json")               # open in chrome://tracing or ui.perfetto.dev
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from . import config as cfg

log = logging.getLogger(__name__)
ROTATE_LINES = 20_000
EVENTS_LATE_S = (
    0.1  # s: a worker's held event lines are written at most this late (its node reads once a second)
)
EVENTS_HELD_MAX = 256  # held lines written at once however young
HEAD_TIMEOUT = 3.0  # seconds to wait for the head's events before showing this machine's alone


def folder(cluster_id: str) -> Path:
    """Where the workers of `cluster_id` on this machine write their events."""
    return cfg.runtime_dir() / cluster_id / "timeline"


class Recorder:
    """A worker's event writer: `record()` appends one JSON line to its file (held lines: at `flush`)."""

    def __init__(self, cluster_id: str, node_id: str, pid: int) -> None:
        self.node_id = node_id
        self.pid = pid
        self.path = folder(cluster_id) / f"{node_id}-{pid}.jsonl"
        self.fd = -1
        self.lines = 0
        self.held: list[tuple] = []  # the main thread's events, formatted and written once due
        self.held_since = 0.0  # time.monotonic() of the oldest held line
        self.names: dict[str, str] = {}  # task name -> its JSON string (a worker runs few names)

    def record(
        self, name: str, start: float, end: float, ok: bool, kind: str = "task", hold: bool = False
    ) -> None:
        """Append one finished task (times from `time.time()`); never raises. With `hold`
        (the worker's main thread only), the event waits for `flush`, which formats it:
        formatted one by one, each on a cold cache after its task, the lines cost a
        sync task's worker ~4 % of its CPU (perf, 3.12's trampolines)."""
        if hold:
            if not self.held:
                self.held_since = time.monotonic()
            self.held.append((name, start, end, ok, kind))
            return
        self._write([self._line(name, start, end, ok, kind)])

    def _line(self, name: str, start: float, end: float, ok: bool, kind: str) -> str:
        # Formatted by hand (a third of json.dumps's cost): only the name is free text.
        quoted = self.names.get(name)
        if quoted is None:
            if len(self.names) >= 1024:  # names made per call (options(name=...)): no growth
                self.names.clear()
            quoted = self.names[name] = json.dumps(name)
        return (
            f'{{"name":{quoted},"start":{start!r},"end":{end!r},'
            f'"ok":{"true" if ok else "false"},"kind":"{kind}","node":"{self.node_id}"}}'
        )

    def due(self, now: float) -> bool:
        """Held events to write now? (`now`: time.monotonic())"""
        return bool(self.held) and (
            len(self.held) >= EVENTS_HELD_MAX or now - self.held_since >= EVENTS_LATE_S
        )

    def flush(self) -> None:
        """Write the held events (one write)."""
        if self.held:
            held, self.held = self.held, []
            self._write([self._line(*event) for event in held])

    def _write(self, lines: list[str]) -> None:
        try:
            if self.fd < 0 or self.lines >= ROTATE_LINES:
                self._open()
            os.write(self.fd, "".join(f"{line}\n" for line in lines).encode())
            self.lines += len(lines)
        except OSError:  # the cluster's folder is gone (shutting down): nothing to keep
            pass

    def _open(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            os.replace(self.path, self.path.with_suffix(".jsonl.1"))
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.lines = 0


MTIME_SLACK = 1.0  # s: see _read_folder


def task_events(cluster_id: str, since: float = 0.0, head: Any = None) -> list[dict[str, Any]]:
    """Finished tasks of `cluster_id` that ended after `since`, every node's, oldest first.

    Each is ``{"name", "start", "end", "ok", "kind", "node", "host",
    "worker"}`` with times in seconds since the epoch, ``node`` the node's
    id, ``host`` its machine and ``worker`` the worker's pid. `head` is a
    client of the cluster's head (anything with ``request(op, *args,
    timeout=)``): the events of nodes whose files are not on this machine
    come from there. Without it, or when the head does not answer, only the
    nodes writing here are covered.
    """
    local, here = _read_folder(cluster_id, since)
    if head is None:
        return local
    try:
        remote = head.request("events", since, timeout=HEAD_TIMEOUT)
    except Exception as e:  # noqa: BLE001 - gone or busy: this machine's events still stand
        log.debug("no task events from the head of %s: %s", cluster_id, e)
        return local
    return merge(local, here, remote)


def merge(local: list[dict[str, Any]], here: set[str], remote: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This machine's events, and the head's of the nodes not in `here`, oldest start first."""
    events = local + [e for e in remote if e.get("node") not in here]
    events.sort(key=lambda e: e["start"])
    return events


def _read_folder(cluster_id: str, since: float) -> tuple[list[dict[str, Any]], set[str]]:
    """The events in this machine's files that ended after `since`, and the nodes that write them."""
    events: list[dict[str, Any]] = []
    nodes: set[str] = set()
    where = folder(cluster_id)
    try:
        paths = list(where.iterdir())
    except OSError:
        return [], nodes
    host = socket.gethostname()
    for path in paths:
        stem = path.name.split(".")[0]
        node, _, pid = stem.rpartition("-")
        nodes.add(node)
        worker = int(pid) if pid.isdigit() else 0
        try:
            # A file's mtime comes from the kernel's coarse clock, which can be some ms behind
            # time.time(): a file written just after `since` may look older. Lines are filtered
            # by their own end time below; the mtime only skips files idle for a while.
            if path.stat().st_mtime < since - MTIME_SLACK:
                continue
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:  # a line being written
                continue
            if event.get("end", 0) > since:
                event["worker"] = worker
                event["host"] = host
                events.append(event)
    events.sort(key=lambda e: e["start"])
    return events, nodes


def last_activity(cluster_id: str) -> float:
    """When a task of `cluster_id` last finished on this machine (0.0: never)."""
    try:
        return max((p.stat().st_mtime for p in folder(cluster_id).iterdir()), default=0.0)
    except OSError:
        return 0.0


def chrome_trace(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Task events as Chrome trace "complete" events (one row per worker, grouped by node)."""
    return [
        {
            "cat": e.get("kind", "task"),
            "name": e["name"],
            "pid": f"node {e.get('node', '')}",
            "tid": f"worker {e.get('worker', 0)}",
            "ts": e["start"] * 1e6,
            "dur": max(e["end"] - e["start"], 0.0) * 1e6,
            "ph": "X",
            "cname": "generic_work" if e.get("ok", True) else "terrible",
            "args": {"ok": e.get("ok", True)},
        }
        for e in events
    ]


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The tasks of the connected cluster as Chrome trace events (Ray's ``ray.timeline()``).

    With `filename`, write them there as JSON (for chrome://tracing or
    https://ui.perfetto.dev) and return None; otherwise return the list.
    Covers every node: for the workers on this machine the history each
    keeps on disk (about the last 20,000 to 40,000 tasks per worker), for
    the nodes of other machines the last minute the head keeps.
    """
    from . import session
    from .exceptions import NotInitializedError

    client = session.client_or_none()  # as Ray's: no cluster of its own is started for this
    if client is None:
        raise NotInitializedError(
            "timeline() needs a cluster: call runtime.init() first (or %cluster start in a notebook)"
        )
    info = session.state.info
    cluster_id = info.cluster_id if info is not None else client.cluster_id
    trace = chrome_trace(task_events(cluster_id, head=client))
    if filename is None:
        return trace
    with open(filename, "w") as f:
        json.dump(trace, f)
    return None
