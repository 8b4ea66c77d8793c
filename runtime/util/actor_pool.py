"""ActorPool: a fixed set of actors that work through a stream of values (Ray's ``ray.util.ActorPool``).

::

    submit(fn, v) ─▶ idle actor? ─yes─▶ fn(actor, v) -> ref ─▶ in flight {ref: (index, actor)}
                          └─no──▶ pending submits (FIFO) ──────────────▲
    get_next()           ─▶ the ref of the oldest index ─▶ actor back to idle ─▶ next pending
    get_next_unordered() ─▶ whichever ref is ready first (`wait`) ─▶ same
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import ActorHandle, ObjectRef, get, wait

__all__ = ["ActorPool"]


def _key(future: Any) -> Any:
    return tuple(future) if isinstance(future, list) else future


def _first(future: Any) -> Any:
    return future[0] if isinstance(future, (list, tuple)) else future


class ActorPool:
    """Run ``fn(actor, value)`` over values on a pool of actors, each busy with one value at a time.

    Example::

        >>> @ray.remote
        ... class Doubler:
        ...     def double(self, v):
        ...         return 2 * v
        >>> pool = ActorPool([Doubler.remote(), Doubler.remote()])
        >>> list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
        [2, 4, 6, 8]
    """

    def __init__(self, actors: list[ActorHandle]) -> None:
        actors = list(actors)
        for a in actors:
            if not isinstance(a, ActorHandle):
                raise TypeError(f"ActorPool takes actor handles (from Cls.remote()), got {type(a).__name__}")
        self._idle_actors: list[ActorHandle] = actors
        self._future_to_actor: dict[Any, tuple[int, ActorHandle]] = {}
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Callable, Any]] = []

    def map(self, fn: Callable[[ActorHandle, Any], Any], values: Iterable) -> Iterator[Any]:
        """Results of ``fn(actor, v)`` for each value, in the order of `values`.

        Results of earlier submissions not yet fetched are dropped, as Ray does.
        """
        self._drop_previous(ordered=True)
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[ActorHandle, Any], Any], values: Iterable) -> Iterator[Any]:
        """Results of ``fn(actor, v)`` for each value, as they complete."""
        self._drop_previous(ordered=False)
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _drop_previous(self, ordered: bool) -> None:
        while self.has_next():
            try:
                if ordered:
                    self.get_next(timeout=0, ignore_if_timedout=True)
                else:
                    self.get_next_unordered(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    def submit(self, fn: Callable[[ActorHandle, Any], Any], value: Any) -> None:
        """Start ``fn(actor, value)`` on an idle actor, or queue it until one is free.

        `fn` must call a method with ``.remote()`` and return the ref (or refs).
        """
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        future = fn(actor, value)
        if not isinstance(_first(future), ObjectRef):
            self._idle_actors.append(actor)
            raise TypeError(
                "the function given to ActorPool must return the ObjectRef of a call, like "
                f"`lambda a, v: a.method.remote(v)`; it returned {type(future).__name__}"
            )
        self._future_to_actor[_key(future)] = (self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = future
        self._next_task_index += 1

    def has_next(self) -> bool:
        """True while some submitted result has not been returned yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order; `TimeoutError` after `timeout` seconds."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            ready, _ = wait([_first(future)], timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise TimeoutError("Timed out waiting for result")
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(future))
        self._return_actor(actor)
        if timed_out:
            raise TimeoutError(f"Timed out waiting for result. The task {future} has been ignored.")
        return get(future)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Whichever result is ready first; `TimeoutError` after `timeout` seconds."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        by_first = {_first(k): k for k in self._future_to_actor}
        ready, _ = wait(list(by_first), num_returns=1, timeout=timeout)
        if ready:
            key = by_first[ready[0]]
        elif not ignore_if_timedout:
            raise TimeoutError("Timed out waiting for result")
        else:
            key = min(self._future_to_actor, key=lambda k: self._future_to_actor[k][0])
        index, actor = self._future_to_actor.pop(key)
        future = self._index_to_future.pop(index)
        self._return_actor(actor)
        self._next_return_index = max(self._next_return_index, index + 1)
        if not ready:
            raise TimeoutError(f"Timed out waiting for result. The task {future} has been ignored.")
        return get(future)

    def _return_actor(self, actor: ActorHandle) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """True when an actor is idle and nothing waits for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> ActorHandle | None:
        """Take an idle actor out of the pool (None when none is free)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: ActorHandle) -> None:
        """Add an actor to the pool; it takes pending work at once."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
