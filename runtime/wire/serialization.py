"""Turning values into bytes and back.

Values are pickled with protocol 5. Large buffers (numpy arrays, bytes,
anything exposing the buffer protocol) are taken out of band: small values
travel inline (one ``bytes``), large ones are written once into a
shared-memory segment and read back zero-copy (numpy arrays come back as
read-only views on the segment, as in Ray).

Plain builtin values use the C pickler directly; everything else goes
through cloudpickle so lambdas, closures and classes defined in
``__main__`` or a notebook work. Code objects keep their file name
(`Pickler`): cloudpickle 3.1 replaces it with ``"<dynamic-code>"``, which
would leave every remote traceback of notebook code without its file and
its source lines.

While a value is pickled, every `ObjectRef` and `ActorHandle` inside it is
recorded (`collect_refs`), so the node can keep those objects alive for as
long as the value that contains them exists.
"""

from __future__ import annotations

import errno
import io
import marshal
import os
import pickle
import threading
import types
from collections import ChainMap
from typing import Any

import cloudpickle

from ..config import INLINE_THRESHOLD, store_full_marker
from ..exceptions import ObjectStoreFullError, SerializationError
from . import segments

PROTOCOL = 5
_SIMPLE = (int, float, str, bool, type(None), bytes)
_local = threading.local()


class collect_refs:
    """Context manager: the (id, ref or handle) pairs pickled inside the block."""

    def __enter__(self) -> list[tuple[bytes, Any]]:
        self.outer = getattr(_local, "found", None)
        _local.found = self.found = []
        return self.found

    def __exit__(self, *exc) -> None:
        _local.found = self.outer
        if self.outer is not None:
            self.outer.extend(self.found)


def note_ref(ref_id: bytes, obj: Any = None) -> None:
    """Called by ObjectRef/ActorHandle.__reduce__."""
    found = getattr(_local, "found", None)
    if found is not None:
        found.append((ref_id, obj))


def _load_code(data: bytes) -> types.CodeType:
    return marshal.loads(data)


def _reduce_code(code: types.CodeType) -> tuple:
    # marshal is what .pyc files use: the whole code object (nested ones too) with its
    # co_filename and line table, for the same Python version, as cloudpickle requires anyway.
    return _load_code, (marshal.dumps(code),)


class Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, except that code objects keep their own file name."""

    dispatch_table = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


def cloudpickle_dumps(value: Any, protocol: int = PROTOCOL, buffer_callback=None) -> bytes:
    """`cloudpickle.dumps` with the runtime's `Pickler` (code keeps its file name)."""
    with io.BytesIO() as f:
        Pickler(f, protocol=protocol, buffer_callback=buffer_callback).dump(value)
        return f.getvalue()


def _is_simple(value: Any, depth: int = 2) -> bool:
    """Builtin scalars, and small tuples/lists/dicts of them: the C pickler is enough."""
    t = type(value)
    if t in _SIMPLE:
        return True
    if depth == 0:
        return False
    # Loops, not all() over a generator: this runs for every task's arguments (~1.5 µs less).
    if t is tuple or t is list:
        if len(value) >= 64:
            return False
        for v in value:
            if type(v) not in _SIMPLE and not _is_simple(v, depth - 1):
                return False
        return True
    if t is dict:
        if len(value) >= 64:
            return False
        for k, v in value.items():
            if type(k) not in _SIMPLE or (type(v) not in _SIMPLE and not _is_simple(v, depth - 1)):
                return False
        return True
    return False


def dumps(value: Any, buffer_callback=None) -> bytes:
    """Pickle `value` (cloudpickle when needed); a clear error if it cannot be."""
    if _is_simple(value):
        return pickle.dumps(value, PROTOCOL)
    try:
        return cloudpickle_dumps(value, buffer_callback=buffer_callback)
    except Exception as e:
        raise SerializationError(
            f"could not serialize {_describe(value)}: {type(e).__name__}: {e}. "
            "Pass values that can be pickled (open files, sockets, locks and "
            "generators cannot), or create them inside the task."
        ) from e


