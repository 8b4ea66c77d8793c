"""Between nodes: large objects and small tasks across two node daemons on one machine.

Run from the repository root::

    python benchmarks/multinode.py              # full run (~30-60 s)
    python benchmarks/multinode.py --quick      # fewer repetitions (~15-30 s)
    python benchmarks/multinode.py --json out.json
    python benchmarks/multinode.py --curve       # the cluster and the ceiling over CurveZMQ

The script starts, with a private ``NBCLUSTER_DIR`` (a temp dir, so no other
cluster on the machine is touched), a head and its node with the custom
resource ``a`` and a second node daemon that joins it over TCP with ``b``::

    nbcluster start --head --port P --num-cpus 2 --resources '{"a": 1}' [--encryption]
    nbcluster start --address 127.0.0.1:P --num-cpus 2 --resources '{"b": 1}'

A driver (a ``--child`` process of this script) connects with
``init(address="127.0.0.1:P")``, so its node is the head's ("a"); tasks are
placed with ``options(resources={"a": ...})`` (the driver's node) or
``{"b": ...}`` (the other node). Measured, side by side:

1. a 100 MiB float64 array put on the driver's node, read by a task on the
   other node: the first call pulls it (8 MiB CHUNK messages over the nodes'
   ZeroMQ connection), the second uses the pulled copy; transfer = first -
   second;
2. a task on the other node that returns 100 MiB, moved back to the
   driver's node: transfer = that task - the same task on the driver's node;
3. the ceiling, in the same run: the same 100 MiB between two bare pyzmq
   processes over tcp://127.0.0.1 (and over CurveZMQ with ``--curve``: the
   link the cluster uses is the reference), DEALER -> ROUTER (the direction
   CHUNKs travel between nodes): one message, 8 MiB chunks with and without
   ``copy=False``, and 8 MiB chunks framed the way the runtime frames them
   (sent from a mapping, signed with ``protocol.pack_data``, checked with
   ``protocol.unpack``, written to /dev/shm); plus the single-thread cost of
   each step of that framing, in this process;
4. small tasks pinned to the driver's node vs the other node: sync round
   trips (``get(f.remote())`` in a loop) and 2,000 async no-op tasks, next to
   a bare pyzmq echo (a pickled tuple there and back, one at a time) over the
   same link: the ceiling of a cross-node round trip.

Ray is not measured: several Ray nodes on one machine need ``ray start``
with separate ports and object stores per node; this only notes whether Ray
is installed. The cluster is stopped in a ``finally`` block; any process
left with our ``NBCLUSTER_DIR`` in its environment, or any shared-memory
segment of the cluster, is reported (and removed), and the exit status is 1.
No timing is asserted. See benchmarks/README.md, "Between nodes".
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import hashlib
import hmac
import importlib.metadata
import importlib.util
import json
import mmap
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq
from tabulate import tabulate

try:  # the payload digest before the GMAC tag, measured for comparison when installed
    import blake3
except ImportError:
    blake3 = None

from runtime.wire import protocol

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
SIZE = 100 * MiB  # bytes of the array (100 MiB, as bench.py's workload 5)
N_FLOATS = SIZE // 8
CHUNK = 8 * MiB  # runtime/node/gateway.py CHUNK
GB = 1e9  # GB/s are 10^9 bytes per second
SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
GET_TIMEOUT = 120.0  # seconds for one get() in the driver: longer is reported as a hang
PREFIX = "[multinode] "


@dataclasses.dataclass(frozen=True)
class Params:
    reps: int  # fresh objects per transfer measurement (median reported)
    small_reps: int  # repetitions of each small-task measurement
    sync_tasks: int
    async_tasks: int
    ceiling_reps: int
    child_timeout: float  # the driver process is stopped (a hang) after this long


FULL = Params(reps=5, small_reps=3, sync_tasks=1_000, async_tasks=2_000, ceiling_reps=6, child_timeout=600)
QUICK = Params(reps=3, small_reps=2, sync_tasks=300, async_tasks=2_000, ceiling_reps=4, child_timeout=150)


def say(msg: str) -> None:
    print(PREFIX + msg, file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- the ceiling (pyzmq)

MODES = {
    "single": "pyzmq, one 100 MiB message, copy=False",
    "copy": "pyzmq, 8 MiB chunks, copy=True",
    "nocopy": "pyzmq, 8 MiB chunks, copy=False",
    "pwrite": "pyzmq, 8 MiB chunks, copy=False, + pwrite to /dev/shm",
    "framed": "pyzmq, 8 MiB chunks framed by the runtime's protocol.pack_data (MAC), + pwrite",
}
REFERENCE = "nocopy"  # the ceiling the runtime's transfers are compared with
CURVE_MODES = ("nocopy", "framed")  # measured over CurveZMQ too, with --curve
KEY = bytes(range(32))
HEADER = struct.Struct("!8sQQ")  # sender, counter, milliseconds: the size of the runtime's header


def frame_chunk(signer: Any, req: int, offset: int, total: int, data) -> list:
    """One CHUNK exactly as the runtime frames it: runtime/protocol.pack_data (payload frame, HMAC)."""
    from runtime.wire import protocol

    return protocol.pack_data(signer, (protocol.Kind.CHUNK, req, offset, total), data)


def ceiling_sender(address: str, path: str, server_public: bytes | None) -> None:
    """DEALER connected to the receiver: on each request, send 100 MiB as the request says
    (or, for "echo", send back every message until b"end")."""
    # A session of its own, as each node daemon has: with the kernel's autogroup scheduling a
    # session is one scheduling group, so sender and receiver compete for the CPUs with other
    # load on the machine as the two nodes do.
    os.setsid()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if server_public:  # CurveZMQ as the runtime's node DEALERs use it (protocol.curve_client)
        sock.curve_serverkey = server_public
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.connect(address)
    data = np.full(N_FLOATS, 1.5)
    view = memoryview(data).cast("B")
    fd = os.open(path, os.O_RDONLY)  # the "segment" the framed mode sends chunks of
    segment = memoryview(mmap.mmap(fd, SIZE, prot=mmap.PROT_READ))  # as transfer.serve_pull maps it
    from runtime.wire import protocol

    signer = protocol.Signer(KEY)
    sock.send(b"ready")
    while True:
        mode = sock.recv().decode()
        if mode == "stop":
            break
        if mode == "single":
            sock.send(view, copy=False)
            continue
        if mode == "echo":
            while (msg := sock.recv()) != b"end":
                sock.send(msg)
            continue
        for offset in range(0, SIZE, CHUNK):
            if mode == "framed":  # transfer.pump: a view of the mapping, pack_data, copy=False
                chunk = segment[offset : offset + CHUNK]
                sock.send_multipart(frame_chunk(signer, 1, offset, SIZE, chunk), copy=False)
            else:
                sock.send(view[offset : offset + CHUNK], copy=mode == "copy")
    del segment
    os.close(fd)
    sock.close()
    ctx.term()


def receive(router: zmq.Socket, ident: bytes, mode: str, out_path: str, mac: Any) -> float:
    """Ask the sender for 100 MiB in `mode`; seconds until all of it is here (and written)."""
    write = mode in ("pwrite", "framed")
    fd = os.open(out_path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if write else -1
    t0 = time.perf_counter()
    router.send_multipart([ident, mode.encode()])
    got = 0
    while got < SIZE:
        if mode == "framed":  # gateway.read + on_chunk: recv (payload not copied), unpack, pwrite
            parts = router.recv_multipart(copy=False)
            frames = [f.bytes for f in parts[1:-1]] + [parts[-1].buffer]
            batch = protocol.unpack(mac, frames)
            if batch is None:
                raise RuntimeError("bad signature")
            _, _, offset, _, data = batch[0]
            view = memoryview(data)
        elif mode == "copy":
            _, data = router.recv_multipart(copy=True)
            view, offset = memoryview(data), got
        else:
            _, frame = router.recv_multipart(copy=False)
            view, offset = frame.buffer, got
        if write and got == 0:
            os.ftruncate(fd, SIZE)
        got += view.nbytes
        while write and view.nbytes:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    if write:
        os.close(fd)
        os.replace(out_path + ".part", out_path)
    elapsed = time.perf_counter() - t0
    if write:
        os.unlink(out_path)
    return elapsed


def echo(router: zmq.Socket, ident: bytes, count: int) -> float:
    """`count` round trips, one at a time, of a small pickled tuple: seconds for all of them."""
    router.send_multipart([ident, b"echo"])
    t0 = time.perf_counter()
    for i in range(count):
        router.send_multipart([ident, pickle.dumps((9, i, b"x" * 16), 5)])
        _, back = router.recv_multipart()
        pickle.loads(back)
    elapsed = time.perf_counter() - t0
    router.send_multipart([ident, b"end"])
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_ceiling(reps: int, curve: bool, echoes: int) -> dict[str, list[float]]:
    """Seconds per 100 MiB transfer in each mode, `reps` times each (interleaved), over plain
    TCP, or CurveZMQ when `curve` (then only the modes that matter there); "echo": seconds
    per round trip of a small message (`echoes` one at a time)."""
    tag = f"nbc-bench-ceiling-{os.getpid()}"
    src, dst = str(SHM / f"{tag}-src"), str(SHM / f"{tag}-dst")
    with open(src, "wb") as f:
        f.write(np.full(N_FLOATS, 1.5).tobytes())
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    public = None
    if curve:  # as protocol.curve_server
        public, secret = zmq.curve_keypair()
        router.curve_server = True
        router.curve_secretkey, router.curve_publickey = secret, public
    address = f"tcp://127.0.0.1:{free_port()}"
    router.bind(address)
    sender = multiprocessing.get_context("fork").Process(target=ceiling_sender, args=(address, src, public))
    sender.start()
    modes = [m for m in MODES if not curve or m in CURVE_MODES]
    runs: dict[str, list[float]] = {mode: [] for mode in [*modes, "echo"]}
    try:
        if not router.poll(30_000):
            raise RuntimeError("the pyzmq sender process did not connect within 30 s")
        ident, _ = router.recv_multipart()
        mac = protocol.Signer(KEY)  # the receiving side of the framed mode
        for _ in range(2):  # warm-up: the first transfers of a process fault in fresh memory
            for mode in modes:
                receive(router, ident, mode, dst, mac)
        echo(router, ident, 200)
        for _ in range(reps):
            for mode in modes:
                runs[mode].append(receive(router, ident, mode, dst, mac))
            runs["echo"].append(echo(router, ident, echoes) / echoes)
        router.send_multipart([ident, b"stop"])
        sender.join(10)
    finally:
        if sender.is_alive():
            sender.kill()
            sender.join()
        router.close()
        ctx.term()
        for path in (src, dst, dst + ".part"):
            if os.path.exists(path):
                os.unlink(path)
    return {(f"curve_{k}" if curve else k): v for k, v in runs.items()}


def measure_steps(reps: int) -> dict[str, list[float]]:
    """Single-thread cost of each step the runtime takes per 100 MiB, in this process."""
    data = np.full(N_FLOATS, 2.5)
    view = memoryview(data).cast("B")
    path = str(SHM / f"nbc-bench-steps-{os.getpid()}")
    with open(path, "wb") as f:
        f.write(view)
    mac = hmac.new(KEY, digestmod=hashlib.sha256)
    offsets = list(range(0, SIZE, CHUNK))
    chunks = [bytes(view[o : o + CHUNK]) for o in offsets]

    def pread() -> None:
        fd = os.open(path, os.O_RDONLY)
        for o in offsets:
            os.pread(fd, CHUNK, o)
        os.close(fd)

    def copy() -> None:  # what send(copy=True) / recv(copy=True) do: a fresh buffer per chunk
        for c in chunks:
            bytearray(c)

    def sign() -> None:
        for c in chunks:
            h = mac.copy()
            h.update(c)
            h.digest()

    signer = protocol.Signer(KEY)

    header = signer.header()

    def blake3_digest() -> None:  # what protocol.sign_data computed over a payload before
        key = bytes(32)
        for c in chunks:
            blake3.blake3(c, key=key).digest()

    def gmac() -> None:  # what protocol.sign_data computes over a payload now
        for c in chunks:
            signer.payload_tag(header, c)

    def pwrite() -> None:
        fd = os.open(path + ".w", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, SIZE)
        for o, c in zip(offsets, chunks, strict=True):
            os.pwrite(fd, c, o)
        os.close(fd)
        os.unlink(path + ".w")

    steps = {"pread": pread, "copy": copy, "hmac": sign, "pwrite": pwrite, "gmac": gmac}
    if blake3 is not None:
        steps["blake3"] = blake3_digest
    out: dict[str, list[float]] = {name: [] for name in steps}
    try:
        for _ in range(reps):
            for name, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t0)
    finally:
        os.unlink(path)
    return out


# --------------------------------------------------------------------------- the driver (--child)


def where() -> tuple[str, int]:
    import runtime

    return runtime.get_runtime_context().get_node_id(), os.getpid()


def read_array(arr: Any) -> float:
    return float(arr[::1_000_000].sum())


def make_array(n: int, fill: float) -> Any:
    import numpy

    return numpy.full(n, fill)


def noop() -> None:
    return None


def tree_root(pid: int) -> int:
    """The top process of a node's tree (head or node daemon) that `pid` (a worker) belongs to."""
    mine = os.environ.get("NBCLUSTER_DIR")
    proc = psutil.Process(pid)
    while True:
        parent = proc.parent()
        if parent is None or parent.pid == 1:
            return proc.pid
        try:
            if parent.environ().get("NBCLUSTER_DIR") != mine:
                return proc.pid
        except psutil.Error:
            return proc.pid
        proc = parent


