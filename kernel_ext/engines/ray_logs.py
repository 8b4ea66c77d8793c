"""Ray's worker output, published in the cell that submitted the work.

::

    worker print ─▶ worker-*.out ─▶ log monitor (per node) ─▶ GCS pub/sub
        ─▶ driver thread "ray_print_logs": batch {ip, pid, job, is_err, lines,
           actor_name, task_name="f|cell=7"}
        ─▶ LogRouter.handle (replaces Ray's printer, so nothing is printed twice)
        ─▶ route(): cell 7, label "f pid=123"  ─▶ CellOutput.write ─▶ IOPub, parent = cell 7

Over Ray Client (``ray://``) only formatted text arrives
("(f|cell=7 pid=123) hi"): `route_text` reads the tag from the prefix.

Lines without a tag (an actor's ``__init__``, threads the actor started,
work submitted from driver threads that belong to no cell) go to the cell
that created that actor, else to the cell that last submitted work.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from . import ray_tags

HANDLER = "nbcluster"
TQDM_MAGIC = "__ray_tqdm_magic_token__"
_COLOR = re.compile(r"\x1b\[[0-9;]*m")
_PREFIX = re.compile(r"^\((?P<name>[^()]*?)(?: pid=(?P<pid>\d+))(?P<rest>[^)]*)\) (?P<line>.*)$")


def label_for(batch: dict, localhost: str) -> str:
    """How a batch's lines are tagged in the cell, as Ray tags them: ``(f pid=123, ip=…)``."""
    name = batch.get("actor_name") or ray_tags.split(batch.get("task_name"))[0]
    where = f"pid={batch.get('pid')}"
    ip = batch.get("ip")
    if ip and ip != localhost:
        where += f", ip={ip}"
    return f"{name} {where}" if name else where


class LogRouter:
    """Decides the cell of each batch; the kernel-facing part is `CellOutput`."""

    def __init__(self, output: Any) -> None:
        self.output = output  # a CellOutput
        self.actor_cells: dict[str, str] = {}  # actor class name -> the cell that created it
        self.last_cell: str | None = None
        self.bars: Any = None  # a TqdmBars, when tqdm_ray bars are drawn by us
        self.lock = threading.Lock()

    # -- decisions (no I/O) ------------------------------------------------------
    def cell_of(self, task_name: str | None, actor_name: str | None) -> str | None:
        tag = ray_tags.split(task_name)[1]
        if tag is not None:
            ctx = self.output.ctx_of_tag(tag)
            if ctx is not None:
                return ctx
        if actor_name and actor_name in self.actor_cells:
            return self.actor_cells[actor_name]
        return self.last_cell

    def submitted(self, ctx: str | None) -> None:
        if ctx is not None:
            self.last_cell = ctx

    def created_actor(self, class_name: str, ctx: str | None) -> None:
        if ctx is not None:
            self.actor_cells[class_name] = ctx

    # -- the handler on Ray's log thread ----------------------------------------------
    def handle(self, batch: dict) -> None:
        if batch.get("pid") in ("autoscaler", "raylet"):
            return  # cluster events, not output of this notebook's work
        ctx = self.cell_of(batch.get("task_name"), batch.get("actor_name"))
        lines = []
        for line in batch.get("lines", []):
            if TQDM_MAGIC in line and self._progress(line, ctx):
                continue
            lines.append(line)
        if lines:
            label = label_for(batch, batch.get("localhost", ""))
            self.output.write(b"", ctx, 2 if batch.get("is_err") else 1, "\n".join(lines) + "\n", label)

    def handle_text(self, stream: int, text: str) -> None:
        """Ray Client's formatted output: route each line by the tag in its prefix."""
        for line in _COLOR.sub("", text).splitlines():
            m = _PREFIX.match(line)
            if m is None:
                self.output.write(b"", self.last_cell, stream, line + "\n", "ray")
                continue
            base, tag = ray_tags.split(m.group("name"))
            ctx = self.output.ctx_of_tag(tag) if tag else None
            label = f"{base} pid={m.group('pid')}{m.group('rest')}".strip()
            self.output.write(b"", ctx or self.last_cell, stream, m.group("line") + "\n", label)

    def _progress(self, line: str, ctx: str | None) -> bool:
        if self.bars is None:
            return False
        try:
            state = json.loads(line[line.index("{") :])
        except ValueError:
            return False
        self.bars.update(state, ctx)
        return True
