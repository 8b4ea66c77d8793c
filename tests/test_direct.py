"""Direct links: a caller's own TCP connection to a worker of another node (runtime/wire/direct.py).

Two node daemons on loopback, started with the CLI as on two machines. Calls
to the other node's workers go straight to them, signed (loopback: not
encrypted) or sealed too (``--encryption``, what other machines get); with
``NBCLUSTER_DIRECT_LINKS=0`` they go through both nodes. Either way the results
are the same. A relay between the two ends shows what the wire carries.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import subprocess
import threading
import time

import numpy as np
import psutil
import pytest
from conftest import ours, segments, wait_for
from test_multinode import Cluster

import runtime
from runtime.wire import direct, protocol


@pytest.fixture
def two_nodes(no_leaks):
    cluster = Cluster(1, {"here": 1})
    try:
        cluster.add_node("b", 2, {"b": 2})
        runtime.init(address=cluster.address)
        yield cluster
    finally:
        cluster.stop()


def worker_ports(marker: str) -> dict[int, int]:
    """The TCP ports workers of this test's cluster listen on: port -> worker pid."""
    ports = {}
    for p in ours(marker):
        try:
            if p.name() != "nbc-worker" and not p.name().startswith("nbc:"):  # an actor: nbc:<class>
                continue
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    ports[c.laddr.port] = p.pid
        except psutil.NoSuchProcess:
            pass
    return ports


def direct_peers(marker: str) -> set[int]:
    """Pids of the workers this process holds a direct link to."""
    ports = worker_ports(marker)
    return {
        ports[c.raddr.port]
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in ports
    }


@runtime.remote(resources={"b": 1})
def on_b(x):
    return x, os.getpid()


@runtime.remote(resources={"b": 1})
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n, os.getpid()


