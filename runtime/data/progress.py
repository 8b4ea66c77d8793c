"""A live progress bar per stage of an executing dataset (the notebook's bars, or text in a terminal)."""

from __future__ import annotations

from typing import Any

from .context import DataContext


class StageProgress:
    """Counts the blocks a stage finished; shows them on a bar while the stage runs."""

    def __init__(self, name: str, total: int | None) -> None:
        self.name = name
        self.done = 0
        self.total = total
        self.error = ""
        self.closed = False
        self._view: Any = None
        if DataContext.get_current().enable_progress_bars:
            try:
                from kernel_ext.progress import ProgressView
            except ImportError:  # the notebook layer is not installed: no bar
                return
            self._view = ProgressView(self._state, description=name, unit="blocks")

    def _state(self) -> tuple[float, float, str]:
        return float(self.done), float(self.total or 0), self.error

    def step(self, n: int = 1) -> None:
        self.done += n

    def close(self, error: str = "") -> None:
        """The stage ended (error: it failed); the bar shows its final state. Once."""
        if self.closed:
            return
        self.closed = True
        self.error = error
        if not error:
            self.total = self.done  # a bar whose total was a guess ends full
        if self._view is not None:
            self._view.n, self._view.total, self._view.error = float(self.done), float(self.total or 0), error
            self._view.finish()
            self._view = None
