"""Telling a notebook, once, that its cluster went away.

::

    cluster stopped (panel, `nbcluster stop`, its owner kernel) ─▶ the node daemon exits
    driver's I/O thread: the node's socket closed ─▶ Client.mark_dead ─▶ Client.on_dead
        ─▶ engines.cluster_gone ─▶ Notice.cluster_gone (still on that thread):
             views stop: status view keeps its last state and says why, progress bars turn
             red ("the cluster is gone"), the %cluster start/connect card shows "stopped"
             ONE line: into the cell running now, or else at the start of the next cell run
    later .remote() / get / put ─▶ runtime.exceptions.ClusterGoneError (says what to do)
    %cluster start | connect ─▶ the dead connection is dropped first: no disconnect needed

The line goes to a running cell through the kernel's session with that
cell's parent header (from a background thread, a plain print would land
wherever ipykernel routes thread output). A cell that already finished is
not written to: JupyterLab drops output for finished cells, so the line
waits for the next cell instead, and the card widget (a live comm) shows
the news at once.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from . import engines


def message(address: str) -> str:
    """The one line the notebook shows."""
    return (
        f"nbcluster: the cluster at {address} was stopped (or crashed); "
        "run %cluster start or %cluster connect to go on."
    )


class Notice:
    """Follows which cell runs; says once per connection that its cluster is gone."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.kernel = getattr(shell, "kernel", None)
        self.lock = threading.Lock()
        self.running: dict | None = None  # parent header of the cell executing now
        self.pending = ""  # the line, when no cell ran at the time
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)
        engines.on_gone(self.cluster_gone)

    def close(self) -> None:
        engines.on_gone(None)
        for event, fn in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
            try:
                self.shell.events.unregister(event, fn)
            except ValueError:
                pass

    # -------------------------------------------------------------- cells
    def _pre_run_cell(self, info: Any = None) -> None:
        parent = None
        if self.kernel is not None:
            try:
                parent = self.kernel.get_parent()
            except Exception:
                parent = None
        with self.lock:
            self.running = parent
            line, self.pending = self.pending, ""
        if line:  # main thread, inside the cell: a plain print lands in it
            print(line, file=sys.stderr, flush=True)

    def _post_run_cell(self, result: Any = None) -> None:
        with self.lock:
            self.running = None

    # -------------------------------------------------------------- the news
    def cluster_gone(self, engine: engines.Engine, address: str, reason: str) -> None:
        """Stop the views that follow the cluster; say it in the notebook once."""
        from .cluster_view import ClusterView
        from .progress import ProgressView
        from .status_view import StatusView

        line = message(address)
        view = StatusView.current
        if view is not None and view.engine is engine:
            view.cluster_gone(line)
        ProgressView.stop_all(error="the cluster is gone")
        ClusterView.cluster_gone(address, line)
        with self.lock:
            if self.running is not None and self._send(line, self.running):
                return
            self.pending = line

    def forget(self) -> None:
        """The notebook left the cluster itself (%cluster stop / disconnect / start / connect)."""
        with self.lock:
            self.pending = ""

    def _send(self, line: str, parent: dict) -> bool:
        kernel = self.kernel
        if kernel is None or getattr(kernel, "iopub_socket", None) is None:
            return False
        try:
            kernel.session.send(
                kernel.iopub_socket,
                "stream",
                {"name": "stderr", "text": line + "\n"},
                parent=parent,
                ident=b"stream.stderr",
            )
        except Exception:
            return False
        return True


_notice: Notice | None = None


def install(shell: Any) -> None:
    """Start following `shell` (``%load_ext kernel_ext``)."""
    global _notice
    if _notice is None:
        _notice = Notice(shell)


def uninstall() -> None:
    global _notice
    if _notice is not None:
        _notice.close()
        _notice = None


def forget() -> None:
    if _notice is not None:
        _notice.forget()
