"""The live resource view of ``%cluster status`` and ``kernel_ext.status()``.

A background thread asks the head for a `ClusterSnapshot` about once a
second and re-renders one HTML widget; the text fallback is the same
table `nbcluster status` prints. Re-running the view, ``%cluster stop`` and
kernel shutdown stop the thread.
"""

from __future__ import annotations

import html
import threading
from typing import Any

from runtime.snapshot import ClusterSnapshot, format_text

from . import engines
from .cell_output import current_parent, refresh

REFRESH = 1.0


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def render_html(snap: ClusterSnapshot) -> str:
    esc = html.escape
    rows = []
    for n in snap.nodes:
        res = ", ".join(
            f"{esc(k)} {n.resources_used.get(k, 0):g}/{v:g}"
            for k, v in sorted(n.resources_total.items())
            if k != "memory"
        )
        rows.append(
            "<tr>"
            f"<td>{esc(n.node_id)}</td><td>{esc(n.ip)}</td><td>{'alive' if n.alive else 'DEAD'}</td>"
            f"<td>{n.cpu_percent:.0f}%</td><td>{_gib(n.memory_used)} / {_gib(n.memory_total)}</td>"
            f"<td>{_gib(n.object_store_used)} / {_gib(n.object_store_capacity)}</td>"
            f"<td>{n.workers_busy} busy, {n.workers_idle} idle</td><td>{res}</td>"
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ["node", "ip", "state", "cpu", "memory", "object store", "workers", "resources used/total"]
    )
    parts = [
        f"<b>nbcluster {esc(snap.cluster_id)}</b> at {esc(snap.head_address)}",
        f"<table class='nbcluster-status'><tr>{head}</tr>{''.join(rows)}</table>",
    ]

    def listing(title: str, counts: dict[str, int]) -> str:
        items = ", ".join(f"{esc(k)} ×{v}" for k, v in sorted(counts.items())) or "none"
        return f"<div><b>{title}:</b> {items}</div>"

    parts.append(listing("Running", snap.running))
    parts.append(listing("Pending", snap.pending))
    if snap.infeasible:
        items = "; ".join(f"{esc(t['name'])} needs {esc(str(t['resources']))}" for t in snap.infeasible)
        parts.append(f"<div style='color:#b00'><b>Infeasible</b> (no node has the resources): {items}</div>")
    actors = [a for n in snap.nodes for a in n.actors]
    if actors:
        items = ", ".join(
            f"{esc(a.class_name)}{' ' + esc(a.name) if a.name else ''} ({a.state})" for a in actors
        )
        parts.append(f"<div><b>Actors:</b> {items}</div>")
    parts.extend(f"<div><i>{esc(note)}</i></div>" for note in snap.notes)
    return "\n".join(parts)


class StatusView:
    """A live view of the cluster; one at a time (a new one stops the previous)."""

    current: StatusView | None = None

    def __init__(self, display: bool = True) -> None:
        if StatusView.current is not None:
            StatusView.current.stop()
        StatusView.current = self
        self.engine = engines.current()
        self.snap = self.engine.snapshot()
        self.stopped = threading.Event()
        self.widget = None
        try:
            import ipywidgets as w

            self.widget = w.HTML(render_html(self.snap))
            self.widget.add_class("nbcluster-status-view")
        except ImportError:
            pass
        self.handle = None
        self.parent = current_parent()
        if display:
            from IPython.display import display as show

            self.handle = show(self._bundle(), raw=True, display_id=True)
        self.thread = threading.Thread(target=self._refresh, name="nbcluster-status", daemon=True)
        self.thread.start()

    def _bundle(self) -> dict:
        bundle = {"text/plain": format_text(self.snap), "text/html": render_html(self.snap)}
        if self.widget is not None:
            bundle.update({k: v for k, v in self.widget._repr_mimebundle_().items() if k != "text/plain"})
        return bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        return self._bundle()

    def _refresh(self) -> None:
        while not self.stopped.wait(REFRESH):
            try:
                self.snap = self.engine.snapshot()
            except Exception:  # the cluster went away
                break
            if self.widget is not None:
                self.widget.value = render_html(self.snap)
        self.stopped.set()

    def stop(self) -> None:
        """Stop refreshing; the output keeps the last table (also as text)."""
        self.stopped.set()
        refresh(self.handle, self._bundle(), self.parent)
        if StatusView.current is self:
            StatusView.current = None


def status() -> StatusView:
    """Show a live view of the connected cluster's nodes, resources, tasks and actors."""
    return StatusView()
