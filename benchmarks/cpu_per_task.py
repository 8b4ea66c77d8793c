"""CPU time per task, the driver's and the worker's apart: what a busy machine does not distort.

::

    driver (this process) ── N x get(f.remote(i)) ──▶ one worker (num_cpus=1)
    measured: wall time, this process's CPU time (all its threads: getrusage),
              the worker's CPU time (psutil), each divided by N
    then the same N submitted at once and fetched together (async), and N calls
    of one actor's method submitted at once and fetched together (actor)

Wall-clock rates swing with whatever else runs on the machine; CPU time per
task moves much less, so it is the figure to compare two versions with on a
loaded machine (issue 12: the driver's own cost per task, the workers' time
taken out). Run: ``python benchmarks/cpu_per_task.py [N] [--root DIR]``;
``--root`` benchmarks another checkout's ``runtime/``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=3000, help="tasks per measurement")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="checkout to import")
    args = ap.parse_args(argv)
    sys.path.insert(0, args.root)
    import psutil

    import runtime as ray

    ray.init(num_cpus=1)

    @ray.remote
    def f(x: int) -> int:
        return x

    @ray.remote
    def pid() -> int:
        return os.getpid()

    @ray.remote
    class Echo:
        def m(self, x: int) -> int:
            return x

        def pid(self) -> int:
            return os.getpid()

    worker = psutil.Process(ray.get(pid.remote()))
    ray.get([f.remote(i) for i in range(300)])  # warm: the function and the lease are there
    echo = Echo.remote()
    actor = psutil.Process(ray.get(echo.pid.remote()))
    ray.get([echo.m.remote(i) for i in range(300)])
    n = args.n

    def measure(label: str, run, worker=worker) -> None:
        w0, c0, t0 = sum(worker.cpu_times()[:2]), cpu_self(), time.perf_counter()
        run()
        dt, c1, w1 = time.perf_counter() - t0, cpu_self(), sum(worker.cpu_times()[:2])
        print(
            f"{label:6s} wall {dt / n * 1e6:6.0f} us/task   driver CPU {(c1 - c0) / n * 1e6:5.0f} us   "
            f"worker CPU {(w1 - w0) / n * 1e6:5.0f} us"
        )

    measure("sync", lambda: [ray.get(f.remote(i)) for i in range(n)])
    measure("async", lambda: ray.get([f.remote(i) for i in range(n)]))
    measure("actor", lambda: ray.get([echo.m.remote(i) for i in range(n)]), actor)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
