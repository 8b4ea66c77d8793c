"""A large `put` in a loop, as an iterative notebook cell makes them: runtime beside Ray,
and the machine's ceiling, in one run.

::

    one fresh process per framework (runtime, then Ray), ROUNDS rounds of:
        ref = put(array of 100 MB)                      timed
        get(ref) (zero-copy), a task summing it through the ref, then del both
    the machine, in this process: the same bytes written (os.pwrite) into a /dev/shm
    file whose pages exist, and into a new file (the kernel allocates and zeroes its
    pages first); copied into a mapping of that file kept populated (what a store
    writes into memory it has mapped already), on one thread and in two halves on two
    (the ceiling: one core's memcpy is short of the memory's bandwidth)

`bench.py` times a put in the first few rounds, before freed objects' memory is
back; here the median is over the rounds after the first SETTLE seconds (both
frameworks reuse memory by then: Ray its arena, runtime the spare segments of
freed objects, ``runtime/node/spares.py``). Run:
``python benchmarks/put_loop.py [--rounds 40] [--mb 100] [--only runtime,ray]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTLE = 1.5  # seconds of rounds left out of the steady-state median


def loop(framework: str, rounds: int, mb: int) -> dict[str, list[float]]:
    """In a fresh process: the rounds on `framework`; each round's (start, put seconds)."""
    import numpy as np

    if framework == "ray":
        import ray as fw

        fw.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    else:
        sys.path.insert(0, str(ROOT))
        import runtime as fw

        fw.init(num_cpus=2)
    arr = np.random.default_rng(0).random(mb * 2**20 // 8)
    expected = float(arr.sum())

    @fw.remote
    def total(a):
        return float(a.sum())

    fw.get([total.remote(np.ones(10)) for _ in range(4)])  # workers up, numpy imported
    out = []
    t_start = time.perf_counter()
    for _ in range(rounds):
        t0 = time.perf_counter()
        ref = fw.put(arr)
        t1 = time.perf_counter()
        back = fw.get(ref)
        assert back.shape == arr.shape
        del back
        assert abs(fw.get(total.remote(ref)) - expected) <= 1e-6 * abs(expected)
        del ref
        gc.collect()
        out.append((t0 - t_start, t1 - t0))
    fw.shutdown()
    return {"rounds": out}


def machine(rounds: int, mb: int) -> dict[str, float]:
    """The same bytes written into a /dev/shm file: pwrite into one whose pages exist and into a
    new one, and a copy into a mapping of it kept populated, on one thread and on two."""
    import numpy as np

    raw = memoryview(np.random.default_rng(0).random(mb * 2**20 // 8)).cast("B")
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
    path = f"{folder}/put-loop-{os.getpid()}"

    def write(fresh: bool) -> float:
        if fresh and os.path.exists(path):
            os.unlink(path)
        t0 = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.ftruncate(fd, raw.nbytes)
        offset = 0
        while offset < raw.nbytes:
            offset += os.pwrite(fd, raw[offset:], offset)
        os.close(fd)
        return time.perf_counter() - t0

    def copy(dest, threads: int) -> float:
        src = np.frombuffer(raw, np.uint8)
        t0 = time.perf_counter()
        if threads == 1:
            np.copyto(dest, src)
        else:
            copy_halves(pool, dest, src)
        return time.perf_counter() - t0

    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ceiling import copy_halves

    pool = ThreadPoolExecutor(1)
    try:
        write(True)
        existing = [write(False) for _ in range(rounds)]
        fd = os.open(path, os.O_RDWR)
        mapping = mmap.mmap(fd, raw.nbytes, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        dest = np.frombuffer(mapping, np.uint8)
        mapped = {n: [copy(dest, n) for _ in range(rounds)] for n in (1, 2)}
        del dest
        mapping.close()
        os.close(fd)
        fresh = [write(True) for _ in range(rounds)]
    finally:
        pool.shutdown()
        if os.path.exists(path):
            os.unlink(path)
    return {
        "existing": statistics.median(existing),
        "fresh": statistics.median(fresh),
        "mapped": statistics.median(mapped[1]),
        "mapped2": statistics.median(mapped[2]),
    }


def steady(rounds: list[tuple[float, float]]) -> list[float]:
    return [dt for start, dt in rounds if start >= SETTLE] or [dt for _, dt in rounds]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--only", default="runtime,ray")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(loop(args.child, args.rounds, args.mb)))
        return 0
    results = {}
    for fw in args.only.split(","):
        cmd = [sys.executable, __file__, "--child", fw, "--rounds", str(args.rounds), "--mb", str(args.mb)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode:
            print(f"{fw}: failed\n{done.stderr[-2000:]}")
            continue
        results[fw] = json.loads(done.stdout.strip().splitlines()[-1])["rounds"]
    ceiling = machine(args.rounds // 2, args.mb)
    print(
        f"put of {args.mb} MB in a loop, {args.rounds} rounds; ms, median (range) after the first {SETTLE} s"
    )
    for fw, rounds in results.items():
        put = steady(rounds)
        first = [dt for start, dt in rounds if start < SETTLE] or [0.0]
        print(
            f"{fw:8s} {1e3 * statistics.median(put):7.1f} ({1e3 * min(put):.1f}-{1e3 * max(put):.1f})"
            f"   in the first {SETTLE} s: {1e3 * statistics.median(first):.1f}"
        )
    if {"runtime", "ray"} <= set(results):
        ours, theirs = (
            statistics.median(steady(results["runtime"])),
            statistics.median(steady(results["ray"])),
        )
        print(f"runtime vs Ray: {theirs / ours:.2f}x")
    print(
        f"machine: pwrite into existing pages {1e3 * ceiling['existing']:.1f} ms, into a new file "
        f"{1e3 * ceiling['fresh']:.1f} ms; a copy into a kept mapping {1e3 * ceiling['mapped']:.1f} ms, "
        f"in two halves on two threads {1e3 * ceiling['mapped2']:.1f} ms (the ceiling)"
    )
    if "runtime" in results:
        print(
            f"runtime's share of the ceiling: {ceiling['mapped2'] / statistics.median(steady(results['runtime'])):.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
