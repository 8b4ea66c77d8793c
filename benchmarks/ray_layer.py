"""The cost of nbcluster's notebook layer on Ray, side by side with plain Ray, in one run.

Run from the repository root (needs ``nbcluster[ray,test]``)::

    python benchmarks/ray_layer.py            # ~2 minutes on 2 cores
    python benchmarks/ray_layer.py --rounds 5 --json out.json

One Ray cluster (2 CPUs, started like ``%cluster start --engine ray`` starts
it) serves two real kernels, driven through jupyter_client like a notebook:

* plain:     ``import ray; ray.init(address)``: Ray's own log printer
* kernel_ext: ``%load_ext kernel_ext; %cluster connect address --engine ray``:
             cell tags on every submission, our log handler, per-cell routing

The kernels take turns (plain, ours, plain, ours, ...) so machine noise hits
both alike; medians are reported. Workloads: sync task round trips
(``ray.get(f.remote())`` one at a time), throughput of 2,000 async no-op
tasks, sync actor calls (each after an untimed warm-up: Ray stops a job's
idle workers beyond one per CPU after a second, so without it the first call
of a turn times a worker start), tasks that each need a new worker
(``max_calls=1``: the worker start, where the job's ``runtime_env`` with our
setup hook costs), and the latency from a ``print`` in a task to the kernel
publishing the line (the IOPub message's timestamp minus the time the task
printed it; same machine, same clock).
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
    def rate(fn, n, warm=20):
        fn(warm)  # untimed: Ray stops idle workers beyond one per CPU after a second (the other
        #           kernel's turn is longer), so the first task of a turn waits for a new worker
        t = time.perf_counter()
        fn(n)
        return n / (time.perf_counter() - t)

    out = {
        "sync task round trips /s": rate(lambda n: [ray.get(noop.remote()) for _ in range(n)], 300),
        "async tasks /s": rate(lambda n: ray.get([noop.remote() for _ in range(n)]), 2000),
        "sync actor calls /s": rate(lambda n: [ray.get(echo.ping.remote()) for _ in range(n)], 300),
        "new worker per task /s": rate(lambda n: [ray.get(fresh.remote()) for _ in range(n)], 5, warm=1),
    }
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    head = start_head(num_cpus=2)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
    kernels: dict[str, Kernel] = {}
    try:
        plain = kernels["plain Ray"] = Kernel(env)
        run(plain, f"import ray\nray.init(address={head.address!r}, logging_level='WARNING')\n{DEFINE}")
        ours = kernels["Ray + kernel_ext"] = Kernel(env)
        run(ours, f"%load_ext kernel_ext\n%cluster connect {head.address} --engine ray --token {head.token}")
        run(ours, DEFINE)
        results: dict[str, dict[str, list[float]]] = {name: {} for name in kernels}
        for _ in range(args.rounds):
            for name, kernel in kernels.items():
                for key, value in measure(kernel).items():
                    results[name].setdefault(key, []).append(value)
                results[name].setdefault("print → cell latency ms", []).extend(
                    1000 * x for x in print_latency(kernel)
                )
    finally:
        for kernel in kernels.values():
            kernel.shutdown()
        head.stop()
    keys = list(next(iter(results.values())))
    names = list(results)
    print(f"{'workload':32} {names[0]:>14} {names[1]:>18} {'ours / plain':>13}")
    for key in keys:
        a, b = (statistics.median(results[n][key]) if results[n].get(key) else float("nan") for n in names)
        print(f"{key:32} {a:14.1f} {b:18.1f} {b / a:13.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
