"""The machine's own ceiling for bench.py's workloads, measured in the same run.

::

    driver ──socketpair──▶ echo process 1 ┐  each message pickled and signed
           ──socketpair──▶ echo process 2 ┘  (HMAC-SHA256), checked and unpickled
           ◀── the argument back ──────────  on the other side: the least any
                                              framework of ours must do per task
    put of the array        = a copy of it into memory mapped already, halves on two threads
    get of the array        = one memcpy of it (numpy.copyto into a fresh array)
    a task reading it       = its sum through a fresh mapping of it in /dev/shm, plus one
                              echo round trip
    Monte Carlo pi          = multiprocessing.Pool(2).map over the same chunks
    start -> first result   = Pool(2) started and its first result back

No framework can beat these on this machine; bench.py prints each
framework's share of them (1.0 = as fast as the machine allows). The rows
have the same keys as the frameworks' results. Run alone:
``python benchmarks/ceiling.py``.
"""

from __future__ import annotations

import hmac
import multiprocessing
import os
import pickle
import selectors
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

KEY = os.urandom(32)
HEADER = struct.Struct("!I")


def pack(obj: Any) -> bytes:
    body = pickle.dumps(obj, protocol=5)
    return HEADER.pack(len(body) + 32) + hmac.new(KEY, body, "sha256").digest() + body


def unpack(frame: bytes) -> Any:
    mac, body = frame[:32], frame[32:]
    if not hmac.compare_digest(mac, hmac.new(KEY, body, "sha256").digest()):
        raise ValueError("bad signature")
    return pickle.loads(body)


class Frames:
    """Length-prefixed frames read from a non-blocking socket."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(bytes(self.buf[4 : 4 + n]))
            del self.buf[: 4 + n]
        return out


RECV = 1 << 20


def recv_some(sock: socket.socket, view: memoryview) -> memoryview:
    """What the socket has, read into a buffer kept for it: ``sock.recv(1 << 20)`` would
    allocate (mmap and munmap) a fresh megabyte per read, three system calls per message
    that no careful echo pays (nor runtime: its `transport.recv_some`)."""
    return view[: sock.recv_into(view)]


def echo_process(sock: socket.socket) -> None:
    """Answer each (id, value) with (id, value), checking and signing each message."""
    frames = Frames()
    view = memoryview(bytearray(RECV))
    while True:
        data = recv_some(sock, view)
        if not data:
            return
        out = b"".join(pack(unpack(f)) for f in frames.feed(data))
        if out:
            sock.sendall(out)


class Echoes:
    """Two echo processes and the driver's side: send without blocking, read what came."""

    def __init__(self, n: int = 2) -> None:
        ctx = multiprocessing.get_context("fork")
        self.socks, self.procs = [], []
        for _ in range(n):
            mine, theirs = socket.socketpair()
            proc = ctx.Process(target=echo_process, args=(theirs,), daemon=True)
            proc.start()
            theirs.close()
            mine.setblocking(False)
            self.socks.append(mine)
            self.procs.append(proc)
        self.frames = [Frames() for _ in self.socks]
        self.view = memoryview(bytearray(RECV))
        self.out = [bytearray() for _ in self.socks]
        self.sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            self.sel.register(s, selectors.EVENT_READ, i)
        self.results: dict[int, Any] = {}
        self.next_id = 0

    def submit(self, value: Any) -> int:
        i = self.next_id
        self.next_id += 1
        w = i % len(self.socks)
        self.out[w] += pack((i, value))
        self._send(w)
        return i

    def _send(self, w: int) -> None:
        out = self.out[w]
        while out:
            try:
                n = self.socks[w].send(out)
            except BlockingIOError:
                self._read(0)  # both buffers full: read what came back first
                continue
            del out[:n]

    def _read(self, timeout: float | None) -> None:
        for key, _ in self.sel.select(timeout):
            w = key.data
            data = recv_some(self.socks[w], self.view)
            for f in self.frames[w].feed(data):
                i, value = unpack(f)
                self.results[i] = value

    def get(self, i: int) -> Any:
        while i not in self.results:
            self._read(None)
        return self.results.pop(i)

    def close(self) -> None:
        for s in self.socks:
            s.close()
        for p in self.procs:
            p.join(5)


def round_trips(echoes: Echoes, n: int) -> None:
    """`n` round trips through the echo, one at a time (the sync rows' ceiling)."""
    for i in range(n):
        if echoes.get(echoes.submit(i)) != i:
            raise AssertionError("wrong echo")


def pool_chunks(pool: Any, mc_pi_chunk: Callable[[int, int], int], tasks: int, samples: int) -> int:
    """The Monte Carlo chunks on `pool`, with Pool's own default chunking; points inside."""
    return sum(pool.starmap(mc_pi_chunk, [(s, samples) for s in range(tasks)]))


