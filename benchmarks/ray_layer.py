"""The cost of nbcluster's notebook layer on Ray, side by side with plain Ray, in one run.

Run from the repository root (needs ``nbcluster[ray,test]``)::

    python benchmarks/ray_layer.py            # ~4 minutes on 2 cores
    python benchmarks/ray_layer.py --rounds 5 --json out.json

Two scenarios, each with two real kernels on one Ray cluster of 2 CPUs,
driven through jupyter_client like a notebook:

* the kernel's own cluster: ``%cluster start --engine ray -n 2`` in one
  kernel (its workers get our setup hook from their environment), and a plain
  ``import ray; ray.init(address)`` kernel joining the same cluster;
* a joined cluster, started outside like a user's ``ray start``: the plain
  kernel, and ``%cluster connect address --engine ray`` (our setup hook
  travels in the job's ``runtime_env``).

The kernels take turns (plain, ours, plain, ours, ...) so machine noise hits
both alike; medians are reported. Each workload also reports CPU per task,
of the kernel (``time.process_time``) and of the cluster's processes (raylet,
GCS, workers, agents: psutil over the head's process tree), which a busy
machine disturbs far less than rates. Workloads: sync task round trips
(``ray.get(f.remote())`` one at a time), throughput of 2,000 async no-op
tasks, sync actor calls (each after an untimed warm-up: Ray stops a job's
idle workers beyond one per CPU after a second, so without it the first call
of a turn times a worker start), tasks that each need a new worker
(``max_calls=1``: a worker start), and the latency from a ``print`` in a task
to the kernel publishing the line (the IOPub message's timestamp minus the
time the task printed it; same machine, same clock).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kernel_harness import Kernel  # noqa: E402

from kernel_ext.engines.ray_head import start_head  # noqa: E402

DEFINE = textwrap.dedent("""
    import ray, time, json

    @ray.remote
    def noop(x=None):
        return x

    @ray.remote
    class Echo:
        def ping(self, x=None):
            return x

    @ray.remote(max_calls=1)
    def fresh(x=None):  # its worker exits after each call: every call starts a new worker
        return x

    @ray.remote
    def say(n, gap):
        for i in range(n):
            print(f"LAT {time.time():.6f}", flush=True)
            time.sleep(gap)
        return n

    echo = Echo.remote()
    ray.get([noop.remote() for _ in range(50)] + [echo.ping.remote()])  # warm workers
