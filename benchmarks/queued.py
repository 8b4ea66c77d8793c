"""Scale of one driver: N no-op tasks submitted at once, then all their values fetched.

::

    parent ── one fresh child per framework (``--child FW``) ──▶ driver: init(num_cpus=2)
        refs = [noop.remote(i) for i in range(N)]      submit time
        wait(refs, num_returns=N, timeout=limit)       (a slow framework stops here: its rate
        values = get(refs), every one checked          and a labelled extrapolation)
        sampler thread, every 10 ms: the driver's RSS ─▶ peak; every 0.5 s: the RSS of every
            process the driver started (the cluster) ─▶ peak; getrusage's ru_maxrss at the end

Defaults: runtime 1,000,000 tasks, Ray 100,000 (Ray needs minutes for that on
2 cores; a million would take it most of an hour), 600 s limit each. Run from
the repository root::

    python benchmarks/queued.py                          # runtime 1M, Ray 100k
    python benchmarks/queued.py --runtime 200000 --only runtime
    python benchmarks/queued.py --json out.json

The driver's figures are increases over its RSS just before the first
submission (the framework imported, its cluster started and warm). Any
process of a cluster still running 10 s after its driver exited is reported
and terminated (the parent is a child subreaper, as in bench.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  -- the backends and the process hygiene are bench.py's

MB = 1024 * 1024


class Sampler:
    """Peak RSS of this process (every `fast` s) and of the processes it started (every `slow` s)."""

    def __init__(self, fast: float = 0.01, slow: float = 0.5) -> None:
        self.me = psutil.Process()
        self.fast, self.slow = fast, slow
        self.peak = self.me.memory_info().rss
        self.cluster_peak = self.cluster_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cluster_rss(self) -> int:
        total = 0
        for proc in self.me.children(recursive=True):
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return total

    def _run(self) -> None:
        last = 0.0
        while not self._stop.wait(self.fast):
            self.peak = max(self.peak, self.me.memory_info().rss)
            now = time.monotonic()
            if now - last >= self.slow:
                last = now
                self.cluster_peak = max(self.cluster_peak, self.cluster_rss())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(backend: bench.Backend, n: int, limit: float) -> dict[str, Any]:
    """Submit `n` no-op tasks at once, then fetch them all (or stop after `limit` seconds)."""
    f = backend.task(bench.noop)
    backend.get_list([f(i) for i in range(200)])  # warm: the function registered, workers up
    gc.collect()
    me = psutil.Process()
    before = me.memory_info().rss
    with Sampler() as sampler:
        cluster_before = sampler.cluster_peak
        t0 = time.perf_counter()
        refs = [f(i) for i in range(n)]
        submitted = time.perf_counter() - t0
        after_submit = me.memory_info().rss
        ready = ready_within(backend, refs, max(1.0, limit - submitted))
        if ready == n:
            values = backend.get_list(refs)
        elapsed = time.perf_counter() - t0
        end = me.memory_info().rss
    out: dict[str, Any] = {
        "tasks": n,
        "submit_s": submitted,
        "done": ready,
        "driver_rss_before_mb": before / MB,
        "driver_submit_mb": (after_submit - before) / MB,
        "driver_peak_mb": (max(sampler.peak, end) - before) / MB,
        "driver_end_mb": (end - before) / MB,
        "driver_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cluster_rss_before_mb": cluster_before / MB,
        "cluster_peak_mb": sampler.cluster_peak / MB,
        "bytes_per_task_submitted": (after_submit - before) / n,
    }
    if ready < n:
        out.update(stopped_after_s=elapsed, per_s=ready / elapsed)
        return out
    if len(values) != n or any(v != i for i, v in enumerate(values)):
        raise AssertionError("wrong results")
    out.update(total_s=elapsed, per_s=n / elapsed)
    return out


def ready_within(backend: bench.Backend, refs: list, timeout: float) -> int:
    """How many of `refs` are done within `timeout` seconds (all of them: `len(refs)`)."""
    if isinstance(backend, bench.DaskBackend):
        done, _ = backend.distributed.wait(refs, timeout=timeout, return_when="ALL_COMPLETED")
        return len(done)
    ready, _ = backend.mod.wait(refs, num_returns=len(refs), timeout=timeout)
    return len(ready)


def run_child(framework: str, n: int, limit: float, out_path: Path) -> None:
    backend = bench.make_backend(framework)
    backend.import_framework()
    backend.start()
    result: dict[str, Any] = {"version": backend.version()}
    try:
        result.update(measure(backend, n, limit))
    except Exception as e:  # reported by the parent
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        out_path.write_text(json.dumps(result))
        t0 = time.perf_counter()
        backend.shutdown()
        result["shutdown_s"] = time.perf_counter() - t0
        out_path.write_text(json.dumps(result))


def run(framework: str, n: int, limit: float, verbose: bool) -> tuple[dict[str, Any], list[str]]:
    """One fresh child; its results, and the problems seen (crash, hang, processes left)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nbc-queued-") as tmp:
        out_path = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", framework, "-n", str(n), "--limit", str(limit)]
        cmd += ["--out", str(out_path)]
        proc = subprocess.Popen(
            cmd,
            stdout=None if verbose else subprocess.DEVNULL,
            stderr=None if verbose else subprocess.DEVNULL,
            start_new_session=True,
            cwd=tmp,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        try:
            proc.wait(limit + 300)
        except subprocess.TimeoutExpired:
            problems.append("the child hung: killed")
            bench.terminate([psutil.Process(proc.pid), *bench.live_children()])
            proc.wait()
        deadline = time.monotonic() + 10
        while bench.live_children() and time.monotonic() < deadline:
            bench.reap()
            time.sleep(0.2)
        leftover = bench.live_children()
        if leftover:
            problems.append(f"{len(leftover)} process(es) still running 10 s after the driver exited")
            bench.terminate(leftover)
        result = json.loads(out_path.read_text()) if out_path.exists() else {}
    if proc.returncode:
        problems.append(f"exited with status {proc.returncode}")
    if "error" in result:
        problems.append(result["error"])
    return result, problems


def describe(fw: str, r: dict[str, Any], extrapolate_to: int) -> list[str]:
    name = bench.DISPLAY[fw]
    lines = [f"{name} {r.get('version', '?')}: {r.get('tasks', 0):,} tasks"]
    if "per_s" not in r:
        return lines + ["  no figures"]
    if "total_s" in r:
        lines.append(
            f"  all done in {r['total_s']:.1f} s ({r['per_s']:,.0f} tasks/s), submit {r['submit_s']:.1f} s"
        )
    else:
        lines.append(
            f"  stopped after {r['stopped_after_s']:.0f} s with {r['done']:,} done ({r['per_s']:,.0f} tasks/s), "
            f"submit {r['submit_s']:.1f} s"
        )
    if extrapolate_to > r["tasks"]:
        lines.append(
            f"  {extrapolate_to:,} at that rate: ~{extrapolate_to / r['per_s']:,.0f} s "
            "(extrapolated linearly, not measured)"
        )
    lines.append(
        f"  driver RSS {r['driver_rss_before_mb']:.0f} MB before; +{r['driver_submit_mb']:.0f} MB after submit "
        f"({r['bytes_per_task_submitted']:,.0f} B/task), peak +{r['driver_peak_mb']:.0f} MB, "
        f"end +{r['driver_end_mb']:.0f} MB; ru_maxrss {r['driver_maxrss_mb']:.0f} MB"
    )
    lines.append(
        f"  cluster processes' RSS: {r['cluster_rss_before_mb']:.0f} MB before, peak {r['cluster_peak_mb']:.0f} MB"
    )
    if "shutdown_s" in r:
        lines.append(f"  shutdown {r['shutdown_s']:.1f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", type=int, default=1_000_000, help="tasks for runtime")
    ap.add_argument("--ray", type=int, default=100_000, help="tasks for Ray")
    ap.add_argument("--dask", type=int, default=100_000, help="tasks for Dask (with --only dask)")
    ap.add_argument("--only", default="runtime,ray", help="frameworks, comma-separated")
    ap.add_argument("--limit", type=float, default=600.0, help="seconds each framework may take")
    ap.add_argument("--json", metavar="PATH", help="write every figure to this file")
    ap.add_argument("--verbose", action="store_true", help="show the children's output")
    ap.add_argument("--child", choices=bench.FRAMEWORKS, help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(args.child, args.n, args.limit, Path(args.out))
        return 0
    info = bench.machine_info()
    bench.print_machine(info)
    bench.become_subreaper()
    counts = {"runtime": args.runtime, "ray": args.ray, "dask": args.dask}
    chosen = [fw for fw in bench.FRAMEWORKS if fw in args.only.split(",") and bench.installed(fw)]
    results, problems = {}, {}
    for fw in chosen:
        print(f"== {fw}: {counts[fw]:,} tasks (load average {os.getloadavg()[0]:.1f})", flush=True)
        results[fw], problems[fw] = run(fw, counts[fw], args.limit, args.verbose)
        for line in describe(fw, results[fw], max(counts[c] for c in chosen)):
            print(line)
        for prob in problems[fw]:
            print(f"  PROBLEM: {prob}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": info, "results": results, "problems": problems}, indent=1)
        )
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
