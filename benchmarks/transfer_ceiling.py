"""The ceiling: bare message round trips between two processes, no runtime at all.

A sync task round trip in the runtime is at least one request/reply pair
between processes (driver -> node -> worker and back), so these numbers
bound what `bench.py` workloads 2-4 can reach on this machine:

* pyzmq DEALER -> ROUTER echo over ipc:// and tcp://127.0.0.1, one message
  in flight at a time, then pipelined with 500 in flight;
* a bare Unix stream socket (socketpair) echo, one at a time and pipelined.

Run: ``python benchmarks/transfer_ceiling.py [--count 20000] [--size 64]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zmq

WINDOW = 500


def zmq_echo_server(address: str) -> None:
    """ROUTER that sends every message back to its sender until it gets b"stop"."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(address)
    while True:
        ident, msg = router.recv_multipart()
        if msg == b"stop":
            break
        router.send_multipart([ident, msg])
    router.close(linger=0)
    ctx.term()


def zmq_round_trips(address: str, count: int, size: int, window: int) -> float:
    """Round trips per second of a DEALER against the echo ROUTER, `window` in flight."""
    server = multiprocessing.get_context("fork").Process(target=zmq_echo_server, args=(address,))
    server.start()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(address)
    msg = b"x" * size
    for _ in range(100):  # warm-up (and wait until the server is up)
        dealer.send(msg)
        dealer.recv()
    t0 = time.perf_counter()
    sent = received = 0
    while sent < min(window, count):
        dealer.send(msg)
        sent += 1
    while received < count:
        dealer.recv()
        received += 1
        if sent < count:
            dealer.send(msg)
            sent += 1
    rate = count / (time.perf_counter() - t0)
    dealer.send(b"stop")
    server.join()
    dealer.close(linger=0)
    ctx.term()
    return rate


def unix_echo_server(sock: socket.socket, peer: socket.socket) -> None:
    """Echo bytes back until the peer closes."""
    peer.close()  # the client's end, inherited through fork: else we would never see EOF
    while True:
        data = sock.recv(65536)
        if not data:
            break
        sock.sendall(data)


def unix_round_trips(count: int, size: int, window: int) -> float:
    """Round trips per second over a Unix stream socketpair, `window` messages in flight."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = multiprocessing.get_context("fork").Process(target=unix_echo_server, args=(theirs, ours))
    server.start()
    theirs.close()
    msg = b"x" * size
    expected = count * size
    t0 = time.perf_counter()
    sent = received = 0
    while sent < min(window, count):
        ours.sendall(msg)
        sent += 1
    while received < expected:
        received += len(ours.recv(65536))
        while sent < count and sent - received // size < window:
            ours.sendall(msg)
            sent += 1
    rate = count / (time.perf_counter() - t0)
    ours.close()
    server.join()
    return rate


def free_tcp_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def report(label: str, measure: Callable[[], float]) -> None:
    rate = measure()
    print(f"{label:<48} {rate:>10,.0f} round trips/s  ({1e6 / rate:7.1f} us each)")


def main() -> None:
    """Measure and print every ceiling."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20_000, help="round trips per measurement")
    ap.add_argument("--size", type=int, default=64, help="message size in bytes")
    args = ap.parse_args()
    n, size = args.count, args.size
    print(f"{n:,} round trips of {size}-byte messages between two processes (pyzmq {zmq.zmq_version()})")
    with tempfile.TemporaryDirectory() as tmp:
        ipc = f"ipc://{Path(tmp) / 'echo.sock'}"
        report("zmq DEALER->ROUTER ipc, one at a time", lambda: zmq_round_trips(ipc, n, size, 1))
        report(
            f"zmq DEALER->ROUTER ipc, {WINDOW} in flight", lambda: zmq_round_trips(ipc, n * 5, size, WINDOW)
        )
    report("zmq DEALER->ROUTER tcp, one at a time", lambda: zmq_round_trips(free_tcp_address(), n, size, 1))
    report(
        f"zmq DEALER->ROUTER tcp, {WINDOW} in flight",
        lambda: zmq_round_trips(free_tcp_address(), n * 5, size, WINDOW),
    )
    report("Unix socket, one at a time", lambda: unix_round_trips(n, size, 1))
    report(f"Unix socket, {WINDOW} in flight", lambda: unix_round_trips(n * 5, size, WINDOW))


if __name__ == "__main__":
    main()
