"""Pool: the standard library's ``multiprocessing.Pool`` API, with actors as its processes.

::

    Pool(processes=N) ─▶ N actors (_PoolActor), each runs `initializer(*initargs)` once
    map/imap/starmap ─▶ chunks of `chunksize` items ─▶ the least busy actor ─▶ one ref per chunk
    AsyncResult / IMapIterator ◀── refs, read in order (map, imap) or as they finish (imap_unordered)

The function is put in the object store once per call and passed by ref, so a
chunk carries only its items. Unlike a local pool nothing needs to be
importable by a child process: functions and lambdas travel by value.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ... import ObjectRef, cluster_resources, get, init, is_initialized, kill, put, remote, wait

__all__ = ["AsyncResult", "IMapIterator", "Pool"]

RUN, CLOSE, TERMINATE = "run", "close", "terminate"


class _PoolActor:
    def __init__(self, initializer: Callable | None, initargs: tuple) -> None:
        if initializer is not None:
            initializer(*initargs)

    def ping(self) -> int:
        return os.getpid()

    def run_batch(self, func: Callable, batch: list, star: bool) -> list:
        if star:
            return [func(*args) for args in batch]
        return [func(x) for x in batch]

    def run_one(self, func: Callable, args: tuple, kwargs: dict) -> Any:
        return func(*args, **kwargs)


class AsyncResult:
    """The result of `apply_async` / `map_async` (as ``multiprocessing.pool.AsyncResult``).

    Callbacks run on the pool's result thread, as in the standard library:
    they may submit more work to the pool.
    """

    def __init__(
        self,
        pool: Pool,
        refs: list[ObjectRef],
        single: bool,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ) -> None:
        self._pool = pool
        self._single = single
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._callback = callback
        self._error_callback = error_callback
        self._futures = [r.future() for r in refs]
        self._left = len(self._futures)
        self._count_lock = threading.Lock()
        if not self._futures:
            pool._results.submit(self._finish)
        for f in self._futures:
            f.add_done_callback(self._one_done)

    def _one_done(self, _future: Future) -> None:
        with self._count_lock:
            self._left -= 1
            last = self._left == 0
        if last:  # off the runtime's I/O thread: a callback may submit more work
            try:
                self._pool._results.submit(self._finish)
            except RuntimeError:  # the pool was terminated
                self._finish()

    def _finish(self) -> None:
        try:
            values = [f.result() for f in self._futures]
            self._value = values[0] if self._single else list(itertools.chain.from_iterable(values))
        except BaseException as e:  # noqa: BLE001 - the caller gets it from get()
            self._error = e
        try:
            if self._error is None and self._callback is not None:
                self._callback(self._value)
            elif self._error is not None and self._error_callback is not None:
                self._error_callback(self._error)
        finally:
            self._done.set()

    def ready(self) -> bool:
        """True once the result (or an error) is there."""
        return self._done.is_set()

    def successful(self) -> bool:
        """True if it finished without an error; ValueError while not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready, or until `timeout` seconds pass."""
        self._done.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The value; re-raises the task's exception; `multiprocessing.TimeoutError` after `timeout`."""
        if not self._done.wait(timeout):
            raise multiprocessing.TimeoutError(f"the result was not ready within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


class IMapIterator:
    """What `imap` and `imap_unordered` return: results as an iterator, ``next(timeout)`` too."""

    def __init__(self, pool: Pool, func: Callable, iterable: Iterable, chunksize: int, ordered: bool) -> None:
        self._pool = pool
        self._ordered = ordered
        self._pending: list[ObjectRef] = []  # in submission order
        self._buffer: list[Any] = []
        self._chunks = _chunks(iterable, chunksize)
        self._func_ref = put(func)
        self._window = max(2, 2 * len(pool._actors))  # chunks in flight: bounded memory on long inputs
        self._exhausted = False
        self._fill()

    def _fill(self) -> None:
        while not self._exhausted and len(self._pending) < self._window:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._exhausted = True
                break
            self._pending.append(self._pool._submit_chunk(self._func_ref, chunk, False))

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result; `multiprocessing.TimeoutError` if none comes within `timeout` s."""
        while not self._buffer:
            if not self._pending:
                raise StopIteration
            if self._ordered:
                ref = self._pending[0]
                ready, _ = wait([ref], timeout=timeout)
            else:
                ready, _ = wait(self._pending, num_returns=1, timeout=timeout)
            if not ready:
                raise multiprocessing.TimeoutError(f"no result within {timeout} s")
            self._pending.remove(ready[0])
            self._buffer.extend(get(ready[0]))
            self._fill()
        return self._buffer.pop(0)


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


class Pool:
    """A pool of actors with the standard library's Pool API (Ray's ``ray.util.multiprocessing.Pool``).

    `processes` defaults to the cluster's CPUs; each actor takes one CPU (change
    it with ``ray_remote_args={"num_cpus": ...}``); more processes than CPUs share them. `initializer(*initargs)` runs
    once in each. `maxtasksperchild` and `context` are accepted and ignored.

    Example::

        >>> from runtime.util.multiprocessing import Pool
        >>> def f(x):
        ...     return x * x
        >>> with Pool(2) as p:
        ...     p.map(f, range(5))
        [0, 1, 4, 9, 16]
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable | None = None,
        initargs: tuple = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: dict | None = None,
    ) -> None:
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not is_initialized():
            init(address=ray_address)
        args = {"num_cpus": 1, **(ray_remote_args or {})}
        cpus = cluster_resources().get("CPU", 1)
        if processes is None:
            per = args.get("num_cpus") or 1
            processes = max(1, int(cpus // per))
        elif "num_cpus" not in (ray_remote_args or {}) and processes > cpus:
            # More processes than CPUs (joblib's n_jobs=4 on 2 cores): they share the CPUs,
            # as a local Pool's processes would, instead of waiting for CPUs that never free.
            args["num_cpus"] = cpus / processes
        self._processes = processes
        cls = remote(_PoolActor).options(**args)
        self._actors = [cls.remote(initializer, tuple(initargs)) for _ in range(processes)]
        self._load = [0] * processes
        self._owner: dict[ObjectRef, int] = {}
        self._outstanding: list[ObjectRef] = []
        self._state = RUN
        self._lock = threading.Lock()
        self._results = ThreadPoolExecutor(1, thread_name_prefix="pool-results")

    # -- dispatch -----------------------------------------------------------
    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _submit_chunk(self, func_ref: ObjectRef, chunk: list, star: bool) -> ObjectRef:
        with self._lock:
            self._reap()
            i = min(range(len(self._actors)), key=self._load.__getitem__)
            ref = self._actors[i].run_batch.remote(func_ref, chunk, star)
            self._load[i] += 1
            self._owner[ref] = i
            self._outstanding.append(ref)
            return ref

    def _reap(self) -> None:
        """Forget finished chunks (their actor's load goes down)."""
        if not self._outstanding:
            return
        done, rest = wait(self._outstanding, num_returns=len(self._outstanding), timeout=0)
        for ref in done:
            self._load[self._owner.pop(ref)] -= 1
        self._outstanding = rest

    def _chunksize(self, iterable: Any, chunksize: int | None) -> tuple[list, int]:
        items = iterable if isinstance(iterable, list) else list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(items), len(self._actors) * 4)
            if extra:
                chunksize += 1
        if chunksize < 1:
            chunksize = 1
        return items, chunksize

    def _map_refs(self, func: Callable, iterable: Iterable, chunksize: int | None, star: bool) -> list:
        self._check_running()
        items, chunksize = self._chunksize(iterable, chunksize)
        func_ref = put(func)
        return [self._submit_chunk(func_ref, c, star) for c in _chunks(items, chunksize)]

    # -- the standard library's API ------------------------------------------
    def apply(self, func: Callable, args: tuple = (), kwds: dict | None = None) -> Any:
        """``func(*args, **kwds)`` on one of the pool's actors; its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable,
        args: tuple = (),
        kwds: dict | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ) -> AsyncResult:
        """`apply` without waiting: an `AsyncResult`."""
        self._check_running()
        with self._lock:
            self._reap()
            i = min(range(len(self._actors)), key=self._load.__getitem__)
            ref = self._actors[i].run_one.remote(func, tuple(args), dict(kwds or {}))
            self._load[i] += 1
            self._owner[ref] = i
            self._outstanding.append(ref)
        return AsyncResult(self, [ref], True, callback, error_callback)

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """``[func(x) for x in iterable]``, computed by the pool, in order."""
        return self.map_async(func, iterable, chunksize).get()

    def map_async(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ) -> AsyncResult:
        """`map` without waiting: an `AsyncResult` of the list."""
        refs = self._map_refs(func, iterable, chunksize, False)
        return AsyncResult(self, refs, False, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable[Iterable], chunksize: int | None = None) -> list:
        """``[func(*args) for args in iterable]``, in order."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(
        self,
        func: Callable,
        iterable: Iterable[Iterable],
        chunksize: int | None = None,
        callback: Callable | None = None,
        error_callback: Callable | None = None,
    ) -> AsyncResult:
        """`starmap` without waiting."""
        items = [tuple(a) for a in iterable]
        return AsyncResult(
            self, self._map_refs(func, items, chunksize, True), False, callback, error_callback
        )

    def imap(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """Results of ``func(x)`` one by one, in order, while the input is still being read."""
        self._check_running()
        return IMapIterator(self, func, iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int = 1) -> IMapIterator:
        """Results of ``func(x)`` as they finish."""
        self._check_running()
        return IMapIterator(self, func, iterable, chunksize, ordered=False)

    # -- lifetime ---------------------------------------------------------------
    def close(self) -> None:
        """Accept no more work; what was submitted still runs."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self) -> None:
        """Stop the actors now; work not finished is lost."""
        self._state = TERMINATE
        for actor in self._actors:
            try:
                kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        self._outstanding = []
        self._owner = {}
        self._results.shutdown(wait=False)

    def join(self) -> None:
        """Wait for the submitted work, then stop the actors; call `close` or `terminate` first."""
        if self._state == RUN:
            raise ValueError("Pool is still running; call close() or terminate() before join()")
        if self._outstanding:
            wait(self._outstanding, num_returns=len(self._outstanding))
        self.terminate()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()

    def __reduce__(self):
        raise TypeError("a Pool cannot be passed to tasks or pickled; create it where it is used")

    def __repr__(self) -> str:
        return f"<runtime.util.multiprocessing.Pool state={self._state} pool_size={len(self._actors)}>"
