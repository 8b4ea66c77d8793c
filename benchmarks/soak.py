"""Chaos soak: a mixed workload on three nodes while faults arrive at random; count what was lost.

::

    this process (driver) ───── rounds of work ─────▶ head node (2 CPUs) ─┬─ node A (1 CPU)
         │  small tasks, 8 MB results, nested tasks,                       └─ node B (1 CPU)
         │  puts read by tasks, a stateful actor, a progress actor
         │
    injector thread ── every 2-6 s, one of:  kill -9 a worker │ kill -9 the actor's process
                                             kill -9 a whole non-head node (daemon, gateway,
                                             zygote, workers) and start a new one
                                             kill -9 the head process and start it again
                                             (`nbcluster start --head` on its port restores it)
                                             abort a TCP connection between two of the
                                             cluster's processes (`ss -K`), both living on
                 (in every six faults: two worker kills and one of each other kind,
                 in a random order)

Every result is checked against the value computed here. A value is
*correct*, *wrong* (never allowed), *lost* (its `get` raised) or *hung* (its
`get` did not return within --hang-after seconds; never allowed). A loss is
*explained* when its error is one the runtime documents for the fault that
preceded it (README "Failures"): `WorkerCrashedError` after retries ran out,
`ActorDiedError` / `ActorUnavailableError` for calls on a killed actor,
`ObjectLostError` for a value that lived on a killed node. At the end the
cluster is stopped and nothing of it may be left: no process, no
shared-memory segment.

While the head is down the workload goes on (tasks and actor calls do not
need it); the injector measures how long the head was away and how long
until it answered again. Limits it reports rather than hides: the head
machine's node is never killed with its head (a cluster whose head and head
node both die is started afresh, see README "Failures").

Run: ``python benchmarks/soak.py --duration 1800`` (30 minutes) prints a
table and, with ``--json FILE``, writes the counts. Exit status 1 when a
value was wrong, a `get` hung, a loss was unexplained or something leaked.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from runtime import config as cfg  # noqa: E402
from runtime import exceptions  # noqa: E402

EXPLAINED = (
    exceptions.WorkerCrashedError,
    exceptions.ActorDiedError,
    exceptions.ActorUnavailableError,
    exceptions.ObjectLostError,
)


# -- the workload ---------------------------------------------------------------------------
@runtime.remote(max_retries=5)
def square(x: int) -> int:
    return x * x


@runtime.remote(max_retries=5)
def big(seed: int) -> np.ndarray:
    return np.full(1_000_000, float(seed))  # 8 MB: shared memory, moved to its owner


@runtime.remote(max_retries=5)
def outer(x: int) -> int:
    return runtime.get(square.remote(x)) + 1  # a task that submits a task


@runtime.remote(max_retries=5)
def total(a: np.ndarray) -> float:
    return float(a.sum())  # reads a put (pulled by its node when it runs elsewhere)


@runtime.remote(max_restarts=-1, max_task_retries=3)
class Tally:
    """State that a restart loses: each incarnation counts from zero again."""

    def __init__(self) -> None:
        self.n = 0
        self.incarnation = os.getpid()

    def add(self) -> tuple[int, int]:
        self.n += 1
        return self.incarnation, self.n

    def pid(self) -> int:
        return os.getpid()


@runtime.remote(num_cpus=0, max_restarts=-1)
class Progress:
    def __init__(self) -> None:
        self.done = 0

    def update(self, n: int) -> int:
        self.done += n
        return self.done


class Stats:
    def __init__(self) -> None:
        self.submitted = self.correct = self.wrong = self.hung = 0
        self.lost: Counter[str] = Counter()
        self.unexplained: list[str] = []
        self.faults: Counter[str] = Counter()
        self.detect_s: list[float] = []
        self.recover_s: list[float] = []
        self.head_back_s: list[float] = []  # head killed -> started again and answering
        self.actor_incarnations: set[int] = set()
        self.lock = threading.Lock()

    def summary(self) -> dict:
        return {
            "submitted": self.submitted,
            "correct": self.correct,
            "wrong": self.wrong,
            "hung": self.hung,
            "lost": dict(self.lost),
            "unexplained": self.unexplained,
            "faults": dict(self.faults),
            "node_death_detected_s": [round(x, 2) for x in self.detect_s],
            "head_back_s": [round(x, 2) for x in self.head_back_s],
            "node_replaced_s": [round(x, 2) for x in self.recover_s],
            "actor_incarnations": len(self.actor_incarnations),
        }


def check(stats: Stats, refs: list, expected: list, hang_after: float, kind: str) -> None:
    """Get each ref; file it as correct, wrong, lost or hung."""
    for ref, want in zip(refs, expected, strict=True):
        try:
            got = runtime.get(ref, timeout=hang_after)
        except exceptions.GetTimeoutError:
            stats.hung += 1
            stats.unexplained.append(f"{kind}: no value after {hang_after:.0f} s (hung)")
            continue
        except EXPLAINED as e:
            stats.lost[f"{kind}: {type(e).__name__.split('(')[0]}"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - anything else is a finding
            stats.unexplained.append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")
            continue
        ok = want(got) if callable(want) else got == want
        if ok:
            stats.correct += 1
        else:
            stats.wrong += 1
            stats.unexplained.append(f"{kind}: wrong value {str(got)[:80]!r}")


def one_round(stats: Stats, r: int, tally, progress, hang_after: float) -> int:
    """Submit a round, check every value; returns how many values the progress actor was told of."""
    refs, want, kinds = [], [], []

    def add(ref, expected, kind):
        refs.append(ref)
        want.append(expected)
        kinds.append(kind)

    for i in range(16):
        add(square.remote(r * 16 + i), (r * 16 + i) ** 2, "small task")
    for i in range(2):
        seed = r * 2 + i
        add(
            big.remote(seed),
            lambda a, s=seed: a.shape == (1_000_000,) and float(a[0]) == s == float(a[-1]),
            "8 MB result",
        )
    for i in range(2):
        add(outer.remote(r + i), (r + i) ** 2 + 1, "nested task")
    arr = np.arange(500_000, dtype=np.float64) * r
    add(total.remote(runtime.put(arr)), float(arr.sum()), "put read by a task")
    calls = [tally.add.remote() for _ in range(4)]
    progress.update.remote(len(refs))
    stats.submitted += len(refs) + len(calls)
    for ref, expected, kind in zip(refs, want, kinds, strict=True):
        check(stats, [ref], [expected], hang_after, kind)
    # Actor calls from one caller run in order: within one incarnation the counts rise by one.
    seen: list[tuple[int, int]] = []
    for ref in calls:
        before = stats.correct
        check(stats, [ref], [lambda v: isinstance(v, tuple)], hang_after, "actor call")
        if stats.correct > before:
            seen.append(runtime.get(ref))
    for (inc_a, n_a), (inc_b, n_b) in zip(seen, seen[1:], strict=False):
        if inc_a == inc_b and n_b != n_a + 1:
            stats.wrong += 1
            stats.unexplained.append(f"actor call: count {n_a} then {n_b} in one incarnation")
    stats.actor_incarnations.update(inc for inc, _ in seen)
    return len(refs)


# -- the cluster and its faults ----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"nbcluster {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def ours(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.environ().get("NBCLUSTER_DIR") == marker and p.status() != "zombie":
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class Chaos:
    """The cluster under test and the faults injected into it."""

    def __init__(self, stats: Stats, rng: random.Random, marker: str) -> None:
        self.stats, self.rng, self.marker = stats, rng, marker
        self.address = f"127.0.0.1:{free_port()}"
        cli("start", "--head", "--port", self.address.split(":")[1], "--num-cpus", "2")
        self.nodes: dict[str, int] = {}  # node id -> pid of its daemon (the non-head nodes)
        for _ in range(2):
            self.add_node()
        self.stop = threading.Event()
        self.actor_pid = 0

    def add_node(self) -> str:
        before = {p.pid for p in ours(self.marker)}
        out = cli("start", "--address", self.address, "--num-cpus", "1")
        node_id = re.search(r"Node (\w+) joined", out).group(1)
        roots = [
            p for p in ours(self.marker) if p.pid not in before and p.ppid() not in before and p.ppid() == 1
        ]
        self.nodes[node_id] = roots[0].pid if roots else 0
        return node_id

    def workers(self) -> list[psutil.Process]:
        """Workers: the leaves of a node's tree (daemon -> zygote -> workers)."""
        found = []
        for p in ours(self.marker):
            try:
                grandparent = p.parent() and p.parent().parent()
                if not p.children() and grandparent and grandparent.pid in {q.pid for q in ours(self.marker)}:
                    found.append(p)
            except psutil.NoSuchProcess:
                continue
        return found

    def kill_worker(self) -> None:
        victims = [p for p in self.workers() if p.pid != self.actor_pid]
        if victims:
            self.rng.choice(victims).kill()
            self.stats.faults["worker killed"] += 1

    def kill_actor(self) -> None:
        if self.actor_pid and psutil.pid_exists(self.actor_pid):
            psutil.Process(self.actor_pid).kill()
            self.stats.faults["actor process killed"] += 1

    def kill_node(self) -> None:
        if not self.nodes:
            self.add_node()
            return
        node_id = self.rng.choice(sorted(self.nodes))
        pid = self.nodes.pop(node_id)
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        killed = time.monotonic()
        self.stats.faults["node killed (daemon, gateway, workers)"] += 1
        try:
            deadline = killed + 60
            while time.monotonic() < deadline:
                if not any(n["NodeID"] == node_id and n["Alive"] for n in runtime.nodes()):
                    self.stats.detect_s.append(time.monotonic() - killed)
                    break
                time.sleep(0.1)
        finally:  # a replacement joins whatever happened meanwhile
            start = time.monotonic()
            self.add_node()
            self.stats.recover_s.append(time.monotonic() - start)

    def drop_connection(self) -> None:
        """Abort one TCP connection between the cluster's processes (node-head, node-node,
        driver-head), both processes living on: as a flaky network or a restarted switch would."""
        pairs = set()
        for p in [psutil.Process(), *ours(self.marker)]:
            try:
                for c in p.net_connections(kind="tcp"):
                    if c.status == psutil.CONN_ESTABLISHED and c.raddr:
                        pairs.add((c.laddr.ip, c.laddr.port, c.raddr.ip, c.raddr.port))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not pairs:
            return
        lip, lport, rip, rport = self.rng.choice(sorted(pairs))
        done = subprocess.run(
            ["ss", "-K", "src", lip, "sport", "=", str(lport), "dst", rip, "dport", "=", str(rport)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and f"{lport}" in done.stdout:
            self.stats.faults["connection dropped"] += 1
        else:
            self.stats.faults["connection drop not possible here (ss -K needs root)"] += 1

    def kill_head(self) -> None:
        info = cfg.find_cluster(self.address)
        if info is None:
            return
        os.kill(info.head_pid, 9)
        killed = time.monotonic()
        while cfg.pid_alive(info.head_pid):
            time.sleep(0.05)
        self.stats.faults["head killed (and started again)"] += 1
        cli("start", "--head", "--port", self.address.split(":")[1], "--num-cpus", "2")
        runtime.nodes()  # the driver's requests to the head are answered again
        self.stats.head_back_s.append(time.monotonic() - killed)

    def inject(self) -> None:
        deck: list = []  # in every six faults each kind once (workers twice), in a random order
        while not self.stop.wait(self.rng.uniform(2, 6)):
            if not deck:
                deck = [
                    self.kill_worker,
                    self.kill_worker,
                    self.kill_actor,
                    self.kill_node,
                    self.kill_head,
                    self.drop_connection,
                ]
                self.rng.shuffle(deck)
            try:
                deck.pop()()
            except Exception as e:  # noqa: BLE001 - the injector must keep going
                print(f"fault injection failed: {type(e).__name__}: {e}", file=sys.stderr)

    def shutdown(self) -> None:
        runtime.shutdown()
        cli("stop", "--address", self.address)


def describe(p: psutil.Process) -> str:
    """A leftover process as a reader of the report needs it: what it is, who made it, how old."""
    try:
        with p.oneshot():
            cmd = p.name() + ": " + " ".join(p.cmdline())[:160]
            parent = p.ppid()
            age = time.time() - p.create_time()
            status = p.status()
        return f"{p.pid} (parent {parent}, {status}, {age:.0f} s old): {cmd}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"{p.pid} (gone)"


def leaks(marker: str, segments_before: set[str]) -> dict:
    deadline = time.monotonic() + 15
    while True:
        procs = ours(marker)
        segs = sorted(set(map(str, Path(os.environ["NBCLUSTER_SHM_DIR"]).glob("nbc-*"))) - segments_before)
        if (not procs and not segs) or time.monotonic() > deadline:
            return {"processes": [describe(p) for p in procs], "segments": segs}
        time.sleep(0.2)


def settle(progress, hang_after: float) -> None:
    """Wait until the progress actor answers again (after a restart it is a new incarnation)."""
    deadline = time.monotonic() + hang_after
    while True:
        try:
            runtime.get(progress.update.remote(0), timeout=hang_after)
            return
        except EXPLAINED:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=120, help="seconds of workload under faults")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--hang-after", type=float, default=90, help="a get longer than this is a hang")
    ap.add_argument("--json", type=Path, default=None, help="write the counts here")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    marker = tempfile.mkdtemp(prefix="nbc-soak-")
    os.environ["NBCLUSTER_DIR"] = marker
    # The cluster's own shared-memory folder: other clusters' segments are not its leaks.
    shm = Path("/dev/shm" if Path("/dev/shm").is_dir() else marker) / f"nbcsoak-{Path(marker).name}"
    os.environ["NBCLUSTER_SHM_DIR"] = str(shm)
    segments_before: set[str] = set()
    stats = Stats()
    chaos = Chaos(stats, rng, marker)
    t0 = time.monotonic()
    rounds = 0
    try:
        runtime.init(address=chaos.address)
        tally, progress = Tally.remote(), Progress.remote()
        chaos.actor_pid = runtime.get(tally.pid.remote())
        injector = threading.Thread(target=chaos.inject, daemon=True)
        injector.start()
        while time.monotonic() - t0 < args.duration:
            one_round(stats, rounds, tally, progress, args.hang_after)
            rounds += 1
            try:
                chaos.actor_pid = runtime.get(tally.pid.remote(), timeout=args.hang_after)
            except EXPLAINED:
                pass
        chaos.stop.set()
        injector.join()
        # The last fault may have restarted the progress actor (its count starts again at zero)
        # or taken calls in flight with it: once it answers, a quiet round must be counted.
        settle(progress, args.hang_after)
        last_round = one_round(stats, rounds, tally, progress, args.hang_after)
        rounds += 1
        progress_done = runtime.get(progress.update.remote(0), timeout=args.hang_after)
    finally:
        chaos.stop.set()
        chaos.shutdown()
    result = stats.summary()
    result.update(
        seed=seed,
        seconds=round(time.monotonic() - t0, 1),
        rounds=rounds,
        progress_counted=progress_done,
        last_round_values=last_round,
        left_behind=leaks(marker, segments_before),
    )
    shutil.rmtree(shm, ignore_errors=True)
    shutil.rmtree(marker, ignore_errors=True)
    lost = sum(stats.lost.values())
    print(f"chaos soak: {result['seconds']} s, {rounds} rounds, seed {seed}")
    print(
        f"  values: {stats.submitted} submitted, {stats.correct} correct, {stats.wrong} wrong, {lost} lost, {stats.hung} hung"
    )
    for what, n in sorted(stats.lost.items()):
        print(f"    lost, explained: {n} x {what}")
    for what in stats.unexplained:
        print(f"    UNEXPLAINED: {what}")
    print(f"  faults: {dict(stats.faults)}")
    if stats.detect_s:
        print(
            f"  node death detected after {min(stats.detect_s):.1f}-{max(stats.detect_s):.1f} s; "
            f"replacement joined after {min(stats.recover_s):.1f}-{max(stats.recover_s):.1f} s"
        )
    if stats.head_back_s:
        print(
            f"  head killed and back (started again, answering) after "
            f"{min(stats.head_back_s):.1f}-{max(stats.head_back_s):.1f} s"
        )
    print(f"  actor incarnations seen: {len(stats.actor_incarnations)}")
    print(f"  left behind: {result['left_behind']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    bad = stats.wrong or stats.hung or stats.unexplained or any(result["left_behind"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
