"""The compact view of a cluster shown by ``%cluster start`` / ``connect``."""

from __future__ import annotations

import html
from typing import Any

from runtime.snapshot import ClusterSnapshot


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def summary(snap: ClusterSnapshot, owned: bool) -> dict[str, str]:
    cpus = snap.total("CPU")
    gpus = snap.total("GPU")
    custom = sorted(
        {k for n in snap.alive_nodes for k in n.resources_total if k not in ("CPU", "GPU", "memory")}
    )
    return {
        "address": snap.head_address,
        "nodes": str(len(snap.alive_nodes)),
        "CPUs": f"{cpus:g}" + (f", GPUs {gpus:g}" if gpus else ""),
        "memory": _gib(sum(n.memory_total for n in snap.alive_nodes)),
        "object store": _gib(sum(n.object_store_capacity for n in snap.alive_nodes)),
        "workers": str(sum(n.workers_busy + n.workers_idle for n in snap.alive_nodes)),
        "resources": ", ".join(f"{k} {snap.total(k):g}" for k in custom) or "—",
        "owned": "this kernel (stops with it)" if owned else "started elsewhere",
    }


class ClusterView:
    """A widget (with HTML and text fallbacks in the same output) describing a cluster."""

    def __init__(self, snap: ClusterSnapshot, owned: bool) -> None:
        self.info = summary(snap, owned)
        self.widget = None
        try:
            import ipywidgets as w

            rows = "".join(
                f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                for k, v in self.info.items()
            )
            self.widget = w.HTML(f"<b>nbcluster</b><table>{rows}</table>")
            self.widget.add_class("nbcluster-cluster")
        except ImportError:
            pass

    def text(self) -> str:
        return "nbcluster " + ", ".join(f"{k}: {v}" for k, v in self.info.items())

    def html(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self.info.items()
        )
        return f"<b>nbcluster</b><table>{rows}</table>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        bundle = {"text/plain": self.text(), "text/html": self.html()}
        if self.widget is not None:
            view = self.widget._repr_mimebundle_()
            if view:
                bundle.update({k: v for k, v in view.items() if k != "text/plain"})
        return bundle
