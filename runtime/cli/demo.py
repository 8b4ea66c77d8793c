"""``nbcluster demo``: Monte Carlo pi over every core, with a live progress bar.

The classic Ray pattern: tasks sample points and report progress to a
`ProgressActor`; the driver polls the actor and draws a terminal bar.
"""

from __future__ import annotations

import os
import random
import time

from tqdm import tqdm

from .. import api


@api.remote
class ProgressActor:
    """Counts the samples that tasks report."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def report(self, n: int) -> None:
        self.done += n

    def get_progress(self) -> int:
        return self.done


@api.remote
def sample(n: int, progress: ProgressActor, seed: int) -> int:
    """Count the points of `n` random ones that fall in the unit circle."""
    rng = random.Random(seed)
    inside = 0
    step = max(1, n // 20)
    for start in range(0, n, step):
        count = min(step, n - start)
        for _ in range(count):
            x, y = rng.random(), rng.random()
            inside += x * x + y * y <= 1.0
        progress.report.remote(count)
    return inside


def run(tasks: int | None = None, samples: int = 2_000_000) -> int:
    t0 = time.perf_counter()
    api.init()
    started = time.perf_counter() - t0
    cpus = int(api.cluster_resources().get("CPU", 1))
    tasks = tasks or 4 * cpus
    total = tasks * samples
    print(
        f"Local cluster with {cpus} CPUs ready in {started:.2f} s; "
        f"estimating pi from {total:,} random points in {tasks} tasks."
    )
    progress = ProgressActor.remote(total)
    t1 = time.perf_counter()
    refs = [sample.remote(samples, progress, seed) for seed in range(tasks)]
    with tqdm(total=total, unit="pts", unit_scale=True, desc="sampling", dynamic_ncols=True) as bar:
        done = 0
        while done < total:
            ready, _ = api.wait(refs, num_returns=len(refs), timeout=0.1)
            now = api.get(progress.get_progress.remote())
            bar.update(now - done)
            done = now
            if len(ready) == len(refs) and done >= total:
                break
    inside = sum(api.get(refs))
    elapsed = time.perf_counter() - t1
    pi = 4 * inside / total
    print(
        f"pi ≈ {pi:.6f} (error {abs(pi - 3.141592653589793):.1e}) in {elapsed:.2f} s "
        f"on {cpus} CPUs ({total / elapsed / 1e6:.1f} M points/s); "
        f"worker pids: {sorted(set(api.get([_pid.remote() for _ in range(cpus * 2)])))}"
    )
    api.shutdown()
    return 0


@api.remote
def _pid() -> int:
    time.sleep(0.01)
    return os.getpid()
