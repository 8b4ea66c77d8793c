"""Two checkouts' CPU per task, paired: each runs its own cluster, blocks alternate.

::

    this process ──stdin "task 2000"──▶ child A: its own cluster, one worker, one actor
                 ──stdin "task 2000"──▶ child B: the same, from another checkout
                 ◀── wall, driver CPU, worker CPU per call (from /proc/<pid>/task/*/schedstat)
    A and B take turns block by block (ABBA...), so both see the same minutes of the
    machine; each launch is a new pair of processes, the order swapped every other one

On this 2-vCPU VM two runs of the same code differ by ±10 % (the machine's
minute-to-minute drift, and where each process's memory happens to land),
so a change of a few percent shows only as the median of paired blocks over
several launches. ``--same-cpu`` pins each child's driver, worker and actor
to CPU 0: the wake-up of a process on the other, idle vCPU (an IPI and a
halted CPU's exit in the VM) then drops out, and what is left is the work
itself, a steadier figure (a bare echo's round trip: ~28 µs on one CPU,
~115 µs across two). Run::

    python benchmarks/versions.py ../main . [--same-cpu] [--launches 6] [--blocks 6] [--n 2000]
        [--kinds task,actor,async,async_actor]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from cpu_per_task import cpu_s  # this folder: run as a script

KINDS = ("task", "actor", "async", "async_actor")
FIGURES = ("wall", "driver", "worker")


def child(root: str, same_cpu: bool) -> None:
    """One checkout's cluster: answer each "KIND N" line with its per-call figures."""
    sys.path.insert(0, root)
    import runtime as ray

    ray.init(num_cpus=1)
    cpu = 0 if same_cpu else -1

    @ray.remote
    def f(x: int) -> int:
        return x

    @ray.remote
    def place(c: int) -> int:
        if c >= 0:
            os.sched_setaffinity(0, {c})
        return os.getpid()

    @ray.remote
    class Echo:
        def m(self, x: int) -> int:
            return x

        def place(self, c: int) -> int:
            if c >= 0:
                os.sched_setaffinity(0, {c})
            return os.getpid()

    worker = ray.get(place.remote(cpu))
    actor = Echo.remote()
    actor_pid = ray.get(actor.place.remote(cpu))
    if same_cpu:
        os.sched_setaffinity(0, {0})
    for i in range(1000):  # warm: leases, function shipped, caches of both sides
        ray.get(f.remote(i))
        ray.get(actor.m.remote(i))
    print("ready", flush=True)
    me = os.getpid()
    for line in sys.stdin:
        kind, n = line.split()
        n = int(n)
        if kind == "quit":
            break
        pid, call = (worker, f.remote) if kind in ("task", "async") else (actor_pid, actor.m.remote)
        w0, d0, t0 = cpu_s(pid), cpu_s(me), time.perf_counter()
        if kind.startswith("async"):
            ray.get([call(i) for i in range(n)])
        else:
            for i in range(n):
                ray.get(call(i))
        t1, d1, w1 = time.perf_counter(), cpu_s(me), cpu_s(pid)
        print(f"{(t1 - t0) / n * 1e6:.2f} {(d1 - d0) / n * 1e6:.2f} {(w1 - w0) / n * 1e6:.2f}", flush=True)
    ray.shutdown()


def launch(roots: tuple[str, str], same_cpu: bool, kinds: list[str], blocks: int, n: int) -> dict:
    """One pair of children; per kind, each child's list of [wall, driver, worker] per block."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", root] + (["--same-cpu"] if same_cpu else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for root in roots
    ]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a child did not start its cluster (see its output above)")
        out: dict[str, tuple[list, list]] = {k: ([], []) for k in kinds}
        for block in range(blocks):
            for kind in kinds:
                for j in (0, 1) if block % 2 == 0 else (1, 0):
                    procs[j].stdin.write(f"{kind} {n}\n")
                    procs[j].stdin.flush()
                    out[kind][j].append([float(x) for x in procs[j].stdout.readline().split()])
        return out
    finally:
        for p in procs:
            try:
                p.stdin.write("quit 0\n")
                p.stdin.flush()
            except OSError:
                pass
            p.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="the checkout to compare against (its folder)")
    ap.add_argument("b", nargs="?", help="the checkout compared")
    ap.add_argument("--same-cpu", action="store_true", help="pin driver, worker and actor to CPU 0")
    ap.add_argument("--launches", type=int, default=6)
    ap.add_argument("--blocks", type=int, default=6, help="blocks per kind and child in a launch")
    ap.add_argument("--n", type=int, default=2000, help="calls per block")
    ap.add_argument("--kinds", default="task,actor", help=f"of {','.join(KINDS)}")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.a, args.same_cpu)
        return 0
    if args.b is None:
        ap.error("two checkouts to compare")
    kinds = args.kinds.split(",")
    ratios = {(k, m): [] for k in kinds for m in range(3)}
    level = {(k, m, j): [] for k in kinds for m in range(3) for j in range(2)}
    for i in range(args.launches):
        swap = i % 2 == 1
        out = launch(
            (args.b, args.a) if swap else (args.a, args.b), args.same_cpu, kinds, args.blocks, args.n
        )
        for kind in kinds:
            a, b = out[kind][::-1] if swap else out[kind]
            for m in range(3):
                ratios[(kind, m)].append(statistics.median(y[m] / x[m] for x, y in zip(a, b, strict=True)))
                level[(kind, m, 0)].append(statistics.median(x[m] for x in a))
                level[(kind, m, 1)].append(statistics.median(y[m] for y in b))
    print(
        f"µs per call, {args.a} -> {args.b} ({'one CPU' if args.same_cpu else 'free'}; "
        f"{args.launches} launches x {args.blocks} blocks x {args.n}); change: mean of the "
        "launches' median paired ratios [min, max]"
    )
    for kind in kinds:
        parts = []
        for m, name in enumerate(FIGURES):
            r = ratios[(kind, m)]
            before, after = statistics.mean(level[(kind, m, 0)]), statistics.mean(level[(kind, m, 1)])
            parts.append(
                f"{name} {before:6.1f} -> {after:6.1f} {(statistics.mean(r) - 1) * 100:+5.1f} % "
                f"[{(min(r) - 1) * 100:+.0f}, {(max(r) - 1) * 100:+.0f}]"
            )
        print(f"{kind:12s} " + " | ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
