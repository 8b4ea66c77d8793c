"""Ray's ecosystem side by side: joblib, ``multiprocessing.Pool`` and Ray Data on runtime and on Ray.

Run from the repository root::

    python benchmarks/ecosystem.py                   # 1 GB CSV, every installed framework
    python benchmarks/ecosystem.py --quick           # 100 MB CSV
    python benchmarks/ecosystem.py --csv-mb 300 --json out.json

The workloads (the same code for both, ``import runtime as ray`` or ``import ray``):

* joblib:   ``Parallel(n_jobs=2)`` of 1,000 small calls inside ``parallel_backend("ray")``;
* Pool.map: ``Pool(2).map`` over 10,000 items;
* map_batches: ``read_csv(path).map_batches(pandas_fn, batch_format="pandas")`` over a
  CSV of ``--csv-mb`` MB, consumed with ``iter_batches``: rows/s and the peak memory
  (resident set of the benchmark process and every process it started, sampled every
  0.1 s). Plain pandas on one core (``read_csv`` in chunks, the same function) is the
  baseline.

Each framework runs in a fresh child process (``--child``) with 2 CPUs; the parent
prints one table and, with ``--json``, every number.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("runtime", "ray", "pandas")
BATCH = 100_000  # rows per batch: map_batches(batch_size=) and pandas' chunksize alike


def small(x):
    return x * x


def pandas_fn(df):
    df = df[df["pclass"] == 1]
    return df.assign(fare_per_year=df["fare"] / df["age"])


class PeakMemory:
    """The highest total RSS of this process and its descendants, sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        self.baseline = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_csv(path: str, megabytes: int) -> int:
    """A CSV of guests of about `megabytes` MB; its number of rows."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    chunk = 200_000
    rows = 0
    with open(path, "w") as f:
        header = True
        while f.tell() < megabytes * 1_000_000:
            df = pd.DataFrame(
                {
                    "name": [f"guest {i}" for i in range(rows, rows + chunk)],
                    "age": rng.integers(1, 90, chunk),
                    "fare": (rng.random(chunk) * 100).round(2),
                    "pclass": rng.integers(1, 4, chunk),
                }
            )
            df.to_csv(f, header=header, index=False)
            header = False
            rows += chunk
    return rows


def child(framework: str, csv: str, rows: int, out: str) -> None:
    results: dict = {}

    def save() -> None:
        Path(out).write_text(json.dumps(results))

    if framework == "pandas":
        import pandas as pd

        with PeakMemory() as mem:
            start = time.perf_counter()
            kept = sum(len(pandas_fn(df)) for df in pd.read_csv(csv, chunksize=BATCH))
            took = time.perf_counter() - start
        results["map_batches"] = {
            "s": took,
            "rows_per_s": rows / took,
            "peak_mb": mem.peak / 1e6,
            "kept": kept,
        }
        save()
        return
    if framework == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        from ray.util.joblib import register_ray
        from ray.util.multiprocessing import Pool
    else:
        sys.path.insert(0, str(ROOT))
        import runtime as ray

        ray.init(num_cpus=2)
        ray.data.DataContext.get_current().enable_progress_bars = False
        from runtime.util.joblib import register_ray
        from runtime.util.multiprocessing import Pool
    import joblib

    register_ray()
    with joblib.parallel_backend("ray"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(small)(i) for i in range(10))  # warm-up
        start = time.perf_counter()
        out_j = joblib.Parallel(n_jobs=2)(joblib.delayed(small)(i) for i in range(1000))
        took = time.perf_counter() - start
    assert out_j == [i * i for i in range(1000)]
    results["joblib_1000"] = {"s": took, "calls_per_s": 1000 / took}
    save()

    with Pool(2) as pool:
        pool.map(small, range(10))
        start = time.perf_counter()
        out_p = pool.map(small, range(10_000))
        took = time.perf_counter() - start
    assert out_p == [i * i for i in range(10_000)]
    results["pool_map_10000"] = {"s": took, "items_per_s": 10_000 / took}
    save()

    # Warm-up: the workers import pandas and pyarrow once; throughput is measured after.
    ray.data.range(8).map_batches(lambda d: d, batch_format="pandas").take_all()
    with PeakMemory() as mem:
        start = time.perf_counter()
        ds = ray.data.read_csv(csv).map_batches(pandas_fn, batch_format="pandas", batch_size=BATCH)
        kept = sum(len(b) for b in ds.iter_batches(batch_size=None, batch_format="pandas"))
        took = time.perf_counter() - start
    results["map_batches"] = _data_result(took, rows, mem, kept)
    save()
    ray.shutdown()


def _data_result(took: float, rows: int, mem: PeakMemory, kept: int) -> dict:
    return {
        "s": took,
        "rows_per_s": rows / took,
        "peak_mb": mem.peak / 1e6,
        "peak_over_idle_mb": (mem.peak - mem.baseline) / 1e6,  # less what the idle cluster takes
        "kept": kept,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 100 MB CSV instead of 1 GB")
    ap.add_argument("--csv-mb", type=int, default=None, help="size of the CSV in MB (default 1000)")
    ap.add_argument("--only", default=",".join(FRAMEWORKS), help="comma-separated frameworks")
    ap.add_argument("--json", default=None, help="write every number to this file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--csv", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.csv, args.rows, args.out)
        return
    mb = args.csv_mb or (100 if args.quick else 1000)
    wanted = [f for f in args.only.split(",") if f]
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "guests.csv")
        print(f"writing a {mb} MB CSV ...", flush=True)
        rows = make_csv(csv, mb)
        print(f"{rows:,} rows, {os.path.getsize(csv) / 1e6:.0f} MB", flush=True)
        all_results: dict = {"csv_mb": mb, "rows": rows}
        for fw in wanted:
            if fw == "ray" and importlib.util.find_spec("ray") is None:
                print("ray: not installed, skipped")
                continue
            out = os.path.join(tmp, f"{fw}.json")
            print(f"{fw} ...", flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", fw, "--csv", csv, "--rows", str(rows), "--out", out],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if proc.returncode != 0:
                print(f"{fw} failed:\n{proc.stderr[-3000:]}")
            all_results[fw] = json.loads(Path(out).read_text()) if os.path.exists(out) else {}
    _table(all_results, wanted)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=2))


def _table(res: dict, wanted: list[str]) -> None:
    rows = [
        ("joblib 1,000 calls, calls/s", "joblib_1000", "calls_per_s"),
        ("Pool.map 10,000 items, /s", "pool_map_10000", "items_per_s"),
        (f"map_batches {res['csv_mb']} MB CSV, rows/s", "map_batches", "rows_per_s"),
        ("  peak memory, MB", "map_batches", "peak_mb"),
        ("  peak over idle, MB", "map_batches", "peak_over_idle_mb"),
    ]
    fws = [f for f in wanted if f in res]
    print()
    print(f"{'workload':<36}" + "".join(f"{f:>14}" for f in fws) + f"{'runtime vs ray':>16}")
    for label, key, field in rows:
        cells, values = [], {}
        for f in fws:
            v = res[f].get(key, {}).get(field)
            values[f] = v
            cells.append(f"{v:>14,.0f}" if v is not None else f"{'-':>14}")
        ratio = ""
        if values.get("runtime") and values.get("ray"):
            r = values["runtime"] / values["ray"]
            ratio = f"{(1 / r if 'mb' in field else r):>15.2f}x"
        print(f"{label:<36}" + "".join(cells) + f"{ratio:>16}")
    print("\nruntime vs ray > 1: runtime is better (faster, or less memory)")


if __name__ == "__main__":
    main()
