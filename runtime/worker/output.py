"""Worker output: print() and stderr inside tasks reach the driver that owns the task.

::

    task thread: print("hi") ─▶ ForwardStream.write ─▶ complete lines ─▶
        client outbox: (LOG, owner, ctx, stream, text, label) ─▶ node ─▶ owner's client
        ─▶ log_handler: "(f pid=123) hi" on the driver's stdout (or the notebook
           cell that submitted the task, see kernel_ext)

Each line carries the *context* of the task that printed it (``ctx``,
inherited by nested tasks), which is how the notebook layer routes output to
the cell that caused it. Output printed outside any task (worker start-up)
goes to the worker's log file.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from ..wire.protocol import Kind

_local = threading.local()


class TaskOutput:
    """Where the output of the running task goes: its owner, directly when `link` is set."""

    __slots__ = ("owner", "ctx", "label", "link")

    def __init__(self, owner: bytes, ctx: Any, label: str, link=None) -> None:
        self.owner, self.ctx, self.label, self.link = owner, ctx, label, link


_process_current: list[TaskOutput | None] = [None]


def set_current(target: TaskOutput | None, thread_only: bool = False) -> None:
    """Attribute output of this thread (and, unless `thread_only`, the process) to a task."""
    _local.target = target
    if not thread_only:
        _process_current[0] = target


def current() -> TaskOutput | None:
    target = getattr(_local, "target", None)
    return target if target is not None else _process_current[0]


class ForwardStream(io.TextIOBase):
    """A text stream that sends complete lines to the owner of the current task."""

    def __init__(self, client, stream: int, fallback) -> None:
        self.client = client
        self.stream = stream
        self.fallback = fallback
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[TaskOutput, list[str]]] = {}
        self.fallback_written = False  # written to `fallback` since its last flush

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fallback.fileno()

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        target = current()
        if target is None:
            self.fallback_written = True
            self.fallback.write(s)
            return len(s)
        key = threading.get_ident()
        with self.lock:
            entry = self.pending.get(key)
            if entry is None or entry[0] is not target:
                if entry is not None:
                    self._send(entry[0], "".join(entry[1]))
                entry = self.pending[key] = (target, [])
            if "\n" in s:
                head, _, tail = s.rpartition("\n")
                entry[1].append(head + "\n")
                text = "".join(entry[1])
                entry[1].clear()
                if tail:
                    entry[1].append(tail)
                self._send(target, text)
            else:
                entry[1].append(s)
        return len(s)

    def flush(self) -> None:
        # Called at every task's end: nothing held (the usual case) costs two tests.
        if self.pending:
            with self.lock:
                for target, parts in list(self.pending.values()):
                    if parts:
                        self._send(target, "".join(parts))
                        parts.clear()
                self.pending.clear()
        if self.fallback_written:
            self.fallback_written = False
            try:
                self.fallback.flush()
            except (ValueError, OSError):
                pass

    def _send(self, target: TaskOutput, text: str) -> None:
        if text:
            msg = (Kind.LOG, target.owner, target.ctx, self.stream, text, target.label)
            if target.link is not None:
                self.client.queue(target.link, msg)
            else:
                self.client.send(0, msg)  # the node forwards it to the owner