""")

MEASURE = textwrap.dedent("""
    import psutil

    def cluster_cpu(root=psutil.Process(RAY_ROOT)):
        seen = {}
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                seen[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return seen

    def rate(fn, n, warm=20):
        # Untimed warm-up for 2 s: both kernels' jobs share the cluster's workers, and Ray stops a
        # job's idle workers beyond one per CPU after a second; the job whose turn it is gets its
        # workers back here, not in the timed loop (that worker start is its own row).
        end = time.perf_counter() + (2.0 if warm else 0.0)
        while time.perf_counter() < end:
            fn(warm)
        before = cluster_cpu()
        c = time.process_time()
        t = time.perf_counter()
        fn(n)
        wall = time.perf_counter() - t
        driver = time.process_time() - c
        after = cluster_cpu()
        # CPU of the cluster's processes (raylet, GCS, workers, agents) over the loop; a process
        # that started meanwhile counts from zero, one that exited is missed.
        cluster = sum(v - before.get(pid, 0.0) for pid, v in after.items())
        return n / wall, 1e6 * driver / n, 1e6 * cluster / n

    out = {}
    for key, fn, n, warm in [
        ("sync task round trips", lambda n: [ray.get(noop.remote()) for _ in range(n)], 300, 20),
        ("async tasks", lambda n: ray.get([noop.remote() for _ in range(n)]), 2000, 20),
        ("sync actor calls", lambda n: [ray.get(echo.ping.remote()) for _ in range(n)], 300, 20),
        ("new worker per task", lambda n: [ray.get(fresh.remote()) for _ in range(n)], 5, 0),
    ]:
        per_s, driver_us, cluster_us = rate(fn, n, warm)
        out[f"{key} /s"] = per_s
        out[f"{key}: kernel CPU µs"] = driver_us
        out[f"{key}: cluster CPU µs"] = cluster_us
    print("RESULT", json.dumps(out))
""")


def run(kernel: Kernel, code: str, timeout: float = 600) -> str:
    msg_id = kernel.execute(code, timeout=timeout)
    errs = kernel.errors(msg_id)
    if errs:
        raise RuntimeError("\n".join(errs[0]["traceback"]))
    return msg_id


def measure(kernel: Kernel) -> dict[str, float]:
    text = kernel.stream(run(kernel, MEASURE), "stdout")
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def print_latency(kernel: Kernel, lines: int = 20) -> list[float]:
    """Seconds from each print in a task to the kernel publishing that line (in any cell)."""
    before = {m["header"]["msg_id"] for ms in list(kernel.by_parent.values()) for m in ms}
    run(kernel, f"ray.get(say.remote({lines}, 0.1))")
    found: list[float] = []
    end = time.monotonic() + 30
    while len(found) < lines and time.monotonic() < end:
        found = []
        with kernel.lock:
            msgs = [m for ms in kernel.by_parent.values() for m in ms]
        for m in msgs:
            if m["msg_type"] != "stream" or m["header"]["msg_id"] in before:
                continue
            published = datetime.fromisoformat(str(m["header"]["date"])).timestamp()
            for ln in m["content"]["text"].splitlines():
                if "LAT " in ln:
                    found.append(published - float(ln.split("LAT ")[1].split()[0]))
        time.sleep(0.2)
    return found


def head_of(kernel: Kernel) -> tuple[str, str, int]:
    """Address, token and process of the Ray head a kernel started with ``%cluster start``."""
    text = kernel.stream(
        run(
            kernel,
            "from kernel_ext import engines\nh = engines.current().head\nprint('HEAD', h.address, h.token, h.proc.pid)",
        ),
        "stdout",
    )
    _, address, token, pid = next(ln for ln in text.splitlines() if ln.startswith("HEAD ")).split()
    return address, token, int(pid)


Turn = tuple[Kernel, str, str]  # a kernel, the cell that joins the cluster, the cell that leaves it


def compare(kernels: dict[str, Turn], root: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Turns of each kernel alone on the cluster: it joins, warms up, is measured and leaves.

    Two jobs connected at once share the cluster's workers: Ray stops one job's idle workers
    while the other runs and starts them again in its next turn, and the rates time that churn,
    not the layer. So the kernel whose turn it is has the cluster to itself.
    """
    results: dict[str, dict[str, list[float]]] = {name: {} for name in kernels}
    for _ in range(rounds):
        for name, (kernel, join, leave) in kernels.items():
            run(kernel, f"{join}\nRAY_ROOT = {root}\n{DEFINE}")
            for key, value in measure(kernel).items():
                results[name].setdefault(key, []).append(value)
            results[name].setdefault("print → cell latency ms", []).extend(
                1000 * x for x in print_latency(kernel)
            )
            if leave:
                run(kernel, leave)
    return results


def joined(rounds: int) -> dict[str, dict[str, list[float]]]:
    """A Ray cluster started outside (like a user's ``ray start``): the kernel joins it."""
    head = start_head(num_cpus=2, worker_hook=False)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
    kernels: dict[str, Turn] = {}
    try:
        kernels["plain"] = (
            Kernel(env),
            f"import ray\nray.init(address={head.address!r}, logging_level='WARNING')",
            "ray.shutdown()",
        )
        kernels["ours"] = (
            Kernel(env),
            f"%load_ext kernel_ext\n%cluster connect {head.address} --engine ray --token {head.token}",
            "%cluster disconnect",
        )
        return compare(kernels, head.proc.pid, rounds)
    finally:
        for kernel, _, _ in kernels.values():
            kernel.shutdown()
        head.stop()


def owned(rounds: int) -> dict[str, dict[str, list[float]]]:
    """The kernel's own cluster (``%cluster start --engine ray``); plain Ray joins the same one.

    The owner stays connected (leaving would stop its cluster) and idle in plain's turns.
    """
    kernels: dict[str, Turn] = {}
    try:
        ours = Kernel(dict(os.environ))
        kernels["ours"] = (ours, "", "")
        run(ours, "%load_ext kernel_ext\n%cluster start --engine ray -n 2")
        address, token, pid = head_of(ours)
        plain = Kernel(dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
        kernels = {
            "plain": (
                plain,
                f"import ray\nray.init(address={address!r}, logging_level='WARNING')",
                "ray.shutdown()",
            ),
            **kernels,
        }
        return compare(kernels, pid, rounds)
    finally:
        for kernel, _, _ in kernels.values():
            kernel.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    scenarios = {"kernel's own cluster": owned(args.rounds), "joined cluster": joined(args.rounds)}
    print(f"{'workload':38} " + " ".join(f"{name:>34}" for name in scenarios))
    print(f"{'':38} " + " ".join(f"{'plain':>10} {'ours':>10} {'ours/plain':>12}" for _ in scenarios))
    keys = list(next(iter(scenarios.values()))["plain"])
    for key in keys:
        cells = []
        for results in scenarios.values():
            a, b = (
                statistics.median(results[n][key]) if results[n].get(key) else float("nan")
                for n in ("plain", "ours")
            )
            cells.append(f"{a:10.1f} {b:10.1f} {b / a:12.2f}")
        print(f"{key:38} " + " ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(scenarios, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
