"""``as_completed`` and ``map_unordered``: results in the order they finish (Ray's ``ray.util``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import ObjectRef, get, remote, wait

__all__ = ["as_completed", "map_unordered"]


def as_completed(
    refs: Iterable[ObjectRef],
    *,
    chunk_size: int = 10,
    yield_obj_refs: bool = False,
    timeout: float | None = None,
) -> Iterator[Any]:
    """Values of `refs` as their tasks finish (or the refs, with ``yield_obj_refs=True``).

    Whatever is ready is taken in groups of up to `chunk_size`; `timeout`
    bounds each wait and raises `TimeoutError` when nothing finished in it.

    Example::

        >>> refs = [slow.remote(i) for i in range(4)]
        >>> sorted(ray.util.as_completed(refs))
        [0, 1, 2, 3]
    """
    pending = list(refs)
    for r in pending:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"as_completed() takes ObjectRefs, got {type(r).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    while pending:
        ready, pending = wait(pending, num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError(f"no result finished within {timeout} s; {len(pending)} pending")
        if pending and chunk_size > 1:
            more, pending = wait(pending, num_returns=min(chunk_size - 1, len(pending)), timeout=0)
            ready += more
        if yield_obj_refs:
            yield from ready
        else:
            yield from get(ready)


def map_unordered(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    backpressure_size: int = 100,
    chunk_size: int = 10,
    yield_obj_refs: bool = False,
    **remote_options: Any,
) -> Iterator[Any]:
    """``fn(item)`` for every item as tasks (at most `backpressure_size` in flight), as they finish.

    Example::

        >>> sorted(ray.util.map_unordered(abs, [-1, -2]))
        [1, 2]
    """
    task = remote(**remote_options)(fn) if remote_options else remote(fn)
    in_flight: list[ObjectRef] = []
    for item in items:
        in_flight.append(task.remote(item))
        if len(in_flight) >= backpressure_size:
            ready, in_flight = wait(in_flight, num_returns=min(chunk_size, len(in_flight)))
            yield from ready if yield_obj_refs else get(ready)
    yield from as_completed(in_flight, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs)