def dumps_plain(value: Any) -> bytes | None:
    """`value` pickled when it is made of builtin scalars (`_is_simple`) and small enough
    to travel inline; else None (use `serialize`). No ref can be inside such a value,
    so there is nothing to collect: the common task's arguments skip that machinery."""
    return _inline(value) if _is_simple(value) else None


def _inline(value: Any) -> bytes | None:
    """`value` (known to hold builtin scalars only) pickled, if small enough to travel inline."""
    data = pickle.dumps(value, PROTOCOL)
    return data if len(data) < INLINE_THRESHOLD else None


def dumps_args(args: tuple, kwargs: dict) -> bytes | None:
    """`dumps_plain((args, kwargs))`, the call's arguments: one flat pass over the usual
    handful of scalars instead of `_is_simple`'s recursion (three calls per task)."""
    if len(args) >= 64:
        return None
    for a in args:
        if type(a) not in _SIMPLE:
            return None
    if kwargs and not _is_simple(kwargs, 1):
        return None
    return _inline((args, kwargs))


def loads(data) -> Any:
    return pickle.loads(data)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def serialize(
    value: Any, segment_name: str | None, keep: list | None = None
) -> tuple[bytes | str, int, tuple]:
    """``(wire value, size, contained ref ids)`` for `value`.

    Small values come back as pickled bytes; when the pickled size reaches
    the inline threshold and `segment_name` is given, the value is written
    to that shared-memory segment and its path is returned instead. The
    refs and handles found inside are appended to `keep`.
    """
    plain = dumps_plain(value)
    if plain is not None:  # builtin scalars (most results): no refs to collect, inline
        return plain, len(plain), ()
    return serialize_full(value, segment_name, keep)


def serialize_full(
    value: Any, segment_name: str | None, keep: list | None = None
) -> tuple[bytes | str, int, tuple]:
    """`serialize` for a value `dumps_plain` (or `dumps_args`) already turned down: the
    refs inside collected, a large value written to its segment."""
    buffers: list[pickle.PickleBuffer] = []
    with collect_refs() as found:
        data = dumps(value, buffer_callback=buffers.append)
    if keep is not None:
        keep.extend(obj for _, obj in found if obj is not None)
    ids = tuple(dict.fromkeys(i for i, _ in found))
    size = len(data) + sum(b.raw().nbytes for b in buffers)
    if size < INLINE_THRESHOLD or segment_name is None:
        if buffers:  # small arrays: keep them in band, one bytes object on the wire
            with collect_refs():
                data = dumps(value)
        return data, len(data), ids
    try:
        with open(store_full_marker(segment_name)) as f:  # the node cannot make room: say why
            raise ObjectStoreFullError(f"no room for a {size:,}-byte value: {f.read()}")
    except FileNotFoundError:
        pass
    try:
        path = segments.write_segment(segment_name, data, [b.raw() for b in buffers])
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ObjectStoreFullError(
            f"no room for a {size:,}-byte value in {os.path.dirname(segment_name)} ({e.strerror}); "
            "let go of refs you no longer need (del them), or give the machine more shared memory"
        ) from None
    return path, size, ids


def deserialize(value: bytes | str) -> Any:
    """The Python value of a wire value (inline bytes or a segment path)."""
    if isinstance(value, str):
        data, buffers = segments.read_segment(value)
        return pickle.loads(data, buffers=buffers)
    if segments.is_segment_bytes(value):
        data, buffers = segments.parse_segment(memoryview(value))
        return pickle.loads(data, buffers=buffers)
    return pickle.loads(value)


class Dep:
    """Placeholder for the `index`-th top-level ObjectRef argument of a task."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self):
        return (Dep, (self.index,))


def segment_path(cluster_id: str, node_id: str, object_id: bytes) -> str:
    from ..config import SHM_PREFIX, shm_dir

    return f"{shm_dir()}/{SHM_PREFIX}{cluster_id}-{node_id}-{object_id.hex()}"