def tree_cpu(roots: dict[str, int]) -> dict[str, list[float]]:
    """[user, system] CPU seconds used so far by every process of each node's tree."""
    out = {}
    for label, pid in roots.items():
        user = system = 0.0
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            user, system = user + t.user, system + t.system
        out[label] = [user, system]
    return out


def cpu_delta(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: [a - b for a, b in zip(after[k], before[k], strict=True)] for k in after}


def run_child(address: str, params: Params, out_path: Path) -> None:
    """Connect to the cluster and measure; results are written after every section."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for stacks on a hang
    sys.path.insert(0, str(ROOT))
    import runtime as ray

    res: dict[str, Any] = {"errors": {}}
    roots: dict[str, int] = {}  # "a" / "b" -> pid of the top process of that node's tree

    def save() -> None:
        out_path.write_text(json.dumps(res))

    def section(name: str, fn: Callable[[], None]) -> None:
        say(name)
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:
            res["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
            say(f"{name} failed: {type(e).__name__}: {e}")
        res.setdefault("section_s", {})[name] = time.perf_counter() - t0
        save()

    ray.init(address=address)
    try:
        on = {"a": {"a": 0.01}, "b": {"b": 0.01}}  # fractions: several tasks at once on a node
        f_where = {k: ray.remote(where).options(resources=r) for k, r in on.items()}
        f_read = {k: ray.remote(read_array).options(resources=r) for k, r in on.items()}
        f_make = {k: ray.remote(make_array).options(resources=r) for k, r in on.items()}
        f_noop = {k: ray.remote(noop).options(resources=r) for k, r in on.items()}

        def warm_up() -> None:
            res["driver_node"] = ray.get_runtime_context().get_node_id()
            ran = {
                k: ray.get([f.remote() for _ in range(8)], timeout=GET_TIMEOUT) for k, f in f_where.items()
            }
            res["nodes"] = {k: sorted({node for node, _ in got}) for k, got in ran.items()}
            roots.update({k: tree_root(got[0][1]) for k, got in ran.items()})
            res["tree_roots"] = roots
            for k in on:
                ray.get([f_read[k].remote(np.ones(10)) for _ in range(4)], timeout=GET_TIMEOUT)
                ray.get([f_noop[k].remote() for _ in range(50)], timeout=GET_TIMEOUT)
            ref = ray.put(np.zeros(N_FLOATS))  # one transfer each way, untimed
            ray.get(f_read["b"].remote(ref), timeout=GET_TIMEOUT)
            del ref
            ray.get(f_make["b"].remote(N_FLOATS, 0.0), timeout=GET_TIMEOUT)

        def pull() -> None:  # 1. put on the driver's node, read on the other
            for key in ("put_s", "first_s", "second_s", "same_node_s", "first_cpu"):
                res[key] = []
            for i in range(params.reps):
                arr = np.full(N_FLOATS, float(i + 1))
                expected = float(arr[::1_000_000].sum())
                t0 = time.perf_counter()
                ref = ray.put(arr)
                put_s = time.perf_counter() - t0
                cpu0 = tree_cpu(roots)
                t1 = time.perf_counter()
                first = ray.get(f_read["b"].remote(ref), timeout=GET_TIMEOUT)
                t2 = time.perf_counter()
                res["first_cpu"].append(cpu_delta(cpu0, tree_cpu(roots)))
                t3a = time.perf_counter()
                second = ray.get(f_read["b"].remote(ref), timeout=GET_TIMEOUT)
                t3 = time.perf_counter()
                same = ray.get(f_read["a"].remote(ref), timeout=GET_TIMEOUT)
                t4 = time.perf_counter()
                if not first == second == same == expected:
                    res["errors"].setdefault("wrong values", []).append([first, second, same, expected])
                res["put_s"].append(put_s)
                res["first_s"].append(t2 - t1)
                res["second_s"].append(t3 - t3a)
                res["same_node_s"].append(t4 - t3)
                del ref, arr
                save()

        def move_back() -> None:  # 2. made on the other node, moved to the driver's
            for key in ("return_other_s", "return_same_s", "return_other_cpu", "return_same_cpu"):
                res[key] = []
            for i in range(params.reps):
                for k, key in (("b", "return_other"), ("a", "return_same")):
                    cpu0 = tree_cpu(roots)
                    t0 = time.perf_counter()
                    out = ray.get(f_make[k].remote(N_FLOATS, float(i + 1)), timeout=GET_TIMEOUT)
                    res[f"{key}_s"].append(time.perf_counter() - t0)
                    res[f"{key}_cpu"].append(cpu_delta(cpu0, tree_cpu(roots)))
                    if out.nbytes != SIZE or out[-1] != i + 1:
                        res["errors"].setdefault("wrong values", []).append([k, out.nbytes, float(out[-1])])
                    del out
                save()

        def small_tasks() -> None:  # 4. no-op tasks pinned to either node
            for k in on:
                res[f"sync_{k}"], res[f"async_{k}"] = [], []
            for _ in range(params.small_reps):
                for k in on:
                    t0 = time.perf_counter()
                    for _ in range(params.sync_tasks):
                        ray.get(f_noop[k].remote(), timeout=GET_TIMEOUT)
                    res[f"sync_{k}"].append(params.sync_tasks / (time.perf_counter() - t0))
                    t0 = time.perf_counter()
                    ray.get([f_noop[k].remote() for _ in range(params.async_tasks)], timeout=GET_TIMEOUT)
                    res[f"async_{k}"].append(params.async_tasks / (time.perf_counter() - t0))
                save()

        section("warm-up", warm_up)
        if "warm-up" in res["errors"]:
            return
        section("1. put here, read there", pull)
        section("2. made there, moved here", move_back)
        section("4. small tasks", small_tasks)
    finally:
        save()
        ray.shutdown()


# --------------------------------------------------------------------------- the parent


def nbcluster(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def cluster_processes(nbc_dir: str) -> list[psutil.Process]:
    """Every process (but this one) with our NBCLUSTER_DIR in its environment."""
    out = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get("NBCLUSTER_DIR") == nbc_dir and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.Error, OSError):
            pass
    return out


def run_cluster(params: Params, quick: bool, curve: bool, problems: list[str]) -> dict[str, Any]:
    """Start the two nodes, run the driver, stop everything; the driver's results."""
    nbc_dir = tempfile.mkdtemp(prefix="nbc-multinode-")
    env = dict(os.environ, NBCLUSTER_DIR=nbc_dir, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    env.pop("NBCLUSTER_ADDRESS", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    cluster_ids: set[str] = set()
    res: dict[str, Any] = {}
    try:
        say(f"starting a head on {address} and a second node (NBCLUSTER_DIR={nbc_dir})")
        t0 = time.perf_counter()
        for args in (
            ["start", "--head", "--port", str(port), "--num-cpus", "2", "--resources", '{"a": 1}']
            + (["--encryption"] if curve else []),
            ["start", "--address", address, "--num-cpus", "2", "--resources", '{"b": 1}'],
        ):
            out = nbcluster(env, *args)
            cluster_ids.update(p.name for p in Path(nbc_dir).iterdir() if p.is_dir())
            if out.returncode != 0:
                raise RuntimeError(f"nbcluster {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        res["cluster_start_s"] = time.perf_counter() - t0
        out_path = Path(nbc_dir) / "driver.json"
        log_path = Path(nbc_dir) / "driver.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", address, "--out", str(out_path)]
        cmd += ["--quick"] if quick else []
        with open(log_path, "w") as log:
            driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            try:
                driver.wait(params.child_timeout)
            except subprocess.TimeoutExpired:
                os.kill(driver.pid, signal.SIGUSR1)  # stack dump into the log
                time.sleep(2)
                driver.kill()
                driver.wait()
                problems.append(f"the driver hung: stopped after {params.child_timeout:.0f} s")
        log_text = log_path.read_text()
        sys.stderr.write("".join(f"  {line}\n" for line in log_text.splitlines()))
        if driver.returncode:
            problems.append(f"the driver exited with status {driver.returncode}")
        if out_path.exists():
            res.update(json.loads(out_path.read_text()))
        for name, err in res.get("errors", {}).items():
            problems.append(f"{name}: {err}")
    except Exception as e:
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        if problems:  # `nbcluster stop` removes the cluster's directory: keep its logs for a look
            for cid in cluster_ids:
                if (Path(nbc_dir) / cid / "logs").is_dir():
                    shutil.copytree(Path(nbc_dir) / cid / "logs", Path(nbc_dir) / f"logs-{cid}")
        try:
            out = nbcluster(env, "stop", "--address", address, timeout=60)
            if out.returncode != 0:
                problems.append(f"nbcluster stop failed:\n{out.stdout}{out.stderr}")
        except subprocess.TimeoutExpired:
            problems.append("nbcluster stop did not return within 60 s")
        deadline = time.monotonic() + 15
        while (left := cluster_processes(nbc_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if left:
            problems.append(
                "processes left after nbcluster stop (terminated now): "
                + ", ".join(f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in left)
            )
            for proc in left:
                try:
                    proc.terminate()
                except psutil.Error:
                    pass
            _, alive = psutil.wait_procs(left, timeout=5)
            for proc in alive:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
        segments = [p for cid in cluster_ids for p in SHM.glob(f"nbc-{cid}-*")]
        if segments:
            problems.append(f"{len(segments)} shared-memory segment(s) left (removed now)")
            for p in segments:
                p.unlink(missing_ok=True)
        if problems:
            say(f"kept {nbc_dir} (driver log, cluster logs) for a look")
        else:
            shutil.rmtree(nbc_dir, ignore_errors=True)
    return res


def machine_info() -> dict[str, Any]:
    """benchmarks/bench.py's machine facts, plus what matters between nodes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import machine_info as common

    info = common()
    info.update(
        load_avg=os.getloadavg(),
        libzmq=zmq.zmq_version(),
        ray_importable=importlib.util.find_spec("ray") is not None,
    )
    return info


def fmt_ms(s: float | None) -> str:
    return "–" if s is None else f"{s * 1e3:,.0f}" if s >= 0.1 else f"{s * 1e3:,.1f}"


def fmt_rate(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}"


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}"


def transfer_table(res: dict[str, Any], ceiling: dict[str, list[float]], curve: bool) -> str:
    def med(key: str) -> float | None:
        return median(res.get(key) or [])

    reference = f"curve_{REFERENCE}" if curve else REFERENCE
    ref_s = median(ceiling.get(reference) or [])
    ref = SIZE / ref_s / GB if ref_s else None
    rows = []

    def row(label: str, seconds: float | None, bytes_per: bool = False) -> None:
        rate = SIZE / seconds / GB if bytes_per and seconds and seconds > 0 else None
        ratio = rate / ref if rate and ref else None
        rows.append([label, fmt_ms(seconds), fmt_rate(rate), fmt_ratio(ratio)])

    first, second = med("first_s"), med("second_s")
    other, same = med("return_other_s"), med("return_same_s")
    row("put on the driver's node", med("put_s"))
    row("task on the other node reads it: 1st call (pulls it)", first, True)
    row("task on the other node reads it: 2nd call (pulled copy)", second)
    row("task on the driver's node reads it (no transfer)", med("same_node_s"))
    row("→ pull = 1st - 2nd call", first - second if first and second else None, True)
    row("task on the other node returns 100 MiB (moved back)", other, True)
    row("the same task on the driver's node", same)
    row("→ move = other node - driver's node", other - same if other and same else None, True)
    for mode, label in MODES.items():
        row(label + (" (ceiling)" if mode == reference else ""), median(ceiling.get(mode) or []), True)
    for mode in CURVE_MODES if curve else ():
        key = f"curve_{mode}"
        label = MODES[mode] + ", CurveZMQ" + (" (ceiling)" if key == reference else "")
        row(label, median(ceiling.get(key) or []), True)
    return tabulate(
        rows,
        headers=["100 MiB float64 array", "ms", "GB/s", "× ceiling"],
        tablefmt="github",
        disable_numparse=True,
    )


def small_table(res: dict[str, Any], params: Params, ceiling: dict[str, list[float]], curve: bool) -> str:
    rows = []
    for key, label in (
        ("sync", f"sync round trips/s (`get(f.remote())` × {params.sync_tasks:,})"),
        ("async", f"async no-op tasks/s ({params.async_tasks:,} submitted, then got)"),
    ):
        a, b = median(res.get(f"{key}_a") or []), median(res.get(f"{key}_b") or [])
        rows.append(
            [
                label,
                "–" if a is None else f"{a:,.0f}",
                "–" if b is None else f"{b:,.0f}",
                fmt_ratio(b / a if a and b else None),
            ]
        )
    echo_s = median(ceiling.get("curve_echo" if curve else "echo") or [])
    sync_b = median(res.get("sync_b") or [])
    if echo_s:
        link = "CurveZMQ" if curve else "tcp://127.0.0.1"
        rows.append(
            [f"bare pyzmq echo over {link} (DEALER ⇄ ROUTER, pickled tuple)", "", f"{1 / echo_s:,.0f}", ""]
        )
        rows.append(
            [
                "→ other node's sync round trips / bare echo",
                "",
                fmt_ratio(sync_b * echo_s if sync_b else None),
                "",
            ]
        )
    return tabulate(
        rows,
        headers=["small tasks", "driver's node", "other node", "other / driver's"],
        tablefmt="github",
        disable_numparse=True,
    )


def cpu_table(res: dict[str, Any]) -> str:
    rows = []
    for key, wall, label in (
        ("first_cpu", "first_s", "task on the other node reads it, 1st call (pull)"),
        ("return_other_cpu", "return_other_s", "task on the other node returns it (move)"),
        ("return_same_cpu", "return_same_s", "the same task on the driver's node"),
    ):
        runs = res.get(key) or []
        if not runs:
            continue
        cells = [median([r[node][i] for r in runs]) for node in ("a", "b") for i in (0, 1)]
        rows.append([label, *(fmt_ms(c) for c in cells), fmt_ms(median(res.get(wall) or []))])
    return tabulate(
        rows,
        headers=["CPU ms per 100 MiB", "driver's node user", "sys", "other node user", "sys", "wall ms"],
        tablefmt="github",
        disable_numparse=True,
    )


STEPS = {  # label, times per transfer now (the runtime no longer preads, copies or HMACs payloads)
    "pread": ("os.pread from /dev/shm into new bytes (before: sender)", 0),
    "copy": ("copy into a new buffer: recv with copy=True (before: receiver)", 0),
    "hmac": ("HMAC-SHA256 over the payload (before: sender, receiver)", 0),
    "blake3": ("keyed BLAKE3 digest of the payload (before: sender, receiver)", 0),
    "gmac": ("GMAC tag of the payload, AES-256-GCM (sender, receiver)", 2),
    "pwrite": ("os.pwrite into the /dev/shm segment (receiver)", 1),
}


def steps_table(steps: dict[str, list[float]]) -> str:
    rows = []
    total = 0.0
    for key, (label, times) in STEPS.items():
        s = median(steps.get(key) or [])
        if s is None:
            continue
        total += s * times
        rows.append([label, fmt_ms(s), f"{SIZE / s / GB:.2f}", str(times), fmt_ms(s * times)])
    rows.append(["sum (one core doing all of it)", "", "", "", fmt_ms(total)])
    return tabulate(
        rows,
        headers=["one step over 100 MiB, one thread", "ms", "GB/s", "× per transfer", "ms per transfer"],
        tablefmt="github",
        disable_numparse=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and sync tasks (< ~1 min)")
    ap.add_argument(
        "--curve", action="store_true", help="the cluster and the ceiling over CurveZMQ (as across machines)"
    )
    ap.add_argument("--json", default=None, help="also write every number, raw repetitions included, here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # the driver: HOST:PORT
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = QUICK if args.quick else FULL
    if args.child:
        run_child(args.child, params, Path(args.out))
        return 0

    info = machine_info()
    print(
        f"Machine: {info['cpu_count']} CPUs ({info['cpu_model']}), load average "
        + " ".join(f"{x:.2f}" for x in info["load_avg"])
        + f"; Python {info['python']}, pyzmq {info['versions']['pyzmq']} (libzmq {info['libzmq']}), "
        f"numpy {info['versions']['numpy']}; runtime {info['runtime_commit']}"
    )
    print(
        f"Mode: {'quick' if args.quick else 'full'}; two nodes of 2 CPUs each on one machine, over loopback "
        f"TCP ({'CurveZMQ' if args.curve else 'not encrypted'}); medians of {params.reps} fresh 100 MiB objects, {params.ceiling_reps} "
        f"pyzmq transfers (half before, half after the cluster), {params.small_reps} small-task runs\n",
        flush=True,
    )
    started = time.perf_counter()
    problems: list[str] = []
    # The ceiling is measured half before and half after the cluster, so that other load on the
    # machine is spread over both alike.
    say("pyzmq ceiling (first half)")
    echoes = params.sync_tasks
    ceiling = measure_ceiling((params.ceiling_reps + 1) // 2, False, echoes)
    if args.curve:
        ceiling.update(measure_ceiling((params.ceiling_reps + 1) // 2, True, echoes))
    steps = measure_steps((params.ceiling_reps + 1) // 2)
    res = run_cluster(params, args.quick, args.curve, problems)
    say("pyzmq ceiling (second half)")
    more_ceiling = measure_ceiling(params.ceiling_reps // 2, False, echoes)
    if args.curve:
        more_ceiling.update(measure_ceiling(params.ceiling_reps // 2, True, echoes))
    for samples, more in ((ceiling, more_ceiling), (steps, measure_steps(params.ceiling_reps // 2))):
        for key, runs in more.items():
            samples[key] += runs
    info["load_avg_end"] = os.getloadavg()

    print(transfer_table(res, ceiling, args.curve))
    print()
    print(small_table(res, params, ceiling, args.curve))
    print()
    print(cpu_table(res))
    print()
    print(steps_table(steps))
    print()
    nodes = res.get("nodes", {})
    if res.get("driver_node"):
        print(
            f"Driver's node {res['driver_node']}; tasks needing 'a' ran on {nodes.get('a')}, "
            f"'b' on {nodes.get('b')}. Cluster start (head + node): {res.get('cluster_start_s', 0):.1f} s."
        )
        if (
            nodes.get("a") != [res["driver_node"]]
            or len(nodes.get("b", [])) != 1
            or nodes.get("b") == nodes.get("a")
        ):
            problems.append(f"tasks did not run where expected: {nodes}")
    if info["ray_importable"]:
        print(
            f"Ray {info['versions']['ray']} is installed but not measured: several Ray nodes on one "
            "machine need `ray start` per node with separate ports and object stores."
        )
    print(
        f"Total {time.perf_counter() - started:.0f} s; load average at the end "
        + " ".join(f"{x:.2f}" for x in info["load_avg_end"])
        + "."
    )
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "params": dataclasses.asdict(params),
                    "ceiling_s": ceiling,
                    "steps_s": steps,
                    "cluster": res,
                    "problems": problems,
                },
                indent=1,
            )
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
