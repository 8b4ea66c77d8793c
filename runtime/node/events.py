"""The node's share of the task stream: its workers' finished tasks, sent to the head.

::

    workers ──one line per task──▶ <cluster dir>/timeline/<node>-<pid>.jsonl   (timeline.Recorder)
                                        │ EventTail.read(), once per tick: the bytes added since
                                        ▼ the last read, complete lines only
                              pending (a deque of at most PENDING events: the newest are kept)
                                        │ for_report(): at most PER_REPORT, oldest first
                                        ▼
    head ◀── TASK_EVENTS (node_id, [(name, start, end, ok, kind, worker), ...]) next to NODE_REPORT

The workers' hot path is unchanged (one ``write``); only the node reads the
files, and only what is new. The head keeps the last minute of every node's
events (`runtime.head.events`), so a reader anywhere sees tasks of machines
whose files it cannot read. What to send is decided by the pure functions
below; `EventTail` is the only part that touches the disk.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

PER_REPORT = 1000  # events per TASK_EVENTS message (about 60 bytes each pickled)
PENDING = 5000  # events kept for the head while it does not hear us; older ones are dropped
MAX_NAME = 200  # characters of a task name sent to the head
READ_LIMIT = 4 << 20  # bytes read from one file per tick (a burst is caught up on over ticks)

Event = tuple  # (name, start, end, ok, kind, worker): what TASK_EVENTS carries


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The whole lines in `data` and how many bytes they take (a line being written waits)."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), end


def parse(line: bytes, worker: int) -> Event | None:
    """One recorded line as the wire's event tuple, or None if it is not one."""
    try:
        e = json.loads(line)
        return (
            str(e["name"])[:MAX_NAME],
            float(e["start"]),
            float(e["end"]),
            bool(e.get("ok", True)),
            str(e.get("kind", "task"))[:16],
            worker,
        )
    except (ValueError, KeyError, TypeError):
        return None


def for_report(pending: deque, limit: int = PER_REPORT) -> list[Event]:
    """Take the oldest `limit` pending events for the next message (they leave `pending`)."""
    return [pending.popleft() for _ in range(min(limit, len(pending)))]


def worker_of(filename: str, node_id: str) -> int | None:
    """The worker pid of ``<node>-<pid>.jsonl`` if that file is one of `node_id`'s, else None."""
    stem, dot, rest = filename.partition(".")
    node, _, pid = stem.rpartition("-")
    if node != node_id or rest not in ("jsonl", "jsonl.1") or not pid.isdigit():
        return None
    return int(pid)


class EventTail:
    """Reads what this node's workers appended to their event files since the last call.

    A file is followed by its inode: when a worker rotates it (renames it to
    ``.jsonl.1``), the rest of the old one is read there, then the new one
    from its start.
    """

    def __init__(self, folder: Path, node_id: str) -> None:
        self.folder = folder
        self.node_id = node_id
        self.pending: deque[Event] = deque(maxlen=PENDING)
        self.files: dict[str, tuple[int, int]] = {}  # name -> (inode, bytes read)

    def read(self) -> None:
        """Append the events finished since the last call to `pending`; never raises."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            worker = worker_of(name, self.node_id)
            if worker is None or name.endswith(".1"):
                continue
            try:
                st = os.stat(self.folder / name)
            except OSError:
                continue
            inode, done = self.files.get(name, (st.st_ino, 0))
            if inode != st.st_ino:  # rotated: finish the old file (now .1), then the new one
                self._read(self.folder / (name + ".1"), inode, done, worker)
                inode, done = st.st_ino, 0
            if st.st_size > done:
                done = self._read(self.folder / name, inode, done, worker)
            self.files[name] = (inode, done)

    def _read(self, path: Path, inode: int, offset: int, worker: int) -> int:
        """Events of `path` from `offset` if it is still file `inode`; the new offset."""
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_ino != inode:
                    return offset
                f.seek(offset)
                lines, used = complete_lines(f.read(READ_LIMIT))
        except OSError:
            return offset
        for line in lines[-PENDING:]:  # a burst: only the newest can stay pending, parse only those
            event = parse(line, worker)
            if event is not None:
                self.pending.append(event)
        return offset + used

    def take(self) -> list[Event]:
        """Read what is new, and take the next message's share of it."""
        self.read()
        return for_report(self.pending)


def as_dict(event: Event, node_id: str, host: str) -> dict[str, Any]:
    """A wire event as the records `runtime.timeline.task_events` returns."""
    name, start, end, ok, kind, worker = event
    return {
        "name": name,
        "start": start,
        "end": end,
        "ok": ok,
        "kind": kind,
        "node": node_id,
        "host": host,
        "worker": worker,
    }
