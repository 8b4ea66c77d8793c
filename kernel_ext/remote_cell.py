"""``%%remote``: run a cell on the cluster, with the notebook's names going in and out.

::

    cell source ──ast──▶ names it reads (found in the notebook) ──pickled──▶ task / actor
                         names it assigns at top level       ◀──pickled── values after exec
                         its last expression                 ◀──────────  shown as the result

The cell runs as a task (or, with ``--actor NAME``, in a persistent
namespace held by a named actor, like an ipyparallel engine) of the engine
in use: `run_cell` and `CellNamespace` are plain, and the engine makes them
remote. Its prints
stream into the cell while it runs; an exception shows the remote
traceback with the cell's own line numbers.
"""

from __future__ import annotations

import ast
import builtins
from typing import Any

import cloudpickle


def analyze(source: str) -> tuple[set[str], list[str], bool]:
    """(names read, names assigned at top level, ends with an expression)."""
    tree = ast.parse(source)
    reads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    writes: list[str] = []

    def add(name: str) -> None:
        if name not in writes:
            writes.append(name)

    def targets(node: ast.AST) -> None:
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                add(n.id)

    def visit(stmts: list[ast.stmt]) -> None:
        for st in stmts:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                add(st.name)
            elif isinstance(st, (ast.Import, ast.ImportFrom)):
                for alias in st.names:
                    if alias.name != "*":
                        add((alias.asname or alias.name).split(".")[0])
            elif isinstance(st, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                for t in st.targets if isinstance(st, ast.Assign) else [st.target]:
                    targets(t)
            elif isinstance(st, (ast.For, ast.AsyncFor)):
                targets(st.target)
                visit(st.body)
                visit(st.orelse)
            elif isinstance(st, (ast.With, ast.AsyncWith)):
                for item in st.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
                visit(st.body)
            elif isinstance(st, (ast.If, ast.While)):
                visit(st.body)
                visit(st.orelse)
            elif isinstance(st, ast.Try):
                visit(st.body)
                for h in st.handlers:
                    if h.name:
                        add(h.name)
                    visit(h.body)
                visit(st.orelse)
                visit(st.finalbody)
            elif isinstance(st, ast.Expr):
                for n in ast.walk(st):  # walrus at top level
                    if isinstance(n, ast.NamedExpr):
                        add(n.target.id)

    visit(tree.body)
    has_last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
    return reads, writes, has_last


def execute(source: str, ns: dict, writes: list[str], has_last: bool, filename: str) -> tuple:
    """Run `source` in `ns` (a dict, modified); return (assigned values, last value, skipped names)."""
    tree = ast.parse(source)
    last = tree.body.pop() if has_last else None
    ns.setdefault("__name__", "__main__")
    ns.setdefault("__builtins__", builtins)
    exec(compile(tree, filename, "exec"), ns)
    value = eval(compile(ast.Expression(last.value), filename, "eval"), ns) if last is not None else None
    out, skipped = {}, []
    for name in writes:
        if name not in ns:
            continue
        try:
            check_picklable(ns[name])
        except Exception:  # e.g. an open file: it stays remote
            skipped.append(name)
            continue
        out[name] = ns[name]
    try:
        check_picklable(value)
    except Exception:
        value = repr(value)
    return out, value, skipped


def check_picklable(value: Any) -> None:
    """Raise what pickling `value` would raise, without copying its large buffers.

    Protocol 5 hands NumPy/Arrow/pandas data to `buffer_callback` instead of
    writing it out: the check walks the object graph but copies no array, so
    a 1 GB array costs its metadata here and is serialized once, when sent."""
    cloudpickle.dumps(value, protocol=5, buffer_callback=lambda _buffer: False)  # out of band: not copied


def run_cell(source: str, ns: dict, writes: list[str], has_last: bool, filename: str) -> tuple:
    return execute(source, dict(ns), writes, has_last, filename)


class CellNamespace:
    """A persistent namespace for ``%%remote --actor NAME`` cells."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"__name__": "__main__"}

    def run(self, source: str, ns: dict, writes: list[str], has_last: bool, filename: str) -> tuple:
        self.ns.update(ns)
        return execute(source, self.ns, writes, has_last, filename)

    def names(self) -> list[str]:
        return sorted(k for k in self.ns if not k.startswith("__"))


def shippable(user_ns: dict, reads: set[str]) -> tuple[dict, list[str]]:
    """The notebook values a cell reads, minus those that cannot travel.

    The second item says, for each value left behind, its name and why
    (``"lock (TypeError: cannot pickle '_thread.lock' object)"``).
    """
    ns, skipped = {}, []
    for name in sorted(reads):
        if (
            name not in user_ns
            or name.startswith("_")
            or name in ("In", "Out", "get_ipython", "exit", "quit")
        ):
            continue
        value = user_ns[name]
        try:
            check_picklable(value)
        except Exception as e:
            reason = str(e).splitlines()[0][:120] if str(e) else ""
            skipped.append(f"{name} ({type(e).__name__}{': ' + reason if reason else ''})")
            continue
        ns[name] = value
    return ns, skipped
