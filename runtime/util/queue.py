"""A first-in, first-out queue shared by tasks and actors (Ray's ``ray.util.queue``).

::

    Queue (a handle, picklable) ──put/get .remote()──▶ _QueueActor (one async actor)
                                                        asyncio.Queue(maxsize) on its loop

Blocking ``put``/``get`` wait inside the actor (``asyncio.wait_for``), so many
callers can wait at once without holding a worker each.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .. import get, kill, remote, wait

__all__ = ["Empty", "Full", "Queue"]


class Empty(Exception):
    """`get` found the queue empty (non-blocking, or after its timeout)."""


class Full(Exception):
    """`put` found the queue full (non-blocking, or after its timeout)."""


class _QueueActor:
    # Every method is async, so all of them run on the actor's one event loop.
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full from None

    async def get(self, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    async def put_nowait(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full from None

    async def put_nowait_batch(self, items: list) -> None:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise Full(
                f"Cannot add {len(items)} items to queue of size {self.queue.qsize()} "
                f"and maxsize {self.maxsize}."
            )
        for item in items:
            self.queue.put_nowait(item)

    async def get_nowait(self) -> Any:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty from None

    async def get_nowait_batch(self, num_items: int) -> list:
        if num_items > self.queue.qsize():
            raise Empty(f"Cannot get {num_items} items from queue of size {self.queue.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]


def _plain(error: Exception) -> Exception:
    """The remote Empty/Full as the plain exception callers catch."""
    for cls in (Empty, Full):
        if isinstance(error, cls):
            return cls(*error.args[:1]) if error.args and isinstance(error.args[0], str) else cls()
    return error


class Queue:
    """A FIFO queue backed by an actor; pass it to tasks and actors to share it.

    Example::

        >>> q = Queue(maxsize=10)
        >>> @ray.remote
        ... def produce(q):
        ...     for i in range(3):
        ...         q.put(i)
        >>> ray.get(produce.remote(q))
        >>> [q.get(timeout=5) for _ in range(3)]
        [0, 1, 2]
    """

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None) -> None:
        if not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize must be an int >= 0 (0 means unbounded), got {maxsize!r}")
        options = dict(actor_options or {})
        options.setdefault("num_cpus", 0)
        self.maxsize = maxsize
        self.actor = remote(_QueueActor).options(**options).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue now."""
        return get(self.actor.qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue now (as `queue.Queue.qsize`)."""
        return self.size()

    def empty(self) -> bool:
        """True when the queue holds nothing now."""
        return get(self.actor.empty.remote())

    def full(self) -> bool:
        """True when the queue holds `maxsize` items now."""
        return get(self.actor.full.remote())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add `item`; when full, wait (up to `timeout` s, then `Full`), or raise `Full` at once if not `block`."""
        if not block:
            return self._call(self.actor.put_nowait.remote(item))
        _check_timeout(timeout)
        self._call(self.actor.put.remote(item, timeout))

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """`put` for asyncio code."""
        if not block:
            return await self._acall(self.actor.put_nowait.remote(item))
        _check_timeout(timeout)
        await self._acall(self.actor.put.remote(item, timeout))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item; when empty, wait (up to `timeout` s, then `Empty`), or raise `Empty` if not `block`."""
        if not block:
            return self._call(self.actor.get_nowait.remote())
        _check_timeout(timeout)
        return self._call(self.actor.get.remote(timeout))

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """`get` for asyncio code."""
        if not block:
            return await self._acall(self.actor.get_nowait.remote())
        _check_timeout(timeout)
        return await self._acall(self.actor.get.remote(timeout))

    def put_nowait(self, item: Any) -> None:
        """`put(item, block=False)`."""
        return self.put(item, block=False)

    def put_nowait_batch(self, items: list) -> None:
        """Add all `items` at once, or none of them (`Full`) if they do not fit."""
        if not isinstance(items, list):
            raise TypeError(f"put_nowait_batch() takes a list of items, got {type(items).__name__}")
        self._call(self.actor.put_nowait_batch.remote(items))

    def get_nowait(self) -> Any:
        """`get(block=False)`."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list:
        """Take `num_items` items at once, or none (`Empty`) if fewer are there."""
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError(f"num_items must be an int >= 0, got {num_items!r}")
        return self._call(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Stop the queue's actor; items left in it are lost.

        Calls already sent are served first (up to `grace_period_s`) unless `force`.
        """
        if self.actor is None:
            return
        if not force:
            wait([self.actor.qsize.remote()], timeout=grace_period_s)
        kill(self.actor)
        self.actor = None

    @staticmethod
    def _call(ref: Any) -> Any:
        try:
            return get(ref)
        except (Empty, Full) as e:
            raise _plain(e) from None

    @staticmethod
    async def _acall(ref: Any) -> Any:
        try:
            return await ref
        except (Empty, Full) as e:
            raise _plain(e) from None


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
