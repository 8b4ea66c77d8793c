"""Benchmark suite: the same workloads on nbcluster's runtime, Ray and Dask.

Run from the repository root::

    python benchmarks/bench.py                      # every installed framework, full sizes
    python benchmarks/bench.py --quick              # smaller counts, fewer repetitions (< ~3 min)
    python benchmarks/bench.py --only runtime,ray --json out.json

Each framework runs in a fresh subprocess of this script (``--child``), so
import and start-up are measured cold, memory is that framework's alone and
the frameworks never share a machine with each other's daemons. Every
cluster gets 2 CPUs / 2 worker processes:

* runtime: ``runtime.init(num_cpus=2)``
* Ray:     ``ray.init(num_cpus=2)``
* Dask:    ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``

A child writes its numbers to a JSON file after every workload (a crash or
timeout keeps what was measured); the parent prints one table with a
"runtime vs X" speed-up column (> 1 means runtime is better) and, with
``--json``, writes every number including the raw repetitions. The parent
makes itself a child subreaper, so any process a framework leaves behind
after its shutdown is noticed, reported and terminated.

See benchmarks/README.md for what each workload measures.
"""

from __future__ import annotations

import abc
import argparse
import ctypes
import dataclasses
import gc
import importlib.metadata
import importlib.util
import io
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("runtime", "ray", "dask")
# The module whose presence means "installed", and the distributions whose versions we print.
FRAMEWORK_MODULE = {"runtime": "runtime", "ray": "ray", "dask": "distributed"}
VERSIONS_OF = ("nbcluster", "ray", "dask", "distributed", "numpy", "pyzmq", "cloudpickle", "psutil")
DISPLAY = {"runtime": "runtime", "ray": "Ray", "dask": "Dask"}
MB = 1024 * 1024
RUNTIME_ROOT_ENV = "NBC_BENCH_RUNTIME_ROOT"  # where the child imports `runtime` from (--runtime-rev)
START_TIMEOUT_S = 120.0
SHUTDOWN_LIMIT_S = 90.0  # s: Dask's shutdown taking longer is reported as an error
PREFIX = "[bench] "


# --------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class Params:
    """Sizes and repetition policy of one run (the same for every framework)."""

    reps: int  # at most this many repetitions of a repeated workload...
    budget_s: float  # ...and no new repetition once this many seconds were spent on it...
    startup_samples: int  # cold starts measured (one per fresh process)
    min_reps: int = 5  # ...but at least this many (unless the budget is spent), and then...
    spread: float = 0.10  # ...until the samples' interquartile range is within this share of the median
    sync_tasks: int = 1_000
    async_tasks: int = 10_000
    actor_sync: int = 1_000
    actor_async: int = 10_000
    array_mb: int = 100
    mc_tasks: int = 8
    mc_samples: int = 400_000
    mc_small_tasks: int = 64  # the same work in small chunks (~5 ms): scheduling overhead shows
    mc_small_samples: int = 50_000
    queued: int = 100_000  # 0: workload 8 is skipped
    queued_limit_s: float = 150.0  # workload 8 gives up (reported as "> limit") after this long
    idle_wait_s: float = 2.0  # settle time before the memory reading
    rep_limit_s: float = 90.0  # one repetition taking longer is stopped (a hang)


FULL = Params(reps=15, budget_s=20.0, startup_samples=3)
QUICK = Params(
    reps=5,
    budget_s=5.0,
    startup_samples=1,
    min_reps=3,
    sync_tasks=300,
    async_tasks=2_000,
    actor_sync=300,
    actor_async=2_000,
    idle_wait_s=1.0,
)


class RepetitionTimeout(Exception):
    """A repetition ran past `Params.rep_limit_s` (raised by SIGALRM in the main thread)."""


NOTES: list[str] = []  # repetitions that failed after others succeeded, drained per workload


def spread(values: list[float]) -> float:
    """Interquartile range over the median (0 for fewer than 2 samples): how much a figure swings."""
    if len(values) < 2:
        return 0.0
    q1, mid, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / abs(mid) if mid else 0.0


def settled(samples: list[Any], params: Params) -> bool:
    """Enough samples, and every figure in them (a sample may be a tuple) swings little."""
    if len(samples) < params.min_reps:
        return False
    columns = zip(*samples, strict=True) if isinstance(samples[0], tuple) else [samples]
    return all(spread(list(col)) <= params.spread for col in columns)


def repeat(fn: Callable[[], Any], params: Params) -> list[Any]:
    """Run `fn` until its figures settle: at least `params.min_reps` times, then until their
    spread (interquartile range / median) is within `params.spread`, at most `params.reps`
    times; no new run once `params.budget_s` was spent (at least one run).

    The first call may take at most `params.rep_limit_s`, later ones 3 times
    as long as the first did (at least 10 s): a hang is cut short. When a
    call fails or hangs after others succeeded, their samples are kept (and
    a note is left in `NOTES`); when the first one fails, the error
    propagates.
    """
    limit = params.rep_limit_s

    def on_alarm(signum: int, frame: Any) -> None:
        raise RepetitionTimeout(f"a repetition took over {limit:.0f} s (hung?)")

    out: list[Any] = []
    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        while len(out) < params.reps and not settled(out, params):
            signal.setitimer(signal.ITIMER_REAL, limit)
            t0 = time.perf_counter()
            try:
                out.append(fn())
                limit = min(limit, max(10.0, 3 * (time.perf_counter() - t0)))
            except Exception as e:
                if not out:
                    raise
                NOTES.append(
                    f"repetition {len(out) + 1} failed ({type(e).__name__}: {e}); "
                    f"median of the {len(out)} before it"
                )
                break
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if time.perf_counter() - start > params.budget_s:
                break
    finally:
        signal.signal(signal.SIGALRM, previous)
    return out


