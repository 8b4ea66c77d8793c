"""Live progress bars fed by a progress actor.

::

    tasks ──bar.update(n)──▶ ProgressActor (sums counts; fire-and-forget calls)
                                  ▲ polled at most 10 times a second
    kernel: ProgressView thread ──┘──▶ widget (bar, n/total, rate, ETA) via IOPub,
                                        live while the cell is blocked in get()

Thousands of updates per second from tasks cost the kernel nothing: they
add up in the actor, and the view reads one number per poll. The numbers
shown (rate, elapsed, ETA) come from tqdm's formatter. Where widgets
cannot render (terminal IPython, nbconvert), the same line is shown as
text, and the output's text is replaced by the final line when done.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tqdm import tqdm

from runtime.exceptions import ClusterGoneError

from . import engines
from .cell_output import current_parent, refresh

POLL = 0.1  # seconds between polls of the progress source


class ProgressActor:
    """Counts work reported by tasks. ``update(n)`` adds; ``state()`` reads."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.n = 0.0
        self.error = ""

    def update(self, n: float = 1) -> None:
        self.n += n

    def fail(self, message: str) -> None:
        self.error = message or "failed"

    def state(self) -> tuple[float, float, str]:
        return self.n, self.total, self.error


class ProgressView:
    """A bar that follows a `source()` -> (n, total, error) until done or closed."""

    _live: list[ProgressView] = []

    def __init__(
        self, source, description: str = "", unit: str = "", display: bool = True, fraction: bool = False
    ) -> None:
        self.source = source
        self.fraction = fraction  # the source reports a fraction of 1: show percent, no counts
        self.description = description
        self.unit = unit or "it"
        self.n, self.total, self.error = 0.0, 0.0, ""
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.stopped = threading.Event()
        self.handle = None
        self.parent = current_parent()
        self.bar = self.label = self.box = None
        self.terminal = None
        if self.parent is None and display:  # not in a Jupyter kernel: a terminal bar
            self.terminal = tqdm(total=None, desc=description, unit=self.unit, dynamic_ncols=True)
            display = False
        try:
            import ipywidgets as w

            # The bar takes the room the count, rate and ETA beside it leave: nothing is cut off.
            self.bar = w.FloatProgress(
                value=0,
                min=0,
                max=1,
                description=description,
                style={"description_width": "initial"},
                layout=w.Layout(flex="1 1 auto", width="auto", min_width="8em", max_width="40em"),
            )
            self.bar.add_class("nbcluster-progress")
            self.label = w.Label(value="", layout=w.Layout(flex="0 0 auto", width="auto"))
            self.label.add_class("nbcluster-progress-label")
            self.box = w.HBox([self.bar, self.label], layout=w.Layout(width="100%", align_items="center"))
        except ImportError:
            pass
        if display:
            self.show()
        ProgressView._live.append(self)
        self.thread = threading.Thread(target=self._follow, name="nbcluster-progress", daemon=True)
        self.thread.start()

    # -- rendering ----------------------------------------------------------
    def text(self) -> str:
        elapsed = (self.finished_at or time.monotonic()) - self.started
        n = int(self.n) if float(self.n).is_integer() else self.n
        total = int(self.total) if float(self.total).is_integer() else self.total
        line = tqdm.format_meter(
            n=n,
            total=total or None,
            elapsed=elapsed,
            prefix=self.description,
            unit=self.unit,
            unit_scale=self.n >= 10_000 or self.total >= 10_000,
            ncols=80,
            bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]" if self.fraction else None,
        )
        return line + (f"  ERROR: {self.error}" if self.error else "")

    def short_text(self) -> str:
        """What the widget writes beside its bar: the count, rate and ETA (no second, textual bar)."""
        elapsed = (self.finished_at or time.monotonic()) - self.started
        n = int(self.n) if float(self.n).is_integer() else self.n
        total = int(self.total) if float(self.total).is_integer() else self.total
        count = "{percentage:3.0f}%" if self.fraction else "{n_fmt}/{total_fmt}" if total else "{n_fmt}"
        rate = "" if self.fraction else " · {rate_fmt}"
        line = tqdm.format_meter(
            n=n,
            total=total or None,
            elapsed=elapsed,
            unit=self.unit,
            unit_scale=self.n >= 10_000 or self.total >= 10_000,
            bar_format=count + rate + " · {elapsed}" + (" < {remaining}" if total else ""),
        )
        return line + (f"  ERROR: {self.error}" if self.error else "")

    def _bundle(self) -> dict:
        bundle = {"text/plain": self.text()}
        if self.box is not None:
            bundle.update({k: v for k, v in self.box._repr_mimebundle_().items() if k != "text/plain"})
        return bundle

    def show(self) -> None:
        try:
            from IPython.display import display

            self.handle = display(self._bundle(), raw=True, display_id=True)
        except Exception:
            self.handle = None

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        return self._bundle()

    def _render(self) -> None:
        if self.terminal is not None:
            if self.total and self.terminal.total != self.total:
                self.terminal.total = self.total
            delta = self.n - self.terminal.n
            self.terminal.update(int(delta) if float(delta).is_integer() else delta)
            if self.error:
                self.terminal.set_postfix_str(f"ERROR: {self.error}")
            return
        if self.bar is None:
            return
        total = self.total or 0
        self.bar.max = max(total, 1e-9) if total else 1
        self.bar.value = min(self.n, self.bar.max) if total else 0
        self.label.value = self.short_text()
        if self.error:
            self.bar.bar_style = "danger"
        elif total and self.n >= total:
            self.bar.bar_style = "success"

    # -- following ----------------------------------------------------------
    def _follow(self) -> None:
        while not self.stopped.is_set():
            try:
                n, total, error = self.source()
            except Exception as e:  # the source died: show it, stop
                if self.stopped.is_set():  # stopped meanwhile (e.g. the cluster went away)
                    return
                why = "the cluster is gone" if isinstance(e, ClusterGoneError) else f"{type(e).__name__}: {e}"
                n, total, error = self.n, self.total, why
            if self.stopped.is_set():  # finished by someone else while we asked
                return
            changed = (n, total, error) != (self.n, self.total, self.error)
            self.n, self.total, self.error = n, total or self.total, error
            if changed:
                self._render()
            if error or (self.total and self.n >= self.total):
                self.finish()
                return
            self.stopped.wait(POLL)

    def finish(self) -> None:
        """Stop following; the text fallback becomes the final line."""
        if self.finished_at is None:
            self.finished_at = time.monotonic()
        self.stopped.set()
        self._render()
        if self.terminal is not None:
            self.terminal.close()
        refresh(self.handle, self._bundle(), self.parent)
        if self in ProgressView._live:
            ProgressView._live.remove(self)

    @classmethod
    def stop_all(cls, error: str = "") -> None:
        """Finish every live bar; with `error`, the unfinished ones show it (red)."""
        for view in list(cls._live):
            if error and not (view.total and view.n >= view.total):
                view.error = view.error or error
            view.finish()


