"""``inspect_serializability``: which part of an object cannot be sent to the cluster, and why."""

from __future__ import annotations

import inspect
import sys
from typing import Any, NamedTuple, TextIO

import cloudpickle

__all__ = ["FailureTuple", "inspect_serializability"]


class FailureTuple(NamedTuple):
    """One object that cannot be pickled: the object, its name, and the object holding it."""

    obj: Any
    name: str
    parent: Any

    def __repr__(self) -> str:
        return f"FailTuple({self.name} [obj={self.obj}, parent={self.parent}])"


def _serializable(obj: Any) -> tuple[bool, str]:
    try:
        cloudpickle.dumps(obj)
        return True, ""
    except Exception as e:  # noqa: BLE001 - anything pickling raises is the answer
        return False, f"{type(e).__name__}: {e}"


def _children(obj: Any) -> list[tuple[str, Any]]:
    """What `obj` holds that pickling it would pickle too."""
    if inspect.isfunction(obj):
        try:
            cv = inspect.getclosurevars(obj)
        except (TypeError, ValueError):
            return []
        return [*cv.nonlocals.items(), *cv.globals.items()]
    if isinstance(obj, dict):
        return [(repr(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if hasattr(obj, "__dict__") and not inspect.isclass(obj) and not inspect.ismodule(obj):
        return list(vars(obj).items())
    if inspect.isclass(obj):
        return [(k, v) for k, v in vars(obj).items() if not k.startswith("__")]
    return []


def inspect_serializability(
    base_obj: Any, name: str | None = None, depth: int = 3, print_file: TextIO | None = None
) -> tuple[bool, set[FailureTuple]]:
    """Whether `base_obj` can be sent to the cluster; if not, the innermost parts that cannot.

    Walks closures, globals a function uses, and attributes, up to `depth`
    levels, and prints what it finds (to `print_file`, default stdout).

    Example::

        >>> import threading
        >>> lock = threading.Lock()
        >>> def f():
        ...     return lock
        >>> ok, failures = inspect_serializability(f, name="f")
        >>> ok, [t.name for t in failures]
        (False, ['lock'])
    """
    out = print_file or sys.stdout
    failures: set[FailureTuple] = set()
    ok, why = _serializable(base_obj)
    label = name or getattr(base_obj, "__qualname__", None) or type(base_obj).__name__
    print(f"Checking Serializability of {label!r}", file=out)
    if ok:
        print(f"{label!r} is serializable", file=out)
        return True, failures
    print(f"!!! FAIL serialization: {why}", file=out)
    seen: set[int] = set()

    def walk(obj: Any, obj_name: str, parent: Any, level: int) -> bool:
        """True when a failing child was found below `obj`."""
        if id(obj) in seen:
            return True
        seen.add(id(obj))
        found = False
        if level < depth:
            for child_name, child in _children(obj):
                if _serializable(child)[0]:
                    continue
                print(f"{'    ' * (level + 1)}Serializing {child_name!r} {child!r:.80}...", file=out)
                if not walk(child, child_name, obj, level + 1):
                    print(f"{'    ' * (level + 1)}!!! FAIL serialization: {child_name!r}", file=out)
                    failures.add(_entry(child, child_name, obj))
                found = True
        return found

    if not walk(base_obj, label, None, 0):
        failures.add(_entry(base_obj, label, None))
    return False, failures


def _entry(obj: Any, name: str, parent: Any) -> FailureTuple:
    try:
        hash(obj)
        hash(parent)
    except TypeError:  # keep the set usable: unhashable objects are shown by their repr
        return FailureTuple(repr(obj), name, repr(parent))
    return FailureTuple(obj, name, parent)
