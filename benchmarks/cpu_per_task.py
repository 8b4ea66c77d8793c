"""CPU time per task, the driver's and the worker's apart: what a busy machine does not distort.

::

    driver (this process) ── N x get(f.remote(i)) ──▶ one worker (num_cpus=1)
    measured: wall time, this process's CPU time and the worker's (all their threads,
              /proc/<pid>/task/*/schedstat: to the ns, where psutil counts 10 ms
              ticks, a tenth of 3,000 async tasks' time), each divided by N
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
import sys
import time
from pathlib import Path


def cpu_s(pid: int) -> float:
    """CPU time of all of a process's threads, in seconds (ns-precise: schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:  # a thread that just ended
            pass
    return total / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=3000, help="tasks per measurement")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="checkout to import")
    args = ap.parse_args(argv)
    sys.path.insert(0, args.root)
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

    worker = ray.get(pid.remote())
    ray.get([f.remote(i) for i in range(300)])  # warm: the function and the lease are there
    echo = Echo.remote()
    actor = ray.get(echo.pid.remote())
    ray.get([echo.m.remote(i) for i in range(300)])
    n = args.n

    me = os.getpid()

    def measure(label: str, run, worker: int = worker) -> None:
        w0, c0, t0 = cpu_s(worker), cpu_s(me), time.perf_counter()
        run()
        dt, c1, w1 = time.perf_counter() - t0, cpu_s(me), cpu_s(worker)
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