class ProgressBar:
    """A live progress bar backed by a progress actor in the cluster.

    Pass the bar to tasks and actors; ``bar.update(n)`` there is a
    fire-and-forget call, cheap even thousands of times a second.

    Example::

        bar = kernel_ext.ProgressBar(total=24, description="sampling")

        @ray.remote
        def work(i, bar):
            ...
            bar.update(1)

        ray.get([work.remote(i, bar) for i in range(24)])   # the bar moves meanwhile
    """

    def __init__(self, total: float, description: str = "", unit: str = "") -> None:
        self.total = total
        engine = engines.current()
        self.actor = engine.remote(ProgressActor, num_cpus=0).remote(total)
        self.view: ProgressView | None = ProgressView(
            lambda: engine.get(self.actor.state.remote(), timeout=30), description, unit
        )

    def update(self, n: float = 1) -> None:
        """Add `n` (fire-and-forget; works in the notebook and inside tasks)."""
        self.actor.update.remote(n)

    def fail(self, message: str = "failed") -> None:
        """Turn the bar into its error state."""
        self.actor.fail.remote(message)

    def close(self) -> None:
        if self.view is not None:
            self.view.finish()

    def __reduce__(self):
        return (_remote_bar, (self.actor, self.total))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        return {"text/plain": self.view.text() if self.view else f"ProgressBar(total={self.total})"}


def _remote_bar(actor, total) -> ProgressBar:
    bar = ProgressBar.__new__(ProgressBar)
    bar.actor, bar.total, bar.view = actor, total, None
    return bar


def follow(
    actor: Any,
    method: str = "get_progress",
    total: float | None = None,
    description: str = "",
    unit: str = "",
) -> ProgressView:
    """A bar that follows any actor's progress method.

    The method may return a fraction in [0, 1] (the classic Ray
    ``ProgressActor.get_progress``), or a count of done items when `total`
    is given.
    """
    call = getattr(actor, method)
    engine = engines.current()

    def source() -> tuple[float, float, str]:
        value = engine.get(call.remote(), timeout=30)
        if total is None:
            return float(value), 1.0, ""
        return float(value), float(total), ""

    view = ProgressView(
        source, description or method, unit if total is not None else "", fraction=total is None
    )
    return view


def progress(refs: list, description: str = "tasks") -> ProgressView:
    """A bar counting finished refs; it turns red if one of them failed."""
    refs = list(refs)
    done: set = set()
    failed: list[str] = []
    engine = engines.current()

    def source() -> tuple[float, float, str]:
        pending = [r for r in refs if r not in done]
        if pending:
            ready, _ = engine.wait(pending, num_returns=len(pending), timeout=0)
            for r in ready:
                done.add(r)
                if not failed:
                    try:
                        engine.get(r, timeout=0)
                    except Exception as e:  # noqa: BLE001 - shown on the bar
                        failed.append(f"{type(e).__name__}")
        return float(len(done)), float(len(refs)), failed[0] if failed else ""

    return ProgressView(source, description, "tasks")