def summary(key: str, values: list[float]) -> dict[str, Any]:
    """A figure's median with its spread: min, max, interquartile range / median, samples."""
    return {
        key: median(values),
        f"{key}_min": min(values),
        f"{key}_max": max(values),
        f"{key}_iqr": spread(values),
        f"{key}_n": len(values),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def say(msg: str) -> None:
    print(PREFIX + msg, flush=True)


# --------------------------------------------------------------------------- remote code
# Plain module-level functions and classes; each backend makes them remote its own way.


def noop(x: Any) -> Any:
    return x


def array_sum(a: Any) -> float:
    return float(a.sum())


def mc_pi_chunk(seed: int, n: int) -> int:
    """Points of `n` uniform samples in the unit square that fall inside the quarter circle.

    Plain Python, as in Ray's Monte Carlo pi tutorial: ~0.2 s per 400,000
    samples, so the work (not the framework's overhead) dominates and the
    speed-up over serial shows how well the cores are used.
    """
    import random

    rng = random.Random(seed)
    inside = 0
    for _ in range(n):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


class Echo:
    """The actor: one method that returns its argument."""

    def echo(self, x: Any) -> Any:
        return x


# --------------------------------------------------------------------------- backends


class Backend(abc.ABC):
    """What a workload needs from a framework; refs are whatever the framework returns."""

    name = ""

    @abc.abstractmethod
    def import_framework(self) -> None: ...

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def version(self) -> str: ...

    @abc.abstractmethod
    def task(self, fn: Callable) -> Callable[..., Any]:
        """A function that submits `fn(*args)` and returns a ref at once."""
        ...

    @abc.abstractmethod
    def get(self, ref: Any) -> Any: ...

    @abc.abstractmethod
    def get_list(self, refs: list, timeout: float | None = None) -> list:
        """The values of `refs`; raises a `TimeoutError` after `timeout` seconds."""
        ...

    @abc.abstractmethod
    def put(self, value: Any) -> Any: ...

    def get_put(self, ref: Any) -> Any:
        """The value of a ref made by `put` (Dask: gather it back)."""
        return self.get(ref)

    def abandon(self, refs: list) -> None:
        """Tasks whose results nobody waits for any more (the rest of a timed-out queue): their
        refs go (Ray's and ours finish them, or drop them at shutdown)."""
        refs.clear()

    @abc.abstractmethod
    def actor(self, cls: type) -> Any:
        """Start an actor of `cls` and wait until it is ready."""
        ...

    @abc.abstractmethod
    def method(self, actor: Any, name: str) -> Callable[..., Any]:
        """A function that calls `actor.name(*args)` and returns a ref at once."""
        ...

    def kill_actor(self, actor: Any) -> None:  # noqa: B027 - optional: not every framework can
        return None

    @abc.abstractmethod
    def shutdown(self) -> None: ...


class RayLike(Backend):
    """nbcluster's runtime and Ray: the same API, so the same code."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mod: Any = None

    def import_framework(self) -> None:
        if self.name == "runtime":
            sys.path.insert(0, os.environ.get(RUNTIME_ROOT_ENV) or str(ROOT))
            import runtime as mod
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report over the network
            import ray as mod
        self.mod = mod

    def version(self) -> str:
        return self.mod.__version__

    def start(self) -> None:
        self.mod.init(num_cpus=2)

    def task(self, fn: Callable) -> Callable[..., Any]:
        return self.mod.remote(fn).remote

    def get(self, ref: Any) -> Any:
        return self.mod.get(ref)

    def get_list(self, refs: list, timeout: float | None = None) -> list:
        return self.mod.get(refs, timeout=timeout)

    def put(self, value: Any) -> Any:
        return self.mod.put(value)

    def actor(self, cls: type) -> Any:
        handle = self.mod.remote(cls).remote()
        self.mod.get(handle.echo.remote(0))
        return handle

    def method(self, actor: Any, name: str) -> Callable[..., Any]:
        return getattr(actor, name).remote

    def kill_actor(self, actor: Any) -> None:
        self.mod.kill(actor)

    def shutdown(self) -> None:
        self.mod.shutdown()


class DaskBackend(Backend):
    """Dask distributed on a LocalCluster of 2 single-threaded worker processes."""

    name = "dask"

    def __init__(self) -> None:
        self.distributed: Any = None
        self.cluster: Any = None
        self.client: Any = None

    def import_framework(self) -> None:
        import distributed

        self.distributed = distributed

    def version(self) -> str:
        return self.distributed.__version__

    def start(self) -> None:
        self.cluster = self.distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        self.client = self.distributed.Client(self.cluster)

    def task(self, fn: Callable) -> Callable[..., Any]:
        submit = self.client.submit

        def call(*args: Any) -> Any:
            return submit(fn, *args, pure=False)

        return call

    def get(self, ref: Any) -> Any:
        return ref.result()

    def get_list(self, refs: list, timeout: float | None = None) -> list:
        if refs and isinstance(refs[0], self.distributed.Future):
            if timeout is not None:
                self.distributed.wait(refs, timeout=timeout)
            return self.client.gather(refs)
        return [r.result(timeout) for r in refs]  # actor futures

    def put(self, value: Any) -> Any:
        return self.client.scatter(value, hash=False)

    def get_put(self, ref: Any) -> Any:
        return self.client.gather(ref)

    def actor(self, cls: type) -> Any:
        handle = self.client.submit(cls, actor=True).result()
        handle.echo(0).result()
        return handle

    def method(self, actor: Any, name: str) -> Callable[..., Any]:
        return getattr(actor, name)

    def abandon(self, refs: list) -> None:
        # Cancelled before shutdown, which then has nothing queued (0.5 s instead of 1.4 s with
        # 30,000 queued). With them queued after the 150 s limit, Client.shutdown failed inside
        # distributed (RuntimeError: dictionary changed size during iteration) in two full runs.
        self.client.cancel(refs)
        refs.clear()

    def shutdown(self) -> None:
        # Client.shutdown stops the scheduler and workers, then the client. Closing the cluster
        # first left the client reconnecting, which sometimes failed inside distributed
        # (RuntimeError: dictionary changed size during iteration); closing the client first
        # took ~17 s with 30,000 tasks queued, shutdown ~2.5 s.
        # Bounded: in one full run (2026-12-02) it hung for over 5 minutes after the queued
        # workload's tasks were cancelled, until the child's 600 s limit killed it (a script
        # cancelling 100,000 queued tasks and shutting down took 1.4 + 0.9 s).
        errors: list[BaseException] = []

        def close() -> None:
            try:
                try:
                    self.client.shutdown()
                finally:
                    self.cluster.close(timeout=30)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
                errors.append(e)

        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(SHUTDOWN_LIMIT_S)
        if closer.is_alive():
            raise TimeoutError(f"Dask's Client.shutdown() did not return within {SHUTDOWN_LIMIT_S:.0f} s")
        if errors:
            raise errors[0]


def make_backend(framework: str) -> Backend:
    return DaskBackend() if framework == "dask" else RayLike(framework)


# --------------------------------------------------------------------------- workloads


class Machine:
    """The machine's own figures for runtime's rows measured beside them: in its process,
    each repetition paired with one of the machine's (benchmarks/ceiling.py: two bare echo
    processes, and multiprocessing.Pool(2) on the same chunks). Measured minutes apart, a
    share carried the machine's drift (33 % of the echo in a run where the whole machine
    had slowed, 58 % in a quiet one); paired, both sides see the same minutes.

    The echo processes are forked before the cluster starts (from a process with no
    threads yet) and closed after the sync actor calls; the Pool lives for one Monte
    Carlo workload, its workers forked by a fork server (not from this process, whose
    pages they would share: with them alive, a 100 MB put here took ~10 % longer). Their
    processes are not counted as the cluster's (`cluster_processes`)."""

    def __init__(self) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import ceiling

        self.ceiling = ceiling
        before = self._children()
        self.echoes: Any = ceiling.Echoes()
        self.pool: Any = None
        HELPER_PIDS.update(self._children() - before)

    @staticmethod
    def _children() -> set[int]:
        return {c.pid for c in psutil.Process().children(recursive=True)}

    def echo_rate(self, n: int) -> float:
        """Round trips a second through the bare echo, one at a time."""
        t0 = time.perf_counter()
        self.ceiling.round_trips(self.echoes, n)
        return n / (time.perf_counter() - t0)

    def close_echoes(self) -> None:
        if self.echoes is not None:
            self.echoes.close()
            self.echoes = None

    def open_pool(self) -> None:
        before = self._children()  # the cluster's: it starts none meanwhile
        self.pool = multiprocessing.get_context("forkserver").Pool(2)
        self.pool.apply(int, (1,))
        self.ceiling.pool_chunks(self.pool, mc_pi_chunk, 4, 1000)  # warm, as runtime's
        HELPER_PIDS.update(self._children() - before)

    def pool_parallel(self, tasks: int, samples: int) -> float:
        """Seconds for Pool(2) to run the chunks (its own default chunking, as ceiling.py)."""
        t0 = time.perf_counter()
        self.ceiling.pool_chunks(self.pool, mc_pi_chunk, tasks, samples)
        return time.perf_counter() - t0

    def close_pool(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def close(self) -> None:
        self.close_pool()
        self.close_echoes()


MACHINE: list[Machine | None] = [None]  # runtime's child only
HELPER_PIDS: set[int] = set()  # the Machine's processes: not part of the cluster


def with_machine(key: str, ours: list[float], machine: list[float], higher: bool) -> dict[str, Any]:
    """The paired machine figure of `key` (median) and runtime's share of it: the median of
    the per-pair shares (1.0: as fast as the machine allows)."""
    shares = [o / m if higher else m / o for o, m in zip(ours, machine, strict=True)]
    return {f"{key}_machine": median(machine), f"{key}_share": median(shares), f"{key}_shares": shares}


def paired(ours: float, machine: float, higher: bool) -> tuple[float, float, float]:
    """One repetition of runtime beside the machine's figure, with runtime's share of it as a
    third figure: `repeat` goes on until the share settles too, not only the two figures (a
    drift of the machine moves both, and the share is what the goals are about)."""
    return ours, machine, (ours / machine if higher else machine / ours)


def sync_rates(key: str, runs: list[Any]) -> dict[str, Any]:
    """A sync row's results: its rates (`<key>_per_s`), each paired with the echo's when the
    Machine measured it beside them (`paired` per run)."""
    if not runs or not isinstance(runs[0], tuple):
        return {**summary(f"{key}_per_s", runs), f"{key}_runs": runs}
    ours, echo = [r[0] for r in runs], [r[1] for r in runs]
    return {
        **summary(f"{key}_per_s", ours),
        f"{key}_runs": ours,
        **with_machine(f"{key}_per_s", ours, echo, higher=True),
    }


def w_sync_tasks(b: Backend, p: Params) -> dict[str, Any]:
    """2. `get(f.remote(i))` one at a time."""
    f = b.task(noop)
    b.get_list([f(i) for i in range(20)])  # warm-up
    machine = MACHINE[0]

    def once() -> float | tuple[float, float]:
        t0 = time.perf_counter()
        for i in range(p.sync_tasks):
            if b.get(f(i)) != i:
                raise AssertionError("wrong result")
        rate = p.sync_tasks / (time.perf_counter() - t0)
        return rate if machine is None else paired(rate, machine.echo_rate(p.sync_tasks), higher=True)

    return sync_rates("sync_tasks", repeat(once, p))


def w_async_tasks(b: Backend, p: Params) -> dict[str, Any]:
    """3. Submit all no-op tasks, then get them all."""
    f = b.task(noop)

    def once() -> float:
        t0 = time.perf_counter()
        refs = [f(i) for i in range(p.async_tasks)]
        out = b.get_list(refs)
        rate = p.async_tasks / (time.perf_counter() - t0)
        if out[-1] != p.async_tasks - 1:
            raise AssertionError("wrong result")
        return rate

    runs = repeat(once, p)
    return {**summary("async_tasks_per_s", runs), "async_tasks_runs": runs}


def w_actor_sync(b: Backend, p: Params) -> dict[str, Any]:
    """4a. Calls on one actor, one at a time."""
    actor = b.actor(Echo)
    echo = b.method(actor, "echo")
    machine = MACHINE[0]
    try:
        b.get_list([echo(i) for i in range(20)])  # warm-up

        def once() -> float | tuple[float, float]:
            t0 = time.perf_counter()
            for i in range(p.actor_sync):
                if b.get(echo(i)) != i:
                    raise AssertionError("wrong result")
            rate = p.actor_sync / (time.perf_counter() - t0)
            return rate if machine is None else paired(rate, machine.echo_rate(p.actor_sync), higher=True)

        runs = repeat(once, p)
    finally:
        b.kill_actor(actor)
        if machine is not None:
            machine.close_echoes()  # its last use
    return sync_rates("actor_sync", runs)


def w_actor_async(b: Backend, p: Params) -> dict[str, Any]:
    """4b. Calls on one actor, all submitted before any get."""
    actor = b.actor(Echo)
    echo = b.method(actor, "echo")
    try:
        b.get_list([echo(i) for i in range(20)])  # warm-up

        def once() -> float:
            t0 = time.perf_counter()
            out = b.get_list([echo(i) for i in range(p.actor_async)])
            rate = p.actor_async / (time.perf_counter() - t0)
            if out[-1] != p.actor_async - 1:
                raise AssertionError("wrong result")
            return rate

        runs = repeat(once, p)
    finally:
        b.kill_actor(actor)
    return {**summary("actor_async_per_s", runs), "actor_async_runs": runs}


def w_array(b: Backend, p: Params) -> dict[str, Any]:
    """5. put / get / a task reading a large numpy array through its ref."""
    import numpy as np

    arr = np.random.default_rng(0).random(p.array_mb * MB // 8)
    expected = float(arr.sum())
    total = b.task(array_sum)
    b.get_list([total(np.ones(10)) for _ in range(4)])  # warm-up: function and numpy in the workers

    def once() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        ref = b.put(arr)
        t1 = time.perf_counter()
        back = b.get_put(ref)
        t2 = time.perf_counter()
        if back.shape != arr.shape:
            raise AssertionError("wrong shape")
        del back
        t3 = time.perf_counter()
        s = b.get(total(ref))
        t4 = time.perf_counter()
        if abs(s - expected) > 1e-6 * abs(expected):
            raise AssertionError(f"wrong sum {s} != {expected}")
        del ref
        gc.collect()
        return t1 - t0, t2 - t1, t4 - t3

    runs = repeat(once, p)
    return {
        **summary("put_s", [r[0] for r in runs]),
        **summary("get_s", [r[1] for r in runs]),
        **summary("task_ref_s", [r[2] for r in runs]),
        "array_runs": runs,
    }


def w_monte_carlo(b: Backend, p: Params) -> dict[str, Any]:
    """6. Monte Carlo pi: the same chunks as parallel tasks and serially in the driver."""
    return monte_carlo(b, p, p.mc_tasks, p.mc_samples, "mc")


def w_monte_carlo_small(b: Backend, p: Params) -> dict[str, Any]:
    """6. The same work in many small chunks: the framework's cost per task shows."""
    return monte_carlo(b, p, p.mc_small_tasks, p.mc_small_samples, "mc_small")


def monte_carlo(b: Backend, p: Params, tasks: int, samples: int, key: str) -> dict[str, Any]:
    chunk = b.task(mc_pi_chunk)
    b.get_list([chunk(s, 1000) for s in range(4)])  # warm-up
    mc_pi_chunk(0, 1000)

    def parallel() -> float:
        t0 = time.perf_counter()
        hits = sum(b.get_list([chunk(s, samples) for s in range(tasks)]))
        dt = time.perf_counter() - t0
        pi = 4 * hits / (tasks * samples)
        if abs(pi - 3.14159) > 0.01:
            raise AssertionError(f"pi = {pi}")
        return dt

    def serial() -> float:
        t0 = time.perf_counter()
        for s in range(tasks):
            mc_pi_chunk(s, samples)
        return time.perf_counter() - t0

    machine = MACHINE[0]
    turn = [0]

    def pair() -> tuple[float, ...]:
        if machine is None:
            return parallel(), serial()
        # With Pool's run on the same chunks, which of the two goes first alternating.
        turn[0] += 1
        if turn[0] % 2:
            par, ser = parallel(), serial()
            pool = machine.pool_parallel(tasks, samples)
        else:
            pool = machine.pool_parallel(tasks, samples)
            ser = serial()
            par = parallel()
        # The share of Pool's speed-up (pool / par) is a figure of its own: `repeat` goes on
        # until it settles too (see `paired`).
        return par, ser, pool, pool / par

    # A few pairs, parallel and serial interleaved (the machine's speed drifts).
    if machine is not None:
        machine.open_pool()
    try:
        pairs = repeat(pair, dataclasses.replace(p, reps=max(3, p.reps)))
    finally:
        if machine is not None:
            machine.close_pool()
    par, ser = [x[0] for x in pairs], [x[1] for x in pairs]
    speedup = [ss / pp for pp, ss in zip(par, ser, strict=True)]
    out = {
        **summary(f"{key}_parallel_s", par),
        **summary(f"{key}_serial_s", ser),
        **summary(f"{key}_speedup", speedup),
        f"{key}_parallel_runs": par,
        f"{key}_serial_runs": ser,
    }
    if machine is not None:
        pool = [x[2] for x in pairs]
        pool_speedup = [ss / pl for ss, pl in zip(ser, pool, strict=True)]
        out.update(with_machine(f"{key}_parallel_s", par, pool, higher=False))
        out.update(with_machine(f"{key}_speedup", speedup, pool_speedup, higher=True))
        out[f"{key}_pool_runs"] = pool
    return out


def cluster_processes() -> list[psutil.Process]:
    """This driver and every process it started, recursively (the whole local cluster)."""
    me = psutil.Process()
    return [me, *(c for c in me.children(recursive=True) if c.pid not in HELPER_PIDS)]


def w_memory(b: Backend, p: Params) -> dict[str, Any]:
    """7. Sum of PSS over the driver and the cluster's processes, idle, after the workloads."""
    gc.collect()
    time.sleep(p.idle_wait_s)
    pss = rss = uss = 0
    names: dict[str, int] = {}
    for proc in cluster_processes():
        try:
            info = proc.memory_full_info()
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss += info.pss
        rss += info.rss
        uss += info.uss
        names[name] = names.get(name, 0) + 1
    return {
        "memory_pss_mb": pss / MB,
        "memory_rss_mb": rss / MB,
        "memory_uss_mb": uss / MB,
        "processes": sum(names.values()),
        "process_names": names,
    }


class PeakRss:
    """Samples this process's RSS in a background thread; `peak` is the highest seen."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def w_queued(b: Backend, p: Params) -> dict[str, Any]:
    """8. Submit `queued` no-op tasks, then get them all; time and the driver's RSS growth."""
    f = b.task(noop)
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    with PeakRss() as sampler:
        t0 = time.perf_counter()
        refs = [f(i) for i in range(p.queued)]
        submitted = time.perf_counter() - t0
        try:
            out = b.get_list(refs, timeout=max(1.0, p.queued_limit_s - submitted))
        except TimeoutError:
            out = None
        elapsed = time.perf_counter() - t0
        end = proc.memory_info().rss
    peak = max(sampler.peak, end)
    found = {
        "queued_submit_s": submitted,
        "queued_peak_rss_mb": (peak - before) / MB,
        "queued_end_rss_mb": (end - before) / MB,
    }
    if out is None:  # the tasks still queued go with the cluster at shutdown
        b.abandon(refs)
        say(f"{b.name}: {p.queued:,} queued tasks did not finish within {p.queued_limit_s:.0f} s")
        return dict(found, queued_s_above=elapsed)
    if len(out) != p.queued or out[-1] != p.queued - 1:
        raise AssertionError("wrong results")
    return dict(found, queued_s=elapsed, queued_per_s=p.queued / elapsed)


WORKLOADS: list[tuple[str, Callable[[Backend, Params], dict[str, Any]]]] = [
    ("sync tasks", w_sync_tasks),
    ("async tasks", w_async_tasks),
    ("sync actor calls", w_actor_sync),
    ("async actor calls", w_actor_async),
    ("large array", w_array),
    ("monte carlo pi", w_monte_carlo),
    ("monte carlo pi, small chunks", w_monte_carlo_small),
    ("cluster memory", w_memory),
    ("queued tasks", w_queued),
]


# --------------------------------------------------------------------------- child process


def run_child(framework: str, params: Params, out_path: Path, startup_only: bool) -> None:
    """Measure one framework in this (fresh) process; results go to `out_path` as JSON."""
    import numpy  # noqa: F401  -- imported before timing: not part of the framework's import

    results: dict[str, Any] = {"errors": {}, "notes": {}}

    def save() -> None:
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, out_path)

    b = make_backend(framework)
    t0 = time.perf_counter()
    b.import_framework()
    results["import_s"] = time.perf_counter() - t0
    results["version"] = b.version()
    results["module_path"] = sys.modules[FRAMEWORK_MODULE[framework]].__file__
    save()
    if framework == "runtime" and not startup_only:
        MACHINE[0] = Machine()  # the machine's figures beside runtime's (its share of them)
    t0 = time.perf_counter()
    b.start()
    try:
        f = b.task(noop)
        try:
            if b.get_list([f(1)], timeout=START_TIMEOUT_S) != [1]:
                raise AssertionError("wrong result")
        except Exception as e:
            results["errors"]["start"] = f"first task: {type(e).__name__}: {e}"
            raise
        results["start_s"] = time.perf_counter() - t0
        say(
            f"{framework}: import {results['import_s']:.2f} s, "
            f"start -> first result {results['start_s']:.2f} s"
        )
        save()
        for name, workload in [] if startup_only else WORKLOADS:
            if workload is w_queued and not params.queued:
                say(f"{framework}: {name}: skipped")
                continue
            t0 = time.perf_counter()
            try:
                found = workload(b, params)
            except Exception as e:  # record it and go on with the next workload
                traceback.print_exc()
                results["errors"][name] = f"{type(e).__name__}: {e}"
                say(f"{framework}: {name}: ERROR {type(e).__name__}: {e}")
            else:
                results.update(found)
                shown = ", ".join(
                    f"{k}={v:.4g}"
                    for k, v in found.items()
                    if isinstance(v, float) and not k.endswith(("_min", "_max", "_iqr"))
                )
                say(f"{framework}: {name} ({time.perf_counter() - t0:.1f} s): {shown}")
            for note in NOTES:
                results["notes"].setdefault(name, []).append(note)
                say(f"{framework}: {name}: NOTE {note}")
            NOTES.clear()
            save()
    finally:
        if MACHINE[0] is not None:
            MACHINE[0].close()
            MACHINE[0] = None
        t0 = time.perf_counter()
        try:
            b.shutdown()
        except Exception as e:
            results["errors"]["shutdown"] = f"{type(e).__name__}: {e}"
            raise
        else:
            results["shutdown_s"] = time.perf_counter() - t0
        finally:
            save()


# --------------------------------------------------------------------------- parent process


def machine_info() -> dict[str, Any]:
    """CPU, RAM, OS, Python and package versions of this machine."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = {}
    for dist in VERSIONS_OF:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": model,
        "ram_gb": psutil.virtual_memory().total / 1024**3,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "runtime_commit": commit,
    }


def installed(framework: str) -> bool:
    if framework == "runtime":
        return (ROOT / "runtime" / "__init__.py").is_file()
    return importlib.util.find_spec(FRAMEWORK_MODULE[framework]) is not None


def become_subreaper() -> bool:
    """Orphans of our children get re-parented to us (Linux), so leaked processes are seen."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap() -> None:
    """Collect exit statuses of re-parented orphans that have died."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def live_children() -> list[psutil.Process]:
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def terminate(procs: list[psutil.Process]) -> None:
    """SIGTERM these processes (by pid), then SIGKILL the ones still alive after 5 s."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    reap()


def run_subprocess(
    framework: str, params: Params, startup_only: bool, timeout: float, verbose: bool
) -> tuple[dict[str, Any], list[str]]:
    """Run one ``--child`` process; return its results and the problems seen (crash, timeout, leaks)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nbc-bench-") as tmp:
        out_path = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            framework,
            "--params",
            json.dumps(dataclasses.asdict(params)),
            "--out",
            str(out_path),
        ]
        if startup_only:
            cmd.append("--startup-only")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log: list[str] = []
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
            cwd=tmp,
        )
        assert proc.stdout is not None

        def pump() -> None:
            for line in proc.stdout:
                if line.startswith(PREFIX):
                    print("  " + line[len(PREFIX) :], end="", flush=True)
                else:
                    log.append(line)
                    if verbose:
                        print("    | " + line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            problems.append(f"timed out after {timeout:.0f} s: killed")
            terminate([psutil.Process(proc.pid), *live_children()])
            proc.wait()
        if proc.returncode != 0 and not problems:
            problems.append(f"exited with status {proc.returncode}")
        # The cluster's processes must go away with the driver; allow them a few seconds.
        deadline = time.monotonic() + 10
        while live_children() and time.monotonic() < deadline:
            reap()
            time.sleep(0.2)
        leftover = live_children()
        if leftover:
            names = ", ".join(f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in leftover)
            problems.append(
                f"{len(leftover)} process(es) still running 10 s after the driver "
                f"exited (terminated now): {names}"
            )
            terminate(leftover)
        reap()
        reader.join(5)
        if problems and not verbose:
            print("  last lines of the child's output:")
            for line in log[-25:]:
                print("    | " + line, end="")
        results = json.loads(out_path.read_text()) if out_path.exists() else {"errors": {}}
    return results, problems


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    workload: str  # its name in WORKLOADS (or "start"): shows "error" when that failed
    label: str
    better: str | None  # "lower", "higher" or None (no ratio)
    scale: float = 1.0  # displayed value = value * scale
    integer: bool = False


def rows_for(p: Params) -> list[Row]:
    return [
        Row("import_s", "start", "import (s)", "lower"),
        Row("start_s", "start", "1. start -> first result (s)", "lower"),
        Row("sync_tasks_per_s", "sync tasks", f"2. {p.sync_tasks:,} sync tasks (tasks/s)", "higher"),
        Row("async_tasks_per_s", "async tasks", f"3. {p.async_tasks:,} async tasks (tasks/s)", "higher"),
        Row(
            "actor_sync_per_s",
            "sync actor calls",
            f"4. {p.actor_sync:,} sync actor calls (calls/s)",
            "higher",
        ),
        Row(
            "actor_async_per_s",
            "async actor calls",
            f"4. {p.actor_async:,} async actor calls (calls/s)",
            "higher",
        ),
        Row("put_s", "large array", f"5. put {p.array_mb} MB array (ms)", "lower", 1000),
        Row("get_s", "large array", f"5. get {p.array_mb} MB array (ms)", "lower", 1000),
        Row("task_ref_s", "large array", "5. task reading it via ref (ms)", "lower", 1000),
        Row("mc_parallel_s", "monte carlo pi", f"6. MC pi {p.mc_tasks} tasks, parallel (ms)", "lower", 1000),
        Row("mc_serial_s", "monte carlo pi", "6. MC pi same chunks, serial (ms)", None, 1000),
        Row("mc_speedup", "monte carlo pi", "6. MC pi speed-up (x)", "higher"),
        Row(
            "mc_small_parallel_s",
            "monte carlo pi, small chunks",
            f"6. MC pi {p.mc_small_tasks} tasks, parallel (ms)",
            "lower",
            1000,
        ),
        Row("mc_small_speedup", "monte carlo pi, small chunks", "6. MC pi speed-up (x)", "higher"),
        Row("memory_pss_mb", "cluster memory", "7. cluster memory, PSS (MB)", "lower"),
        Row("processes", "cluster memory", "7. processes (driver + cluster)", None, integer=True),
        Row("queued_s", "queued tasks", f"8. {p.queued:,} queued tasks (s)", "lower"),
        Row("queued_peak_rss_mb", "queued tasks", "8. driver peak RSS increase (MB)", "lower"),
        Row("queued_end_rss_mb", "queued tasks", "8. driver RSS increase at end (MB)", "lower"),
        Row("shutdown_s", "shutdown", "shutdown (s)", "lower"),
    ]


def cell_value(res: dict[str, Any], key: str) -> tuple[float | None, str]:
    """A result and its qualifier: "" (measured) or ">" (a lower bound: gave up after that long)."""
    v = res.get(key)
    if isinstance(v, (int, float)):
        return float(v), ""
    v = res.get(key + "_above")
    if isinstance(v, (int, float)):
        return float(v), ">"
    return None, ""


def fmt(value: float | None, bound: str = "") -> str:
    if value is None:
        return "n/a"
    v = abs(value)
    if v >= 100:
        text = f"{value:,.0f}"
    elif v >= 10:
        text = f"{value:.1f}"
    elif v >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{bound}{text}"


def swing(res: dict[str, Any], row: Row) -> str:
    """ " (min-max)" of a figure measured more than once, in the row's unit; "" otherwise."""
    lo, hi, n = res.get(f"{row.key}_min"), res.get(f"{row.key}_max"), res.get(f"{row.key}_n", 0)
    if n < 2 or lo is None or hi is None:
        return ""
    return f" ({fmt(lo * row.scale)}-{fmt(hi * row.scale)})"


def ratio(row: Row, ours: tuple[float | None, str], theirs: tuple[float | None, str]) -> str:
    """Speed-up of runtime over the other framework (> 1: runtime better), as text."""
    (a, a_bound), (b, b_bound) = ours, theirs
    if row.better is None or a is None or b is None or a <= 0 or b <= 0 or (a_bound and b_bound):
        return ""
    if row.better == "lower":  # a lower bound on the other's time is a lower bound on the ratio
        r, bound = b / a, (">" if b_bound else "<" if a_bound else "")
    else:
        r, bound = a / b, ("<" if b_bound else ">" if a_bound else "")
    return f"{bound}{r:.2f}x"


def share(row: Row, ours: tuple[float | None, str], ceiling: tuple[float | None, str]) -> str:
    """Runtime's share of what the machine itself allows (1.0: at the ceiling), as text."""
    (a, a_bound), (c, _) = ours, ceiling
    if row.better is None or a is None or c is None or a <= 0 or c <= 0 or a_bound:
        return ""
    return f"{(c / a if row.better == 'lower' else a / c):.0%}"


def table(results: dict[str, dict[str, Any]], p: Params, ceiling: dict[str, Any] | None = None) -> str:
    """The results as a plain-text table: rows = workloads, columns = frameworks and ratios, and
    (with `ceiling`) the machine's own figure and runtime's share of it."""
    fws = list(results)
    others = [fw for fw in fws if fw != "runtime"] if "runtime" in fws else []
    header = ["workload", *fws] + [f"runtime vs {DISPLAY[fw]}" for fw in others]
    if ceiling is not None:
        header += ["machine", "runtime's share"]
    lines = [header]
    for row in rows_for(p):
        vals = {fw: cell_value(results[fw], row.key) for fw in fws}
        failed = any(row.workload in results[fw].get("errors", {}) for fw in fws)
        if all(v is None for v, _ in vals.values()) and not failed:
            continue
        cells = [row.label]
        for fw in fws:
            v, bound = vals[fw]
            if v is None and row.workload in results[fw].get("errors", {}):
                cells.append("error")
            elif row.integer and v is not None:
                cells.append(f"{bound}{v:.0f}")
            else:
                cells.append(fmt(v * row.scale if v is not None else None, bound) + swing(results[fw], row))
        cells += [ratio(row, vals["runtime"], vals[fw]) for fw in others]
        if ceiling is not None:
            c = cell_value(ceiling, row.key)
            paired = results.get("runtime", {}).get(f"{row.key}_share")
            if paired is not None:  # measured beside runtime's own (Machine): that pair's share
                cells.append(fmt(results["runtime"][f"{row.key}_machine"] * row.scale) + "*")
                cells.append(f"{paired:.0%}")
            else:
                cells.append(fmt(c[0] * row.scale, c[1]) if c[0] is not None else "")
                cells.append(share(row, vals["runtime"], c) if "runtime" in vals else "")
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    out = []
    for n, cells in enumerate(lines):
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def print_machine(info: dict[str, Any]) -> None:
    v = info["versions"]
    print(
        f"Machine: {info['cpu_count']} CPUs ({info['cpu_usable']} usable), {info['cpu_model']}, "
        f"{info['ram_gb']:.1f} GB RAM, {info['platform']}"
    )
    print(
        f"Python {info['python']}; runtime (nbcluster) {v['nbcluster']} @ {info['runtime_commit']}, "
        f"ray {v['ray']}, dask {v['dask']}, distributed {v['distributed']}, numpy {v['numpy']}, "
        f"pyzmq {v['pyzmq']}, cloudpickle {v['cloudpickle']}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only",
        default=",".join(FRAMEWORKS),
        help="comma-separated frameworks to run (default: runtime,ray,dask)",
    )
    ap.add_argument("--quick", action="store_true", help="smaller counts, fewer repetitions")
    ap.add_argument("--json", metavar="PATH", help="write every number to this JSON file")
    ap.add_argument("--verbose", action="store_true", help="show the children's own output")
    ap.add_argument(
        "--runtime-rev",
        metavar="REV",
        help="benchmark runtime/ as of this git revision (e.g. HEAD) instead of the working tree",
    )
    ap.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the suite (or, with the hidden ``--child``, one framework's part of it)."""
    args = parse_args(argv)
    if args.child:
        run_child(args.child, Params(**json.loads(args.params)), Path(args.out), args.startup_only)
        return 0

    chosen = [fw.strip().lower() for fw in args.only.split(",") if fw.strip()]
    unknown = sorted(set(chosen) - set(FRAMEWORKS))
    if unknown:
        print(f"unknown framework(s) {', '.join(unknown)}; choose from {', '.join(FRAMEWORKS)}")
        return 2
    base = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="nbc-bench-rt-") as export:
        if args.runtime_rev:
            try:
                export_runtime(args.runtime_rev, Path(export))
            except (OSError, subprocess.SubprocessError, tarfile.TarError) as e:
                print(f"cannot export runtime/ at {args.runtime_rev!r}: {e}")
                return 2
            os.environ[RUNTIME_ROOT_ENV] = export
        return run_suite(args, chosen, base)


def measure_ceiling(p: Params) -> dict[str, Any] | None:
    """The machine's own figures for the workloads (benchmarks/ceiling.py); None if it failed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ceiling

    try:
        return ceiling.measure(p, mc_pi_chunk, p.array_mb)
    except Exception as e:  # the frameworks' table is still worth printing
        traceback.print_exc()
        print(f"  the machine's ceiling could not be measured: {type(e).__name__}: {e}")
        return None


def export_runtime(rev: str, dest: Path) -> None:
    """Extract ``runtime/`` as of git revision `rev` into `dest`."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "runtime"], capture_output=True, check=True, timeout=60
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def run_suite(args: argparse.Namespace, chosen: list[str], base: Params) -> int:
    """Run each chosen framework in its own subprocesses, then print (and save) the results."""
    info = machine_info()
    if args.runtime_rev:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", args.runtime_rev],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        info["runtime_commit"] = f"{rev} ({args.runtime_rev}, exported; not the working tree)"
    print_machine(info)
    print(f"Mode: {'quick' if args.quick else 'full'}; 2 CPUs / 2 worker processes per framework\n")
    become_subreaper()

    results: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for fw in (f for f in FRAMEWORKS if f in chosen):
        if not installed(fw):
            skipped[fw] = f"{FRAMEWORK_MODULE[fw]} is not importable"
            print(f"== {fw}: skipped ({skipped[fw]})\n")
            continue
        params = base
        if args.quick and fw != "runtime":
            params = dataclasses.replace(base, queued=0)  # 100k tasks: runtime only under --quick
        timeout = 240.0 if args.quick else 600.0
        print(f"== {fw}")
        t0 = time.perf_counter()
        res, probs = run_subprocess(fw, params, False, timeout, args.verbose)
        samples = {key: [res.get(f"{key}_s")] for key in ("start", "import", "shutdown")}
        for _ in range(params.startup_samples - 1):
            extra, more = run_subprocess(fw, params, True, 120.0, args.verbose)
            for key, runs in samples.items():
                runs.append(extra.get(f"{key}_s"))
            probs += more
        for key, runs in samples.items():
            runs = [r for r in runs if r is not None]
            res[f"{key}_runs"] = runs
            if runs:
                res.update(summary(f"{key}_s", runs))
        results[fw], problems[fw] = res, probs
        for prob in probs:
            print(f"  PROBLEM: {prob}")
        print(f"  ({time.perf_counter() - t0:.0f} s)\n")

    print("== machine (its own ceiling: bare echo processes, memcpy, multiprocessing.Pool)")
    t0 = time.perf_counter()
    ceiling = measure_ceiling(base)
    print(f"  ({time.perf_counter() - t0:.0f} s)\n")
    elapsed = time.perf_counter() - started
    if results:
        print(table(results, base, ceiling))
        print(
            "\nratio > 1: runtime is better (times, memory: other/runtime; rates, speed-up: "
            "runtime/other). Medians of repetitions, (min-max) beside them: a workload runs "
            f"at least {base.min_reps} times, then until its interquartile range is within "
            f"{base.spread:.0%} of its median, at most {base.reps} times or {base.budget_s:.0f} s; "
            "start and import over "
            f"{base.startup_samples} fresh process(es). machine: the same workload with nothing but "
            "two echo processes (pickle + HMAC-SHA256 + a Unix socket each way), a memcpy, or "
            "multiprocessing.Pool(2); runtime's share of it: 100% = as fast as this machine allows "
            "(see benchmarks/ceiling.py). *: measured in runtime's process, each repetition paired "
            "with one of runtime's (the same minutes); the share is the median of the pairs' shares."
        )
    for fw, res in results.items():
        for name, err in res.get("errors", {}).items():
            print(f"{fw}: {name} failed: {err}")
        for name, notes in res.get("notes", {}).items():
            for note in notes:
                print(f"{fw}: {name}: {note}")
        for prob in problems.get(fw, []):
            print(f"{fw}: {prob}")
    for fw, why in skipped.items():
        print(f"skipped {fw}: {why}")
    print(f"total time {elapsed:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "mode": "quick" if args.quick else "full",
                    "params": dataclasses.asdict(base),
                    "results": results,
                    "ceiling": ceiling,
                    "problems": problems,
                    "skipped": skipped,
                    "elapsed_s": elapsed,
                },
                indent=1,
            )
        )
        print(f"wrote {args.json}")
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
