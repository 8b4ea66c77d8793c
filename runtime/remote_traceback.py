"""A traceback that crossed processes: captured where the code ran, rendered where it is read.

::

    worker   RemoteTraceback.capture(exc)
               every exception of the chain (cause / context) as plain frames:
               (file, line number, function, source line or "", runtime's own?)
                 │  pickled inside TaskError, with the task's result
                 ▼
    driver   RemoteTraceback.render(cell_name=...)
               fills the source lines the worker could not read from the driver's
               linecache (a notebook cell's source lives only in the kernel), drops
               the runtime's own frames (NBCLUSTER_FULL_TRACEBACK=1 keeps them) and,
               in IPython, names a cell as IPython does ("Cell In[3], line 2").

Rendering happens where the error is read, not where it was raised: the
driver that defined a function in a notebook cell is the only process whose
linecache holds that cell's source. The file names are right because the
runtime pickles code objects with their own ``co_filename`` (see
`serialization.dumps`), where cloudpickle 3.1 writes ``"<dynamic-code>"``.
"""

from __future__ import annotations

import linecache
import os
import traceback
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["FULL_TRACEBACK_ENV", "Frame", "RemoteTraceback"]

FULL_TRACEBACK_ENV = "NBCLUSTER_FULL_TRACEBACK"

_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
# The notebook layer's own runners (``%%remote``'s cell executor) sit next to the runtime.
_INTERNAL_DIRS = (_RUNTIME_DIR + os.sep, os.path.join(os.path.dirname(_RUNTIME_DIR), "kernel_ext") + os.sep)

_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


class Frame(NamedTuple):
    """One frame of a remote traceback."""

    filename: str
    lineno: int
    name: str
    line: str  # the source line, "" when the worker could not read it
    internal: bool  # a frame of the runtime itself (hidden unless asked for)


class Block(NamedTuple):
    """One exception of a chain: its frames, its ``Type: message`` lines, and what links it to the next."""

    frames: tuple[Frame, ...]
    exception: tuple[str, ...]
    link: str  # printed after this block: _CAUSE, _CONTEXT or ""


def is_internal(filename: str) -> bool:
    return filename.startswith(_INTERNAL_DIRS)


class RemoteTraceback:
    """The frames of a remote exception and its chain, rendered on demand.

    Example::

        >>> try:
        ...     1 / 0
        ... except ZeroDivisionError as e:
        ...     tb = RemoteTraceback.capture(e)
        >>> tb.render().splitlines()[-1]
        'ZeroDivisionError: division by zero'
    """

    __slots__ = ("blocks",)

    def __init__(self, blocks: tuple[Block, ...]) -> None:
        self.blocks = blocks

    def __reduce__(self):
        return (RemoteTraceback, (self.blocks,))

    @classmethod
    def capture(cls, exc: BaseException) -> RemoteTraceback:
        """Take `exc`'s traceback and chain as plain data (called where it was raised)."""
        te: traceback.TracebackException | None = traceback.TracebackException(
            type(exc), exc, exc.__traceback__, lookup_lines=True
        )
        blocks: list[Block] = []
        seen: set[int] = set()
        link = ""
        while te is not None and id(te) not in seen:
            seen.add(id(te))
            frames = tuple(
                Frame(f.filename, f.lineno or 0, f.name, (f.line or "").strip(), is_internal(f.filename))
                for f in te.stack
            )
            blocks.append(Block(frames, tuple(te.format_exception_only()), link))
            if te.__cause__ is not None:
                te, link = te.__cause__, _CAUSE
            elif te.__context__ is not None and not te.__suppress_context__:
                te, link = te.__context__, _CONTEXT
            else:
                te = None
        blocks.reverse()  # Python prints the oldest exception first
        return cls(tuple(blocks))

    @classmethod
    def from_text(cls, text: str) -> RemoteTraceback:
        """A traceback known only as text (kept as it is)."""
        return cls((Block((), (text if text.endswith("\n") else text + "\n",), ""),))

    def render(self, full: bool | None = None, cell_name: Callable[[str], str | None] | None = None) -> str:
        """The traceback as Python would print it, with the user's frames only unless `full`.

        `full` defaults to the ``NBCLUSTER_FULL_TRACEBACK`` environment variable.
        `cell_name(filename)` may name a frame's file (IPython: ``"Cell In[3]"``).
        """
        if full is None:
            full = os.environ.get(FULL_TRACEBACK_ENV, "") not in ("", "0")
        text = ""
        for block in self.blocks:
            text += _render_block(block, full, cell_name)
            if block.link:
                text += f"\n{block.link}\n\n"
        return text


def _render_block(block: Block, full: bool, cell_name: Callable[[str], str | None] | None) -> str:
    frames = block.frames
    if not full and any(not f.internal for f in frames):
        frames = tuple(f for f in frames if not f.internal)
    out: list[str] = []
    if frames:
        out.append("Traceback (most recent call last):\n")
    for f in frames:
        label = cell_name(f.filename) if cell_name is not None else None
        where = f"{label}, line {f.lineno}" if label else f'File "{f.filename}", line {f.lineno}'
        out.append(f"  {where}, in {f.name}\n")
        line = f.line or linecache.getline(f.filename, f.lineno).strip()
        if line:
            out.append(f"    {line}\n")
    out.extend(block.exception)
    return "".join(out)
