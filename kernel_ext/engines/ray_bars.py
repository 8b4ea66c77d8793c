"""Ray's ``tqdm_ray`` bars, drawn as our progress bars in the cell that ran the task.

::

    task: tqdm_ray.tqdm(...).update() ─▶ a JSON state line (magic token), at most 1/s
        ─▶ Ray's log path ─▶ LogRouter (the batch's cell) ─▶ TqdmBars.update(state, cell)
        ─▶ one ProgressView per bar uuid, displayed in that cell, polling the last state

Ray's own handler would draw them with ``tqdm.auto`` from its log thread, which
Jupyter files under the cell that called ``ray.init`` (ray #26426, #44983).
"""

from __future__ import annotations

import threading
from typing import Any


class TqdmBars:
    def __init__(self, output: Any) -> None:
        self.output = output  # CellOutput: the cells' parent headers
        self.states: dict[str, dict] = {}
        self.views: dict[str, Any] = {}
        self.lock = threading.Lock()

    def update(self, state: dict, ctx: str | None) -> None:
        uid = str(state.get("uuid", ""))
        with self.lock:
            self.states[uid] = state
            view = self.views.get(uid)
            if view is None:
                view = self.views[uid] = self._open(uid, state, ctx)
        if state.get("closed") and view is not None:
            view.n, view.total = float(state.get("x") or 0), float(state.get("total") or 0) or view.total
            view.finish()  # with the last state, which the view's poll may not have read yet

    def _open(self, uid: str, state: dict, ctx: str | None) -> Any:
        from ..cell_output import show
        from ..progress import ProgressView

        def source() -> tuple[float, float, str]:
            s = self.states[uid]
            return float(s.get("x") or 0), float(s.get("total") or 0), ""

        view = ProgressView(source, state.get("desc") or "", state.get("unit") or "it", display=False)
        parent = self.output.parents.get(ctx) if ctx else None
        view.parent = parent
        view.handle = show(view._bundle(), parent)
        return view