def copy_halves(pool: ThreadPoolExecutor, dest: Any, src: Any) -> None:
    """numpy's copy of `src` into `dest` in two halves, the second on `pool`'s thread (numpy lets
    go of the GIL): a store's put into memory mapped already, at the memory's bandwidth."""
    import numpy as np

    half = src.size // 2
    other = pool.submit(np.copyto, dest[half:], src[half:])
    np.copyto(dest[:half], src[:half])
    other.result()


def rate(fn: Callable[[], None], n: int, reps: int, budget_s: float) -> list[float]:
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < reps and (not runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        runs.append(n / (time.perf_counter() - t0))
    return runs


def measure(p: Any, mc_pi_chunk: Callable[[int, int], int], array_mb: int) -> dict[str, Any]:
    """bench.py's rows for the machine itself (`p`: bench.Params)."""
    import statistics

    import numpy as np

    out: dict[str, Any] = {"errors": {}, "notes": {}, "version": "bare Python on this machine"}
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.apply(int, (1,))
        out["start_s"] = time.perf_counter() - t0
        mc_pi_chunk(0, 1000)
        for key, tasks, samples in (
            ("mc", p.mc_tasks, p.mc_samples),
            ("mc_small", p.mc_small_tasks, p.mc_small_samples),
        ):
            par, ser = [], []
            for _ in range(max(3, p.reps)):
                t0 = time.perf_counter()
                pool_chunks(pool, mc_pi_chunk, tasks, samples)
                par.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for s in range(tasks):
                    mc_pi_chunk(s, samples)
                ser.append(time.perf_counter() - t0)
            out.update(
                {
                    f"{key}_parallel_s": statistics.median(par),
                    f"{key}_serial_s": statistics.median(ser),
                    f"{key}_speedup": statistics.median([b / a for a, b in zip(par, ser, strict=True)]),
                    f"{key}_parallel_runs": par,
                    f"{key}_serial_runs": ser,
                }
            )

    echoes = Echoes()
    try:

        def sync(n: int) -> Callable[[], None]:
            return lambda: round_trips(echoes, n)

        def pipelined(n: int) -> Callable[[], None]:
            def once() -> None:
                ids = [echoes.submit(i) for i in range(n)]
                if [echoes.get(i) for i in ids][-1] != n - 1:
                    raise AssertionError("wrong echo")

            return once

        for key, fn, n in (
            ("sync_tasks_per_s", sync, p.sync_tasks),
            ("async_tasks_per_s", pipelined, p.async_tasks),
            ("actor_sync_per_s", sync, p.actor_sync),
            ("actor_async_per_s", pipelined, p.actor_async),
        ):
            runs = rate(fn(n), n, p.reps, p.budget_s)
            out[key] = statistics.median(runs)
            out[key.replace("_per_s", "_runs")] = runs
    finally:
        echoes.close()

    arr = np.random.default_rng(0).random(array_mb * (1 << 20) // 8)
    copies = []
    for _ in range(3):
        t0 = time.perf_counter()
        dst = np.empty_like(arr)
        np.copyto(dst, arr)
        copies.append(time.perf_counter() - t0)
    # A store's put: a copy into memory mapped and touched already, in two halves on two
    # threads (one core's memcpy is short of the memory's bandwidth; Ray's and ours do this).
    with ThreadPoolExecutor(1) as pool:
        into_mapped = []
        for _ in range(max(5, p.min_reps)):
            t0 = time.perf_counter()
            copy_halves(pool, dst, arr)
            into_mapped.append(time.perf_counter() - t0)
    del dst
    sums, mapped = [], []
    for _ in range(max(5, p.min_reps)):
        t0 = time.perf_counter()
        float(arr.sum())
        sums.append(time.perf_counter() - t0)
        mapped.append(sum_mapped(arr))
    out["put_s"] = statistics.median(into_mapped)
    out["get_s"] = statistics.median(copies)
    # A task reading it in place, as a worker must: a fresh read-only mapping of the bytes in
    # /dev/shm (its pages faulted in on first touch), the sum, plus one round trip.
    out["task_ref_s"] = statistics.median(mapped) + 1 / out["sync_tasks_per_s"]
    out["task_ref_runs"] = mapped
    out["array_sum_inplace_s"] = statistics.median(sums)  # the same sum, this process's own array
    out["array_sum_inplace_runs"] = sums
    return out


def sum_mapped(arr: Any) -> float:
    """Seconds to sum `arr` through a fresh read-only mapping of a /dev/shm file holding it."""
    import mmap
    import tempfile

    import numpy as np

    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.NamedTemporaryFile(dir=folder, prefix="nbc-ceiling-") as f:
        os.pwrite(f.fileno(), arr.data, 0)
        t0 = time.perf_counter()
        mm = mmap.mmap(f.fileno(), arr.nbytes, prot=mmap.PROT_READ)
        float(np.frombuffer(mm, dtype=arr.dtype).sum())
        elapsed = time.perf_counter() - t0
        mm.close()
    return elapsed


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench

    for k, v in measure(bench.QUICK, bench.mc_pi_chunk, bench.QUICK.array_mb).items():
        if isinstance(v, float):
            print(f"{k:22s} {v:,.4g}")