def test_calls_to_another_node_go_straight_to_its_worker(two_nodes, no_leaks):
    results = runtime.get([on_b.remote(i) for i in range(20)], timeout=60)
    assert [x for x, _ in results] == list(range(20))
    counter = Counter.remote()
    assert [runtime.get(counter.add.remote(), timeout=60)[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    _, actor_pid = runtime.get(counter.add.remote(0), timeout=60)
    # The driver holds TCP connections to the very workers that ran the calls: no node between.
    linked = direct_peers(no_leaks)
    assert actor_pid in linked
    assert {pid for _, pid in results} & linked
    # Calls from one caller to an actor keep their order over the direct link.
    refs = [counter.add.remote() for _ in range(200)]
    assert [n for n, _ in runtime.get(refs, timeout=60)] == list(range(6, 206))


def test_without_direct_links_calls_go_through_the_nodes(no_leaks, monkeypatch):
    monkeypatch.setenv("NBCLUSTER_DIRECT_LINKS", "0")
    cluster = Cluster(1, {"here": 1})
    try:
        cluster.add_node("b", 2, {"b": 2})
        runtime.init(address=cluster.address)
        assert [x for x, _ in runtime.get([on_b.remote(i) for i in range(10)], timeout=60)] == list(range(10))
        counter = Counter.remote()
        assert runtime.get(counter.add.remote(), timeout=60)[0] == 1
        assert worker_ports(no_leaks) == {} and direct_peers(no_leaks) == set()
    finally:
        cluster.stop()


def test_large_values_cross_a_direct_link_both_ways(two_nodes, no_leaks):
    data = np.arange(4_000_000, dtype=np.float64)  # 32 MB: in shared memory, pulled by node b
    ref = runtime.put(data)

    @runtime.remote(resources={"b": 1})
    def double(x):
        return x * 2  # 32 MB back: moved to the driver's node

    out = runtime.get([double.remote(ref) for _ in range(3)], timeout=60)
    assert all(np.array_equal(o, data * 2) for o in out)
    counter = Counter.remote()
    assert runtime.get(counter.add.remote(1), timeout=60)[0] == 1
    assert direct_peers(no_leaks)  # those went over direct links
    del out, ref
    # What was moved to the driver's node goes with the refs; nothing waits in transit on b.
    info = runtime.api._state.info
    home = runtime.get_runtime_context().get_node_id()
    wait_for(
        lambda: not [s for s in segments() if f"-{home}-" in s and ".m" in s and info.cluster_id in s],
        10,
        what="the moved results to be freed",
    )


def test_a_stranger_cannot_use_a_workers_port(two_nodes, no_leaks):
    @runtime.remote(resources={"b": 1})
    def me():
        client = runtime.api._client()
        return client.identity, client.io.direct_listener.getsockname()[1]

    worker, port = runtime.get(me.remote(), timeout=60)
    key = bytes.fromhex(runtime.api._state.info.key)

    def attempt(first: bytes, then: bytes = b"") -> bytes:
        """What the worker answers (b"": it closed the connection) to these bytes."""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(first)
            if then:
                s.sendall(then)
            try:
                return s.recv(100)
            except ConnectionResetError:
                return b""

    silent = socket.create_connection(("127.0.0.1", port), timeout=20)  # says nothing at all
    opened = time.monotonic()
    assert attempt(b"GET / HTTP/1.0\r\n\r\n" + b"x" * 100) == b""
    wrong = protocol.Signer(os.urandom(32))
    assert attempt(direct.hello(wrong, os.urandom(16), worker)) == b""
    # Signed with the key, but for another worker.
    other = worker[:1] + b"9" + worker[1:]
    assert attempt(direct.hello(protocol.Signer(key), os.urandom(16), other)) == b""
    # A caller with the key: its hello and first frame are taken, the connection stays open.
    signer = protocol.Signer(key)
    nonce = os.urandom(16)
    hello = direct.hello(signer, nonce, worker)

    def frame(seq: int) -> bytes:
        body = pickle.dumps([], protocol.PROTOCOL)
        sig = signer.sign(body, nonce + direct.TO_WORKER + struct.pack("<Q", seq))
        return struct.pack("<I", 32 + len(body)) + sig + body

    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(hello + frame(1))
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.sendall(frame(3))  # out of step (a frame lost, replayed or reordered): dropped
        s.settimeout(5)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    # The same hello again, on a new connection: a replay.
    assert attempt(hello) == b""
    # The silent one is closed once it had direct.HELLO_WAIT seconds to say who it is.
    with silent:
        assert silent.recv(100) == b""
    assert time.monotonic() - opened >= direct.HELLO_WAIT - 0.5
    # The worker is unharmed and still serves its real callers.
    assert runtime.get(on_b.remote(2), timeout=60)[0] == 2
    assert port in worker_ports(no_leaks)


def test_a_broken_direct_link_loses_nothing(two_nodes, no_leaks):
    @runtime.remote(resources={"b": 1}, max_retries=2)
    def slow(i):
        time.sleep(0.5)
        return i

    counter = Counter.remote()
    assert runtime.get(counter.add.remote(), timeout=60)[0] == 1
    refs = [slow.remote(i) for i in range(6)]
    wait_for(lambda: len(direct_peers(no_leaks)) >= 2, 30, what="direct links to node b's workers")
    ports = worker_ports(no_leaks)
    for c in psutil.Process().net_connections(kind="tcp"):
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in ports:
            done = subprocess.run(
                [
                    "ss",
                    "-K",
                    "src",
                    c.laddr.ip,
                    "sport",
                    "=",
                    str(c.laddr.port),
                    "dst",
                    c.raddr.ip,
                    "dport",
                    "=",
                    str(c.raddr.port),
                ],
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr
    # Tasks in flight run again (they have retries); the actor is reached again, its state kept.
    assert runtime.get(refs, timeout=60) == list(range(6))
    assert runtime.get(counter.add.remote(), timeout=60)[0] == 2
    # The leases of the broken links went back to node b: its CPUs and "b" are free again
    # (but the actor's).
    wait_for(
        lambda: runtime.available_resources().get("b") == 1.0, 20, what="node b's resources to be given back"
    )


# ------------------------------------------------------------------ encrypted clusters


def test_an_encrypted_clusters_calls_go_straight_to_its_workers(no_leaks):
    """CurveZMQ cluster (what machines beyond loopback get): direct links too, sealed."""
    cluster = Cluster(1, {"here": 1}, encryption=True)
    try:
        cluster.add_node("b", 2, {"b": 2})
        runtime.init(address=cluster.address)
        assert runtime.api._state.info.curve_public  # the cluster is encrypted
        results = runtime.get([on_b.remote(i) for i in range(20)], timeout=60)
        assert [x for x, _ in results] == list(range(20))
        counter = Counter.remote()
        refs = [counter.add.remote() for _ in range(200)]
        assert [n for n, _ in runtime.get(refs, timeout=60)] == list(range(1, 201))
        _, actor_pid = runtime.get(counter.add.remote(0), timeout=60)
        linked = direct_peers(no_leaks)
        assert actor_pid in linked and {pid for _, pid in results} & linked
        links = runtime.api._client().connections.workers_by_identity.values()
        assert any(isinstance(link, direct.DirectLink) and link.reader.sealer is not None for link in links)
        # A value in shared memory each way: node b pulls it (over CurveZMQ), not the link.
        data = np.arange(500_000, dtype=np.float64)

        @runtime.remote(resources={"b": 1})
        def double(x):
            return x * 2

        assert np.array_equal(runtime.get(double.remote(runtime.put(data)), timeout=60), data * 2)
    finally:
        cluster.stop()


class Tap:
    """A TCP relay between a caller and a worker's listener that records what the caller sends
    (and can flip one byte of it): what anyone on the path between two machines sees."""

    def __init__(self, target: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.seen = bytearray()
        self.flip_at = -1  # the offset (in what the caller sent) of a byte to flip on the way
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        caller, _ = self.listener.accept()
        worker = socket.create_connection(("127.0.0.1", self.target))
        with caller, worker:
            socks = [caller, worker]
            while True:
                ready, _, _ = select.select(socks, [], [], 10)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is caller:
                        at = self.flip_at - len(self.seen)
                        self.seen += data
                        if 0 <= at < len(data):
                            data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
                        worker.sendall(data)
                    else:
                        caller.sendall(data)


def pump(link: direct.DirectLink, timeout: float = 5.0) -> list:
    """The batches `link` receives within `timeout` (None once the link is closed or broken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        select.select([link.sock], [], [], 0.1)
        try:
            batches = link.recv()
        except BlockingIOError:
            continue
        if batches is None or batches:
            return batches
    return []


def sealed_pair(tap: bool = False):
    """A worker's listener with its key pair, and a caller's link to it (through a Tap)."""
    key = os.urandom(32)
    me = b"w9.sealtest"
    listener = direct.listen("127.0.0.1")
    keys = direct.KeyPair()
    target = listener.getsockname()[1]
    relay = Tap(target) if tap else None
    port = relay.port if relay else target
    caller = direct.DirectLink.connect(
        direct.address_of("127.0.0.1", port, keys.public), protocol.Signer(key), me, "nb"
    )
    listener.setblocking(True)
    listener.settimeout(5)
    sock, _ = listener.accept()
    listener.close()
    sock.setblocking(False)
    worker = direct.accept(sock, protocol.Signer(key), me, keys)
    return caller, worker, relay, key, me, keys


def test_a_sealed_link_shows_nothing_on_the_wire_and_takes_no_tampering():
    secret = "the notebook's secret " * 20
    caller, worker, tap, *_ = sealed_pair(tap=True)
    try:
        caller.send([(protocol.Kind.LOG, b"", None, 1, secret, "t")])
        assert pump(worker) == [[(protocol.Kind.LOG, b"", None, 1, secret, "t")]]
        worker.send([(protocol.Kind.LOG, b"", None, 2, secret.upper(), "t")])
        assert pump(caller)[0][0][4] == secret.upper()
        assert tap.seen.startswith(direct.SEALED)
        assert b"secret" not in tap.seen and b"notebook" not in tap.seen
        # One bit flipped on the way: the frame fails its check, the worker drops the link.
        tap.flip_at = len(tap.seen) + 60
        caller.send([(protocol.Kind.LOG, b"", None, 1, secret, "t")])
        assert pump(worker) is None
    finally:
        caller.close()
        worker.close()


def test_a_worker_of_an_encrypted_cluster_takes_only_sealed_links():
    caller, worker, _, key, me, keys = sealed_pair()
    try:
        # Signed and in step, but sealed under a key the worker does not hold: not opened.
        caller.reader.sealer = direct.KeyPair().sessions(direct.KeyPair().public, os.urandom(16), me)[0]
        caller.send([(protocol.Kind.LOG, b"", None, 1, "x", "t")])
        assert pump(worker) is None
    finally:
        caller.close()
        worker.close()
    # A caller with the cluster's key that does not seal (an old or stripped HELLO): refused.
    listener = direct.listen("127.0.0.1")
    plain = socket.create_connection(listener.getsockname()[:2], timeout=5)
    listener.setblocking(True)
    sock, _ = listener.accept()
    listener.close()
    sock.setblocking(False)
    worker = direct.accept(sock, protocol.Signer(key), me, keys)
    try:
        plain.sendall(direct.hello(protocol.Signer(key), os.urandom(16), me) + b"\0" * 32)
        assert pump(worker) is None
    finally:
        plain.close()
        worker.close()
