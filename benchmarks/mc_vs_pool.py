"""Monte Carlo pi on our workers and on `multiprocessing.Pool(2)`, paired in one process: where
the gap between the two goes.

::

    this process: runtime.init(num_cpus=2) and Pool(2), both up the whole run
    N rounds, alternating which goes first:
        the chunks serially here (as bench.py does between its parallel runs)
        ours: get([chunk.remote(s, n) for s in range(tasks)])   each chunk times itself
        the chunks serially here
        Pool: pool.starmap(chunk, ...)                           (its own chunking)
    per run: wall time; the first chunk's start after the call began, and the last worker's
    first chunk's (a worker idle until its first task); each worker's busy
    time (the chunks' own time) and its gaps between chunks; how far apart the workers'
    last chunks end (the tail: one idle, the other still running); the CPU time spent outside
    the chunks meanwhile, all threads (/proc schedstat): this process, our node, head and
    zygote, and the workers' CPU less their chunks' own (time.thread_time)

The CPU outside the chunks is what two versions are best compared by: on 2 cores
all of it is taken from the workers, and it moves much less with the machine
than the wall times do.

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


def timed_chunk(seed: int, n: int) -> tuple[float, float, int, float]:
    """A chunk that says when it ran, where, and its own CPU time: (start, end, pid, cpu)."""
    start, cpu = time.time(), time.thread_time()
    mc_pi_chunk(seed, n)
    return start, time.time(), os.getpid(), time.thread_time() - cpu


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, all its threads (/proc/<pid>/task/*/schedstat, ns)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
    except OSError:
        pass
    return total / 1e9


def cpu_by_role(roles: dict[int, str]) -> dict[str, float]:
    """CPU seconds so far per role (several processes may share one)."""
    out: dict[str, float] = {}
    for pid, role in roles.items():
        out[role] = out.get(role, 0.0) + cpu_seconds(pid)
    return out


def anatomy(run, t0: float) -> dict[str, float]:
    out = run()
    wall = time.time() - t0
    per: dict[int, list[tuple[float, float]]] = {}
    for start, end, pid, _ in out:
        per.setdefault(pid, []).append((start, end))
    busy = gaps = 0.0
    for spans in per.values():
        spans.sort()
        busy += sum(e - s for s, e in spans)
        gaps += sum(spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1))
    return {
        "wall": wall,
        "start": min(s for s, _, _, _ in out) - t0,
        # The last worker's first chunk: a worker that waits for its first task idles meanwhile.
        "last start": max(spans[0][0] for spans in per.values()) - t0,
        "busy per worker": busy / len(per),
        "gaps per worker": gaps / len(per),
        "ends apart": max(s[-1][1] for s in per.values()) - min(s[-1][1] for s in per.values()),
        "chunks' CPU": sum(c for *_, c in out),
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
        daemons = ("nbc-node", "nbc-head", "nbc-zygote")
        roles = {os.getpid(): "driver"}  # one process drives both: its threads, all of them
        for p in psutil.Process().children(recursive=True):
            if p.name() in daemons:
                roles[p.pid] = "our node, head, zygote"
            elif p.name().startswith("nbc"):
                roles[p.pid] = "our workers"
        for p in pool._pool:  # type: ignore[attr-defined]
            roles[p.pid] = "Pool's workers"

        def ours():
            return runtime.get([chunk.remote(s, samples) for s in range(tasks)])

        def theirs():
            return pool.starmap(timed_chunk, [(s, samples) for s in range(tasks)])

        def serial():
            for s in range(tasks):
                mc_pi_chunk(s, samples)

        rows: dict[str, list[dict[str, float]]] = {"ours": [], "Pool": []}
        spent: dict[str, list[dict[str, float]]] = {"ours": [], "Pool": []}
        for i in range(args.rounds):
            order = (("ours", ours), ("Pool", theirs)) if i % 2 else (("Pool", theirs), ("ours", ours))
            for name, run in order:
                serial()
                before = cpu_by_role(roles)
                row = anatomy(run, time.time())
                after = cpu_by_role(roles)
                rows[name].append(row)
                used = {k: after[k] - before[k] for k in after}
                workers = "our workers" if name == "ours" else "Pool's workers"
                spent[name].append(
                    {
                        "driver": used["driver"],
                        "daemons": used["our node, head, zygote"] if name == "ours" else 0.0,
                        "workers outside chunks": used[workers] - row["chunks' CPU"],
                    }
                )
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
    print("CPU outside the chunks per run (all threads; the daemons: our node, head and zygote); medians, ms")
    for name, rs in spent.items():
        total = [sum(r.values()) for r in rs]
        print(
            f"{name:8s}"
            + "".join(f"{k} {1000 * statistics.median(r[k] for r in rs):.2f}, " for k in rs[0])
            + f"in all {1000 * statistics.median(total):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
