"""Small inline-SVG pictures for the in-notebook views: bars, sparklines, a task stream.

They draw what the lab sidebar draws, as plain HTML strings (no JavaScript,
no external assets), so they render wherever HTML does: JupyterLab,
Notebook 7, VS Code, nbconvert. Colors are mid-tones that read on light and
dark backgrounds; text inherits the theme's color.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from typing import Any

ACCENT = "#2f7fd8"
MEMORY = "#a05fc8"
ERROR = "#d9534f"
TRACK = "rgba(127, 127, 127, 0.22)"
LINE = "rgba(127, 127, 127, 0.35)"


def color(name: str) -> str:
    """A stable color per function name (the sidebar's hues)."""
    h = int(hashlib.md5(name.encode()).hexdigest()[:6], 16)
    return f"hsl({h % 360}, 60%, 55%)"


def bar(percent: float, color_: str = ACCENT, width: str = "6em") -> str:
    """A horizontal bar filled to `percent`."""
    p = min(max(percent, 0.0), 100.0)
    return (
        f"<span class='nbc-bar' style='display:inline-block;vertical-align:middle;width:{width};height:7px;"
        f"border-radius:3px;background:{TRACK};overflow:hidden'><span style='display:block;height:100%;"
        f"width:{p:.1f}%;background:{color_}'></span></span>"
    )


def sparkline(values: Sequence[float], top: float, capacity: int, color_: str = ACCENT) -> str:
    """The last `capacity` values as a line over a filled area, scaled to `top`."""
    w, h = 100.0, 20.0
    if not values:
        points = ""
    else:
        step = w / max(capacity - 1, 1)
        offset = w - step * (len(values) - 1)
        points = " ".join(
            f"{offset + i * step:.1f},{h - min(max(v, 0.0), top) / (top or 1) * (h - 1):.1f}"
            for i, v in enumerate(values)
        )
    area = f"{points.split(' ')[0].split(',')[0]},{h} {points} {w},{h}" if points else ""
    return (
        f"<svg class='nbc-sparkline' viewBox='0 0 {w:g} {h:g}' preserveAspectRatio='none' "
        f"style='width:7em;height:16px;vertical-align:middle;background:{TRACK};border-radius:2px'>"
        f"<polygon points='{area}' fill='{color_}' fill-opacity='0.25'/>"
        f"<polyline points='{points}' fill='none' stroke='{color_}' stroke-width='1.2' "
        f"vector-effect='non-scaling-stroke'/></svg>"
    )


def task_stream(events: list[dict[str, Any]], now: float, window: float) -> str:
    """One row per worker, one bar per task that ended in the last `window` seconds, and a legend."""
    start = now - window
    shown = [e for e in events if e["end"] >= start]
    if not shown:
        return f"<div style='opacity:.7'>Task stream: no task finished in the last {window:g} s</div>"
    workers = sorted({(e.get("node", ""), e.get("worker", 0)) for e in shown})
    rows = {w: i for i, w in enumerate(workers)}
    row_h, width = 8, 300.0
    rects, counts = [], {}
    for e in shown:
        x0 = (max(e["start"], start) - start) / window * width
        x1 = (min(e["end"], now) - start) / window * width
        y = rows[(e.get("node", ""), e.get("worker", 0))] * row_h + 1
        fill = color(e["name"]) if e.get("ok", True) else ERROR
        host = f" on {e['host']}" if e.get("host") else ""
        tip = html.escape(
            f"{e['name']} on worker {e.get('worker', 0)} (node {e.get('node', '')}{host}): "
            f"{(e['end'] - e['start']) * 1000:.1f} ms"
        )
        rects.append(
            f"<rect x='{x0:.2f}' y='{y}' width='{max(x1 - x0, 0.6):.2f}' height='{row_h - 2}' fill='{fill}'>"
            f"<title>{tip}</title></rect>"
        )
        counts[e["name"]] = counts.get(e["name"], 0) + 1
    height = len(workers) * row_h
    legend = " ".join(
        f"<span style='white-space:nowrap;margin-right:.8em'><span style='display:inline-block;width:8px;"
        f"height:8px;border-radius:2px;background:{color(name)}'></span> {html.escape(name)} ×{n}</span>"
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1])
    )
    return (
        f"<div class='nbc-taskstream'><div style='opacity:.7'>Task stream (last {window:g} s)</div>"
        f"<svg viewBox='0 0 {width:g} {height}' preserveAspectRatio='none' style='display:block;width:100%;"
        f"max-width:40em;height:{min(len(workers) * 10, 120)}px;background:{TRACK};border-radius:2px'>"
        f"{''.join(rects)}</svg><div style='font-family:monospace'>{legend}</div></div>"
    )
