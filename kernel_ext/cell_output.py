"""Output of remote code lands in the cell that submitted it.

::

    cell N runs f.remote()  ──ctx = N's msg_id──▶ task (and its children) carry ctx
    worker print("hi") ──LOG(ctx)──▶ driver I/O thread ──▶ CellOutput.write
        ──▶ IOPub "stream" message whose parent is cell N's request
        ──▶ the front end appends "(f pid=…) hi" to cell N, even if cell N+3 runs now

The kernel's own stdout would put background-thread output in whatever
cell runs *now*; publishing with the submitting cell's parent header is
what keeps output where it belongs.
"""

from __future__ import annotations

import itertools
import sys
import threading
import uuid
from collections import OrderedDict
from typing import Any

MAX_CELLS = 2000  # parent headers remembered (oldest forgotten first)


class CellOutput:
    """Context provider and log handler for one IPython kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.parents: OrderedDict[str, dict] = OrderedDict()
        self.tags: dict[str, str] = {}  # msg_id -> short tag carried in Ray task names
        self.by_tag: dict[str, str] = {}
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def current_ctx(self) -> str | None:
        """The msg_id of the cell executing now (called when work is submitted)."""
        try:
            parent = self.kernel.get_parent()
        except Exception:
            return None
        header = (parent or {}).get("header") or {}
        msg_id = header.get("msg_id")
        if not msg_id:
            return None
        with self.lock:
            if msg_id not in self.parents:
                self.parents[msg_id] = parent
                while len(self.parents) > MAX_CELLS:
                    old, _ = self.parents.popitem(last=False)
                    self.by_tag.pop(self.tags.pop(old, ""), None)
        return msg_id

    def current_tag(self) -> str | None:
        """A short tag for the cell executing now (for engines that carry it in task names)."""
        ctx = self.current_ctx()
        if ctx is None:
            return None
        with self.lock:
            tag = self.tags.get(ctx)
            if tag is None:
                tag = self.tags[ctx] = str(next(self.counter))
                self.by_tag[tag] = ctx
        return tag

    def ctx_of_tag(self, tag: str | None) -> str | None:
        return self.by_tag.get(tag) if tag else None

    def write(self, owner: bytes, ctx: Any, stream: int, text: str, label: str) -> None:
        """Publish remote output, tagged with where it ran, to the cell `ctx`."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        tagged = "".join(f"({label}) {line}\n" for line in lines)
        name = "stderr" if stream == 2 else "stdout"
        parent = self.parents.get(ctx) if isinstance(ctx, str) else None
        kernel = self.kernel
        if parent is None or getattr(kernel, "iopub_socket", None) is None:
            out = sys.stderr if stream == 2 else sys.stdout
            out.write(tagged)
            out.flush()
            return
        kernel.session.send(
            kernel.iopub_socket,
            "stream",
            {"name": name, "text": tagged},
            parent=parent,
            ident=f"stream.{name}".encode(),
        )

    def install(self, client: Any) -> None:
        client.log_handler = self.write


def current_parent() -> dict | None:
    """The request (cell) being executed now in this kernel, if any."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
        return kernel.get_parent() if kernel is not None else None
    except Exception:
        return None


def refresh(handle, bundle: dict, parent: dict | None) -> None:
    """Replace what `handle` (an IPython DisplayHandle, or None) shows, under its own cell."""
    if handle is None or update_display(handle.display_id, bundle, parent):
        return
    try:
        handle.update(bundle, raw=True)
    except Exception:
        pass


def update_display(display_id: str, bundle: dict, parent: dict | None) -> bool:
    """Replace a display's content, attributed to the cell that created it.

    Background threads have no cell of their own; IPython's ``update()``
    would file the update under whatever cell runs now.
    """
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
    except Exception:
        kernel = None
    if kernel is None or parent is None:
        return False
    kernel.session.send(
        kernel.iopub_socket,
        "update_display_data",
        {"data": bundle, "metadata": {}, "transient": {"display_id": display_id}},
        parent=parent,
        ident=b"display_data",
    )
    return True


class _Shown:
    def __init__(self, display_id: str) -> None:
        self.display_id = display_id

    def update(self, bundle: dict, raw: bool = True) -> None:  # refresh() falls back to this
        pass


def show(bundle: dict, parent: dict | None) -> _Shown | None:
    """Display `bundle` in the cell of `parent` (from any thread); a handle for `refresh`."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
    except Exception:
        kernel = None
    if kernel is None or parent is None:
        return None
    display_id = uuid.uuid4().hex
    kernel.session.send(
        kernel.iopub_socket,
        "display_data",
        {"data": bundle, "metadata": {}, "transient": {"display_id": display_id}},
        parent=parent,
        ident=b"display_data",
    )
    return _Shown(display_id)
