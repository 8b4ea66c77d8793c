"""The compact view of a cluster shown by ``%cluster start`` / ``connect``.

It looks like the cluster's card in the lab sidebar and links to it (in
JupyterLab and Notebook 7 the lab extension opens the panel on a click;
elsewhere the link does nothing). Colors are neutral (text inherits,
lines are translucent grey), so it reads in light and dark themes and in
VS Code.
"""

from __future__ import annotations

import html
from typing import Any

from runtime.snapshot import ClusterSnapshot

ACCENT = "#2f7fd8"  # readable on white and on near-black
LINE = "rgba(127, 127, 127, 0.35)"
GONE = "#d9534f"  # the dot of a stopped cluster


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


def panel_link(text: str = "Show in the Clusters panel") -> str:
    """A link that opens the lab sidebar (the lab extension handles clicks on this class)."""
    return (
        f"<a href='#' class='nbcluster-open-panel' "
        f"title='The Clusters panel in the left sidebar (JupyterLab, Notebook 7)' "
        f"style='color:{ACCENT};text-decoration:none'>{html.escape(text)} →</a>"
    )


def card_html(info: dict[str, str], gone: str = "") -> str:
    """The card: a header with the address and owner, a table of the numbers, the panel link;
    with `gone` (why), a stopped card: a red dot and that line instead of the numbers."""
    esc = html.escape
    if gone:
        return (
            f"<div class='nbcluster-card nbcluster-card-gone' style='display:inline-block;max-width:100%;"
            f"box-sizing:border-box;border:1px solid {LINE};border-radius:4px;padding:6px 10px;"
            f"font-size:12px;line-height:1.5'>"
            f"<div style='display:flex;gap:8px;align-items:center;flex-wrap:wrap'>"
            f"<span style='width:8px;height:8px;border-radius:50%;background:{GONE}'></span>"
            f"<b>nbcluster</b><code>{esc(info['address'])}</code>"
            f"<span style='opacity:.7'>stopped</span></div>"
            f"<div style='margin:4px 0'>{esc(gone)}</div>{panel_link()}</div>"
        )
    rows = "".join(
        f"<tr><th style='text-align:left;font-weight:normal;opacity:.7;padding:1px 1.5em 1px 0'>"
        f"{esc(k)}</th><td style='text-align:left;padding:1px 0'>{esc(v)}</td></tr>"
        for k, v in info.items()
        if k not in ("address", "owned")
    )
    return (
        f"<div class='nbcluster-card' style='display:inline-block;max-width:100%;box-sizing:border-box;"
        f"border:1px solid {LINE};border-radius:4px;padding:6px 10px;font-size:12px;line-height:1.5'>"
        f"<div style='display:flex;gap:8px;align-items:center;flex-wrap:wrap'>"
        f"<span style='width:8px;height:8px;border-radius:50%;background:#22a06b'></span>"
        f"<b>nbcluster</b><code>{esc(info['address'])}</code>"
        f"<span style='opacity:.7'>{esc(info['owned'])}</span></div>"
        f"<div style='margin:4px 0'><table>{rows}</table></div>"
        f"{panel_link()}</div>"
    )


class ClusterView:
    """A widget (with HTML and text fallbacks in the same output) describing a cluster.

    The cards of the cluster in use stay live: when it goes away they turn into a
    stopped card (`cluster_gone`, called by kernel_ext.notice)."""

    live: list[ClusterView] = []  # cards of the cluster in use

    def __init__(self, snap: ClusterSnapshot, owned: bool) -> None:
        self.info = summary(snap, owned)
        self.gone = ""
        self.widget = None
        try:
            import ipywidgets as w

            self.widget = w.HTML(card_html(self.info))
            self.widget.add_class("nbcluster-cluster")
        except ImportError:
            pass
        ClusterView.live.append(self)

    @classmethod
    def cluster_gone(cls, address: str, why: str) -> None:
        """Turn the cards of the cluster at `address` into stopped cards saying `why`."""
        for view in [v for v in cls.live if v.info["address"] == address]:
            cls.live.remove(view)
            view.gone = why
            if view.widget is not None:
                view.widget.value = view.html()

    @classmethod
    def forget(cls) -> None:
        """The notebook left its cluster itself: its cards stay as they are."""
        cls.live.clear()

    def text(self) -> str:
        if self.gone:
            return self.gone
        return "nbcluster " + ", ".join(f"{k}: {v}" for k, v in self.info.items())

    def html(self) -> str:
        return card_html(self.info, self.gone)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        bundle = {"text/plain": self.text(), "text/html": self.html()}
        if self.widget is not None:
            view = self.widget._repr_mimebundle_()
            if view:
                bundle.update({k: v for k, v in view.items() if k != "text/plain"})
        return bundle
