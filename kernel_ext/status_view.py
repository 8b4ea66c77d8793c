"""The live resource view of ``%cluster status`` and ``kernel_ext.status()``.

A background thread asks the head for a `ClusterSnapshot` about once a
second and re-renders one HTML widget: per node CPU and memory bars with
sparklines of the last minute, tasks, actors, and the task stream (the
events of `runtime.timeline()`, every node's; Ray's finished tasks on Ray), as the lab sidebar shows
them. The text fallback is the same table `nbcluster status` prints. Re-running the view, ``%cluster stop`` and
kernel shutdown stop the thread.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import Any

from runtime.snapshot import ClusterSnapshot, describe_infeasible, format_text

from . import charts, engines
from .cell_output import current_parent, refresh
from .cluster_view import panel_link

REFRESH = 1.0
SNAPSHOT_TIMEOUT = 5.0  # a head that does not answer for this long is taken as gone
HISTORY = 60  # samples per sparkline: the last minute
STREAM_WINDOW = 30.0  # seconds of the task stream
LATE = 10.0  # seconds an event may reach the reader after it ended (other machines' come through the head)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class History:
    """Per node, the last `HISTORY` samples of CPU and memory use (percent), for the sparklines."""

    def __init__(self) -> None:
        self.series: dict[str, deque[float]] = {}

    def add(self, snap: ClusterSnapshot) -> None:
        for n in snap.nodes:
            self.series.setdefault(f"{n.node_id}:cpu", deque(maxlen=HISTORY)).append(n.cpu_percent)
            mem = 100.0 * n.memory_used / n.memory_total if n.memory_total else 0.0
            self.series.setdefault(f"{n.node_id}:mem", deque(maxlen=HISTORY)).append(mem)

    def get(self, key: str) -> list[float]:
        return list(self.series.get(key, ()))


def render_html(
    snap: ClusterSnapshot,
    history: History | None = None,
    events: list[dict[str, Any]] | None = None,
    now: float | None = None,
) -> str:
    """The status as HTML: per-node bars and sparklines, tasks, the task stream, actors."""
    esc = html.escape
    history = history or History()
    if not history.series:
        history.add(snap)
    cell = "padding:2px 10px 2px 0;white-space:nowrap;vertical-align:middle"
    left, right = f"text-align:left;{cell}", f"text-align:right;{cell}"
    columns = [
        ("node", left),
        ("ip", left),
        ("state", left),
        ("cpu", right),
        ("", left),
        ("memory", right),
        ("", left),
        ("object store", right),
        ("workers", right),
        ("resources used/total", left),
    ]
    head = "".join(
        f"<th style='{style};font-size:inherit;font-weight:600;opacity:.75'>{h}</th>" for h, style in columns
    )
    rows = []
    for n in snap.nodes:
        res = ", ".join(
            f"{esc(k)} {n.resources_used.get(k, 0):g}/{v:g}"
            for k, v in sorted(n.resources_total.items())
            if k != "memory"
        )
        mem = 100.0 * n.memory_used / n.memory_total if n.memory_total else 0.0
        values = [
            esc(n.node_id),
            esc(n.ip),
            "alive" if n.alive else f"<span style='color:{charts.ERROR}'>DEAD</span>",
            f"{charts.bar(n.cpu_percent)} {n.cpu_percent:.0f}%",
            charts.sparkline(history.get(f"{n.node_id}:cpu"), 100, HISTORY),
            f"{charts.bar(mem, charts.MEMORY)} {n.memory_used / 2**30:.1f}/{n.memory_total / 2**30:.1f} GiB",
            charts.sparkline(history.get(f"{n.node_id}:mem"), 100, HISTORY, charts.MEMORY),
            f"{n.object_store_used / 2**30:.2f}/{n.object_store_capacity / 2**30:.1f} GiB",
            f"{n.workers_busy} busy, {n.workers_idle} idle",
            res,
        ]
        rows.append(
            "<tr>"
            + "".join(f"<td style='{style}'>{v}</td>" for v, (_, style) in zip(values, columns, strict=True))
            + "</tr>"
        )
    parts = [
        f"<div class='nbcluster-status-card' style='font-size:12px;line-height:1.5;max-width:100%;"
        f"overflow-x:auto;border:1px solid {charts.LINE};border-radius:4px;padding:6px 10px'>",
        f"<div><b>nbcluster {esc(snap.cluster_id)}</b> at <code>{esc(snap.head_address)}</code> · "
        f"{len(snap.alive_nodes)} node(s) · CPUs {snap.used('CPU'):g}/{snap.total('CPU'):g} · "
        f"{panel_link('Clusters panel')}</div>",
        f"<table class='nbcluster-status' style='border-collapse:collapse;margin:4px 0'>"
        f"<tr>{head}</tr>{''.join(rows)}</table>",
    ]

    def listing(title: str, counts: dict[str, int]) -> str:
        items = ", ".join(f"{esc(k)} ×{v}" for k, v in sorted(counts.items())) or "none"
        return f"<div><b>{title}:</b> {items}</div>"

    parts.append(listing("Running", snap.running))
    parts.append(listing("Pending", snap.pending))
    if snap.infeasible:
        items = "; ".join(esc(describe_infeasible(t)) for t in snap.infeasible)
        parts.append(
            f"<div style='color:{charts.ERROR}'><b>Infeasible</b> (no node has the resources): {items}</div>"
        )
    actors = [a for n in snap.nodes for a in n.actors]
    if actors:
        items = ", ".join(
            f"{esc(a.class_name)}{' ' + esc(a.name) if a.name else ''} ({a.state})" for a in actors
        )
        parts.append(f"<div><b>Actors:</b> {items}</div>")
    parts.extend(f"<div><i>{esc(note)}</i></div>" for note in snap.notes)
    if events is not None:
        parts.append(charts.task_stream(events, now if now is not None else time.time(), STREAM_WINDOW))
    parts.append("</div>")
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
        self.gone = ""  # why refreshing stopped, when the cluster went away
        self.history = History()
        self.history.add(self.snap)
        self.events: list[dict[str, Any]] = []
        self.read_at = 0.0
        self._read_events()
        self.stopped = threading.Event()
        self.widget = None
        try:
            import ipywidgets as w

            self.widget = w.HTML(self.html())
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

    def html(self) -> str:
        body = render_html(self.snap, self.history, self.events)
        if not self.gone:
            return body
        note = html.escape(f"Stopped following: the cluster is gone ({self.gone[:240]}). Last state:")
        return f"<div style='color:{charts.ERROR};margin-bottom:4px'>{note}</div>{body}"

    def _read_events(self) -> None:
        """Tasks that finished since the last read (every node's), for the task stream."""
        now = time.time()
        # Read again what ended a little before the last read: events of other machines arrive late.
        since = self.read_at - LATE if self.read_at else now - STREAM_WINDOW
        self.read_at = now
        seen = {(e["node"], e["worker"], e["start"]) for e in self.events}
        try:
            got = self.engine.task_events(since)
        except Exception:  # noqa: BLE001 - the stream waits for the next refresh
            got = []
        fresh = [e for e in got if (e["node"], e["worker"], e["start"]) not in seen]
        kept = [e for e in self.events if e["end"] >= now - STREAM_WINDOW]
        self.events = sorted(kept + fresh, key=lambda e: e["end"])

    def _bundle(self) -> dict:
        bundle = {"text/plain": format_text(self.snap), "text/html": self.html()}
        if self.widget is not None:
            bundle.update({k: v for k, v in self.widget._repr_mimebundle_().items() if k != "text/plain"})
        return bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        return self._bundle()

    def cluster_gone(self, why: str) -> None:
        """The engine says the cluster went away: stop now, keep the last state, say why."""
        if self.stopped.is_set():
            return
        self.gone = why
        self.stopped.set()
        if self.widget is not None:
            self.widget.value = self.html()

    def _refresh(self) -> None:
        while not self.stopped.wait(REFRESH):
            try:
                self.snap = self.engine.snapshot(timeout=SNAPSHOT_TIMEOUT)
            except Exception as e:  # the cluster went away (stopped from the panel, or killed)
                if not self.stopped.is_set():  # else `cluster_gone` said it already
                    self.gone = self.gone or f"{type(e).__name__}: {e}"
                    if self.widget is not None:
                        self.widget.value = self.html()
                break
            self.history.add(self.snap)
            self._read_events()
            if self.widget is not None:
                self.widget.value = self.html()
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
