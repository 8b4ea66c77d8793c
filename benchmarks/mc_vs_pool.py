"""Monte Carlo pi on our workers and on `multiprocessing.Pool(2)`, paired in one process: where
the gap between the two goes.

::

    this process: runtime.init(num_cpus=2) and Pool(2), both up the whole run
    N rounds, alternating which goes first:
        the chunks serially here (as bench.py does between its parallel runs)
        ours: get([chunk.remote(s, n) for s in range(tasks)])   each chunk times itself
        the chunks serially here
        Pool: pool.starmap(chunk, ...)                           (its own chunking)
    per run: wall time; the first chunk's start after the call began; each worker's busy
    time (the chunks' own time) and its gaps between chunks; the CPU time the driver's
    threads, the node, the head and the zygote used meanwhile (/proc schedstat; our runs)

`bench.py` measures Pool in another process, minutes later, so its figures
carry the machine's drift; here the pair differs by what each does, and the
median of the paired differences is what to compare. Run:
``python benchmarks/mc_vs_pool.py [--tasks 8 --samples 400000] [--rounds 20]``
(``--tasks 64 --samples 50000``: the small-chunk row).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import mc_pi_chunk  # noqa: E402


def timed_chunk(seed: int, n: int) -> tuple[float, float, int]:
    """A chunk that says when it ran and where: (start, end, pid)."""
    start = time.time()
    mc_pi_chunk(seed, n)
    return start, time.time(), os.getpid()


def cpu_seconds(path: str) -> float:
    """A thread's or process's CPU time from /proc/.../schedstat (ns resolution)."""
    try:
        with open(path) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def others_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of this process's threads but the calling one, and of `pids`."""
    me = os.getpid()
    out = {"driver I/O and other threads": 0.0}
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != me:
            out["driver I/O and other threads"] += cpu_seconds(f"/proc/self/task/{tid}/schedstat")
    for name, pid in pids.items():
        out[name] = cpu_seconds(f"/proc/{pid}/schedstat")
    return out


def anatomy(run, t0: float) -> dict[str, float]:
    out = run()
    wall = time.time() - t0
    per: dict[int, list[tuple[float, float]]] = {}
    for start, end, pid in out:
        per.setdefault(pid, []).append((start, end))
    busy = gaps = 0.0
    for spans in per.values():
        spans.sort()
        busy += sum(e - s for s, e in spans)
        gaps += sum(spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1))
    return {
        "wall": wall,
        "start": min(s for s, _, _ in out) - t0,
        "busy per worker": busy / len(per),
        "gaps per worker": gaps / len(per),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--samples", type=int, default=400_000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    import psutil

    import runtime

    tasks, samples = args.tasks, args.samples
    pool = Pool(2)
    runtime.init(num_cpus=2)
    try:
        chunk = runtime.remote(timed_chunk)
        runtime.get([chunk.remote(s, 1000) for s in range(4)])
        pool.starmap(timed_chunk, [(s, 1000) for s in range(4)])
        ours_pids = {
            p.name(): p.pid
            for p in psutil.Process().children(recursive=True)
            if p.name() in ("nbc-node", "nbc-head", "nbc-zygote")
        }

        def ours():
            return runtime.get([chunk.remote(s, samples) for s in range(tasks)])

        def theirs():
            return pool.starmap(timed_chunk, [(s, samples) for s in range(tasks)])

        def serial():
            for s in range(tasks):
                mc_pi_chunk(s, samples)

        rows: dict[str, list[dict[str, float]]] = {"ours": [], "Pool": []}
        spent: dict[str, float] = {}
        for i in range(args.rounds):
            order = (("ours", ours), ("Pool", theirs)) if i % 2 else (("Pool", theirs), ("ours", ours))
            for name, run in order:
                serial()
                before = others_cpu(ours_pids) if name == "ours" else {}
                rows[name].append(anatomy(run, time.time()))
                if name == "ours":
                    after = others_cpu(ours_pids)
                    for k in after:
                        spent[k] = spent.get(k, 0.0) + after[k] - before[k]
    finally:
        runtime.shutdown()
        pool.close()
        pool.join()

    print(f"{tasks} chunks x {samples:,} samples, {args.rounds} rounds; medians, ms")
    keys = list(rows["ours"][0])
    print(f"{'':8s}" + "".join(f"{k:>18s}" for k in keys))
    for name, rs in rows.items():
        print(f"{name:8s}" + "".join(f"{1000 * statistics.median(r[k] for r in rs):18.2f}" for k in keys))
    diffs = [a["wall"] - b["wall"] for a, b in zip(rows["ours"], rows["Pool"], strict=True)]
    print(
        f"ours - Pool, paired: median {1000 * statistics.median(diffs):+.2f} ms, "
        f"ours faster in {sum(d < 0 for d in diffs)}/{len(diffs)}"
    )
    print(
        "CPU per run of ours, besides the workers and the driver's main thread (ms): "
        + ", ".join(f"{k} {1000 * v / args.rounds:.2f}" for k, v in spent.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
