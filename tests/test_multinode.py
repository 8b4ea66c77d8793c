"""Several nodes on one machine: separate node daemons joined over TCP on loopback.

Each node is its own process tree (daemon, zygote, workers) with its own
node id and object store, started with ``nbcluster start --address`` as a
user would on another machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import free_port, nbcluster_checked, ours, segments, spares, wait_for

import runtime
from runtime.config import shm_dir


class Cluster:
    """A head and nodes started with the CLI; `stop()` takes them all down."""

    def __init__(
        self,
        head_cpus: int,
        head_resources: dict,
        node_timeout: float | None = None,
        encryption: bool = False,
        object_store_memory: int | None = None,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        args = ["start", "--head", "--port", str(self.port), "--num-cpus", str(head_cpus)]
        args += ["--resources", json.dumps(head_resources)]
        if encryption:
            args.append("--encryption")  # CurveZMQ on loopback too: what other machines get
        if node_timeout is not None:
            args += ["--node-timeout", str(node_timeout)]
        if object_store_memory is not None:
            args += ["--object-store-memory", str(object_store_memory)]
        nbcluster_checked(*args)
        self.nodes: dict[str, str] = {}  # label -> node id

    def add_node(self, label: str, cpus: int, resources: dict) -> str:
        out = nbcluster_checked(
            "start", "--address", self.address, "--num-cpus", str(cpus), "--resources", json.dumps(resources)
        )
        node_id = re.search(r"Node (\w+) joined", out.stdout).group(1)
        self.nodes[label] = node_id
        return node_id

    def status(self) -> dict:
        return json.loads(nbcluster_checked("status", "--address", self.address, "--json").stdout)

    def stop(self) -> None:
        runtime.shutdown()
        nbcluster_checked("stop", "--address", self.address)


@pytest.fixture
def three_nodes(no_leaks):
    """The issue's example: head 5 CPUs + bob 5; alice 2 on one node; ming1, ming2 on another."""
    cluster = Cluster(5, {"bob": 5})
    try:
        cluster.add_node("alice", 2, {"alice": 2})
        cluster.add_node("ming", 2, {"ming1": 1, "ming2": 1})
        runtime.init(address=cluster.address)
        cluster.nodes["head"] = runtime.get_runtime_context().get_node_id()
        yield cluster
    finally:
        cluster.stop()


@runtime.remote
def where(x=None):
    """The node that ran this, and a checksum of the argument."""
    total = None if x is None else float(np.asarray(x).sum())
    return runtime.get_runtime_context().get_node_id(), total


def test_tasks_run_where_their_resources_are(three_nodes):
    nodes = three_nodes.nodes
    assert len({nodes["head"], nodes["alice"], nodes["ming"]}) == 3
    listed = {n["NodeID"]: n for n in runtime.nodes()}
    assert listed[nodes["alice"]]["Resources"]["alice"] == 2
    assert listed[nodes["ming"]]["Resources"]["ming2"] == 1
    assert runtime.cluster_resources()["CPU"] == 9

    cases = [({"bob": 1}, "head"), ({"alice": 1}, "alice"), ({"ming1": 1}, "ming"), ({"ming2": 1}, "ming")]
    for _ in range(3):
        refs = [where.options(resources=res).remote() for res, _ in cases]
        got = runtime.get(refs, timeout=60)
        assert [node for node, _ in got] == [nodes[label] for _, label in cases]

    # Many at once: every one lands on a node that has the resource.
    refs = [where.options(resources={"alice": 0.5}).remote() for _ in range(200)]
    assert {node for node, _ in runtime.get(refs, timeout=120)} == {nodes["alice"]}


def test_status_lists_every_node(three_nodes):
    data = three_nodes.status()
    by_id = {n["node_id"]: n for n in data["nodes"]}
    assert set(by_id) == set(three_nodes.nodes.values())
    assert all(n["alive"] for n in by_id.values())
    assert by_id[three_nodes.nodes["ming"]]["resources_total"]["ming1"] == 1
    text = nbcluster_checked("status", "--address", three_nodes.address).stdout
    assert "3 node(s) alive" in text and "alice 0/2" in text and "bob 0/5" in text


def test_objects_move_between_nodes(three_nodes):
    nodes = three_nodes.nodes
    data = np.arange(4_000_000, dtype=np.float64)  # 32 MB: shared memory, pulled by the other node
    ref = runtime.put(data)
    refs = [where.options(resources={"alice": 0.5}).remote(ref) for _ in range(6)]
    for node, total in runtime.get(refs, timeout=60):
        assert node == nodes["alice"] and total == data.sum()

    @runtime.remote(resources={"ming1": 1})
    def make(n):
        return np.full(n, 3.0)

    big = runtime.get(make.remote(5_000_000), timeout=60)  # made on "ming", moved to the driver's node
    assert big.shape == (5_000_000,) and big.sum() == 15_000_000

    # A result of one node as the argument of a task on another.
    chained = where.options(resources={"alice": 1}).remote(make.remote(2_000_000))
    assert runtime.get(chained, timeout=60) == (nodes["alice"], 6_000_000.0)

    # A ref nested in an argument is fetched by the node that needs it.
    @runtime.remote(resources={"ming2": 1})
    def unwrap(box):
        return float(runtime.get(box[0]).sum()), runtime.get_runtime_context().get_node_id()

    assert runtime.get(unwrap.remote([ref]), timeout=60) == (data.sum(), nodes["ming"])

    # Status counts what moved (the 32 MB went to "alice" once, however many tasks read it).
    def moved() -> dict:
        return {n["node_id"]: n for n in three_nodes.status()["nodes"]}

    wait_for(lambda: moved()[nodes["alice"]]["transfer_in"] >= data.nbytes, 10, what="the next node report")
    assert moved()[nodes["alice"]]["transfer_in"] < 2 * data.nbytes + 40_000_000
    assert (
        "Objects moved between nodes" in nbcluster_checked("status", "--address", three_nodes.address).stdout
    )


PULLED = 2**20  # 8 MiB of float64


def copies_on(node_id: str) -> list[str]:
    """The segments of node `node_id` (one machine: its copies of other nodes' objects)."""
    return [s for s in segments() if f"-{node_id}-" in s]


def put_and_read_on(node_id: str, resource: str, value: float) -> runtime.ObjectRef:
    """Put an 8 MiB array here; a task on node `node_id` (which has `resource`) reads it."""
    ref = runtime.put(np.full(PULLED, value))
    got = runtime.get(where.options(resources={resource: 1}).remote(ref), timeout=60)
    assert got == (node_id, value * PULLED)
    return ref


def test_a_pulled_copy_goes_when_its_object_is_freed_and_the_next_pull_reuses_its_file(no_leaks):
    """A node keeps the copy it pulled of another node's object for the next task that reads
    it (up to 30 s after its last use), but not once the object is freed at home: nobody can
    ask for it again. Its file becomes a spare segment of that node, and the next pull of
    about its size is written into it (its pages exist)."""
    cluster = Cluster(2, {"a": 1})
    try:
        other = cluster.add_node("b", 2, {"b": 1})
        runtime.init(address=cluster.address)

        def published():
            return [s for s in spares() if f"-{other}-spares" in s and "/q-" not in s]

        ref = put_and_read_on(other, "b", 1.0)
        (copy,) = copies_on(other)
        del ref
        wait_for(lambda: not copies_on(other), timeout=15, what="the copy to go once its object is freed")
        inodes = {os.stat(s).st_ino for s in wait_for(published, what="the copy's file as a spare")}
        ref = put_and_read_on(other, "b", 2.0)  # held: its copy stays while we look
        (copy,) = copies_on(other)
        assert os.stat(copy).st_ino in inodes  # the pull wrote into the spare
        del ref
    finally:
        cluster.stop()


def test_a_pulled_copy_goes_when_its_object_is_freed_after_it_was_spilled_at_home(no_leaks):
    """The home node spilled the object to disk after another node pulled a copy: freed under
    its spill path, the object's copy elsewhere still goes at once (named as it was pulled)."""
    cluster = Cluster(2, {"a": 1}, object_store_memory=20 * 2**20)
    try:
        other = cluster.add_node("b", 2, {"b": 1})
        runtime.init(address=cluster.address)
        ref = put_and_read_on(other, "b", 1.0)
        (copy,) = copies_on(other)
        home = set(segments()) - {copy}
        more = [runtime.put(np.full(PULLED, float(i))) for i in range(2)]  # 24 MiB: over the store's 20
        wait_for(lambda: not home & set(segments()), what="the first object to be spilled")
        assert copies_on(other) == [copy]
        del ref
        wait_for(
            lambda: not copies_on(other), timeout=15, what="the copy to go once its spilled object is freed"
        )
        del more
    finally:
        cluster.stop()


def test_a_result_moved_to_its_owners_node_leaves_its_file_a_spare_for_the_next_result(no_leaks):
    """A large result made on another node is moved to its owner's node; the file it leaves
    behind becomes a spare there, and the next result of its size is written into it."""
    cluster = Cluster(2, {"a": 1})
    try:
        other = cluster.add_node("b", 2, {"b": 1})
        runtime.init(address=cluster.address)
        make = runtime.remote(resources={"b": 1})(lambda value: np.full(PULLED, value))

        def published():
            return {os.stat(s).st_ino for s in spares() if f"-{other}-spares" in s and "/q-" not in s}

        assert runtime.get(make.remote(1.0), timeout=60)[0] == 1.0
        (left,) = wait_for(published, what="the moved result's file as a spare")
        assert runtime.get(make.remote(2.0), timeout=60)[0] == 2.0
        # Written into that spare, then moved: the same file is the one spare again (a new
        # file would have left two).
        wait_for(lambda: published() == {left}, what="the same file back as the only spare")
    finally:
        cluster.stop()


def test_nested_tasks_and_actors_across_nodes(three_nodes):
    nodes = three_nodes.nodes

    @runtime.remote(resources={"ming1": 1})
    def outer():
        # Submitted from a worker on "ming": its node sends the lease request on to "alice".
        return runtime.get(where.options(resources={"alice": 1}).remote())[0]

    assert runtime.get(outer.remote(), timeout=60) == nodes["alice"]

    @runtime.remote(resources={"alice": 1})
    class Counter:
        def __init__(self, start):
            self.n = start

        def incr(self):
            self.n += 1
            return self.n, runtime.get_runtime_context().get_node_id()

    counter = Counter.remote(10)
    got = runtime.get([counter.incr.remote() for _ in range(5)], timeout=60)
    assert got == [(11 + i, nodes["alice"]) for i in range(5)]

    @runtime.remote(resources={"bob": 1})
    def use(c):  # a handle passed to a task on the head's node
        return runtime.get(c.incr.remote())[0]

    assert runtime.get(use.remote(counter), timeout=60) == 16
    runtime.kill(counter)
    with pytest.raises(runtime.exceptions.ActorDiedError):
        runtime.get(counter.incr.remote(), timeout=60)


def _node_tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def _kill_tree(pid: int) -> None:
    """kill -9 a node daemon and everything under it (a child may already be gone)."""
    for proc in _node_tree(pid):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def test_node_killed_mid_workload(no_leaks):
    """kill -9 of a node daemon and its workers: tasks re-run elsewhere, the actor restarts."""
    cluster = Cluster(1, {}, node_timeout=2.0)
    try:
        b = cluster.add_node("b", 2, {"on_b": 1})
        c = cluster.add_node("c", 2, {"on_c": 1})
        runtime.init(address=cluster.address)
        head = runtime.get_runtime_context().get_node_id()

        @runtime.remote(num_cpus=1)
        class Holder:  # takes the head node's only CPU: the rest must go to b and c
            def node(self):
                return runtime.get_runtime_context().get_node_id()

        @runtime.remote(num_cpus=1, max_restarts=1)
        class Survivor:
            def __init__(self):
                self.calls = 0

            def node(self):
                self.calls += 1
                return runtime.get_runtime_context().get_node_id(), self.calls

        holder = Holder.remote()
        assert runtime.get(holder.node.remote(), timeout=60) == head
        survivor = Survivor.remote()
        first, _ = runtime.get(survivor.node.remote(), timeout=60)
        assert first in (b, c)
        victim = first
        other = c if victim == b else b

        @runtime.remote(num_cpus=1, max_retries=3)
        def work(i):
            time.sleep(0.2)
            return i * i, runtime.get_runtime_context().get_node_id()

        @runtime.remote
        def nest():
            return [runtime.put("kept by a worker of the victim")]

        # A value owned by a process of the victim, held here but never fetched: lost with it.
        box = runtime.get(nest.options(resources={"on_b" if victim == b else "on_c": 1}).remote(), timeout=60)

        refs = [work.remote(i) for i in range(30)]
        wait_for(lambda: runtime.wait(refs, num_returns=3, timeout=0)[0], 60, what="first results")
        pid = next(n["pid"] for n in cluster.status()["nodes"] if n["node_id"] == victim)
        killed_at = time.monotonic()
        _kill_tree(pid)

        def victim_dead() -> bool:
            return not {n["NodeID"]: n for n in runtime.nodes()}[victim]["Alive"]

        wait_for(victim_dead, 30, what="the head to declare the node dead")
        print(f"\nnode death detected after {time.monotonic() - killed_at:.2f} s (timeout 2 s)")
        results = runtime.get(refs, timeout=120)
        assert [r for r, _ in results] == [i * i for i in range(30)]
        assert {node for _, node in results} <= {victim, other}

        with pytest.raises(runtime.exceptions.ObjectLostError, match="gone"):
            runtime.get(box[0], timeout=60)

        # The actor died with its node and restarted on the node left (its state is new).
        node, calls = runtime.get(survivor.node.remote(), timeout=60)
        assert (node, calls) == (other, 1)
        assert runtime.get(holder.node.remote(), timeout=60) == head
    finally:
        cluster.stop()


def test_result_lost_in_transit_is_made_again(no_leaks, tmp_path):
    """The node that made a large result dies while the owner's node moves it: the task re-runs
    on another node (lineage) and get() returns the right value."""
    cluster = Cluster(1, {}, node_timeout=2.0)
    try:
        cluster.add_node("b", 2, {"x": 1})
        cluster.add_node("c", 2, {"x": 1})
        runtime.init(address=cluster.address)
        info = runtime.api._state.info
        home = runtime.get_runtime_context().get_node_id()
        marks = tmp_path / "ran"
        marks.mkdir()

        @runtime.remote(resources={"x": 1}, max_retries=2)
        def big(marks):
            node = runtime.get_runtime_context().get_node_id()
            (Path(marks) / node).write_text(node)
            return np.full(40_000_000, 7.0)  # 320 MB: the move takes a while

        pids = {n["node_id"]: n["pid"] for n in cluster.status()["nodes"]}
        ref = big.remote(str(marks))
        shm = shm_dir()
        # The move takes well under a second now: poll tightly and freeze the maker at once.
        part = wait_for(
            lambda: list(shm.glob(f"nbc-{info.cluster_id}-{home}-*.part")),
            60,
            interval=0.001,
            what="the move to start",
        )
        assert part
        maker = next(p.name for p in marks.iterdir())
        os.kill(pids[maker], signal.SIGSTOP)  # it sends no more chunks from here
        _kill_tree(pids[maker])
        value = runtime.get(ref, timeout=120)
        assert value.shape == (40_000_000,) and float(value[::1_000_000].sum()) == 7.0 * 40
        assert len(list(marks.iterdir())) == 2  # made again, on the other node
    finally:
        cluster.stop()


def _drop_every_connection(marker: str) -> int:
    """Abort every TCP connection of the cluster's processes and this driver (`ss -K`), the
    processes living on: what a flaky network or a restarted switch does."""
    pairs = set()
    for p in [psutil.Process(), *ours(marker)]:
        for c in p.net_connections(kind="tcp"):
            if c.status == psutil.CONN_ESTABLISHED and c.raddr:
                pairs.add((c.laddr.ip, c.laddr.port, c.raddr.ip, c.raddr.port))
    for lip, lport, rip, rport in pairs:
        done = subprocess.run(
            ["ss", "-K", "src", lip, "sport", "=", str(lport), "dst", rip, "dport", "=", str(rport)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    return len(pairs)


def test_dropped_connections_are_made_again_and_nothing_is_lost(three_nodes, no_leaks):
    @runtime.remote(resources={"alice": 1})
    def on_alice(x):
        return x * 2

    @runtime.remote(resources={"ming1": 1})
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self):
            self.n += 1
            return self.n

    counter = Counter.options(name="counter").remote()
    assert runtime.get(counter.add.remote(), timeout=60) == 1
    assert _drop_every_connection(no_leaks) >= 4  # driver-head, node-head, node-node
    # Nodes, drivers and the head reconnect under the same identities: replies, views and
    # relayed calls find them again.
    assert runtime.get([on_alice.remote(i) for i in range(20)], timeout=60) == [i * 2 for i in range(20)]
    assert runtime.get(counter.add.remote(), timeout=60) == 2
    assert runtime.get(runtime.get_actor("counter").add.remote(), timeout=60) == 3
    assert len([n for n in runtime.nodes() if n["Alive"]]) == 3
    wait_for(lambda: len(three_nodes.status()["nodes"]) == 3, timeout=30, what="the head to list every node")
    # `nbcluster stop` (the fixture) still reaches every node: nothing is left (conftest checks).


def test_pull_that_cannot_be_written_is_lost_and_cleaned_up(no_leaks):
    """The receiving node cannot make the pulled copy (its file size limit, as a full disk):
    the task gets ObjectLostError, no part file is left, and the node pulls again once it can."""
    cluster = Cluster(1, {})
    try:
        b = cluster.add_node("b", 2, {"on_b": 1})
        runtime.init(address=cluster.address)
        info = runtime.api._state.info
        pid = next(n["pid"] for n in cluster.status()["nodes"] if n["node_id"] == b)
        daemon = psutil.Process(pid)
        limit = daemon.rlimit(psutil.RLIMIT_FSIZE)
        data = np.arange(3_000_000, dtype=np.float64)  # 24 MB: pulled in chunks by node b
        ref = runtime.put(data)
        task = where.options(resources={"on_b": 1})
        daemon.rlimit(psutil.RLIMIT_FSIZE, (1 << 20, limit[1]))  # writes past 1 MiB fail (EFBIG)
        with pytest.raises(runtime.exceptions.ObjectLostError):
            runtime.get(task.remote(ref), timeout=60)
        assert not list(shm_dir().glob(f"nbc-{info.cluster_id}-{b}-*"))  # no .part, no copy
        daemon.rlimit(psutil.RLIMIT_FSIZE, limit)
        assert runtime.get(task.remote(ref), timeout=60) == (b, data.sum())
    finally:
        cluster.stop()


def test_pull_that_hears_nothing_fails_and_the_node_pulls_again(no_leaks, monkeypatch):
    """The node that holds an argument stops sending while it lives on (here: frozen with
    SIGSTOP; in the wild, a chunk dropped for failing its check): after NBCLUSTER_PULL_STALL_S
    the call gets ObjectLostError instead of hanging, and once the sender is back the next
    call pulls the value."""
    monkeypatch.setenv("NBCLUSTER_PULL_STALL_S", "2")
    cluster = Cluster(1, {}, node_timeout=120.0)  # the frozen node is not declared dead
    try:
        b = cluster.add_node("b", 2, {"on_b": 1})
        runtime.init(address=cluster.address)
        home = runtime.get_runtime_context().get_node_id()

        @runtime.remote(resources={"on_b": 1})
        class Reader:
            def read(self, x):
                return runtime.get_runtime_context().get_node_id(), float(np.asarray(x).sum())

        reader = Reader.remote()
        assert runtime.get(reader.read.remote(1), timeout=60) == (b, 1.0)  # its link is up
        data = np.arange(3_000_000, dtype=np.float64)  # 24 MB: in the driver's node's memory
        ref = runtime.put(data)
        pid = next(n["pid"] for n in cluster.status()["nodes"] if n["node_id"] == home)
        os.kill(pid, signal.SIGSTOP)  # the call still reaches the reader: a direct link
        try:
            start = time.monotonic()
            with pytest.raises(runtime.exceptions.ObjectLostError):
                runtime.get(reader.read.remote(ref), timeout=60)
            assert time.monotonic() - start < 30
        finally:
            os.kill(pid, signal.SIGCONT)
        assert runtime.get(reader.read.remote(ref), timeout=60) == (b, data.sum())
    finally:
        cluster.stop()


OTHER_DRIVER = """
import os, sys
import runtime

runtime.init(address=sys.argv[1])

@runtime.remote
def pid():
    return os.getpid()

print(runtime.get(pid.remote(), timeout=60))
runtime.shutdown()
"""


def test_an_idle_lease_goes_to_another_driver_at_once(no_leaks, monkeypatch):
    """A driver keeps an idle lease for its next burst (`LEASE_IDLE`); another driver's task
    that needs the CPU it holds gets it at once: the node revokes the idle lease. Here ours
    would be kept an hour, so the other driver's task can only run through the revocation."""
    from runtime.client import decisions

    monkeypatch.setattr(decisions, "LEASE_IDLE", 3600.0)
    cluster = Cluster(1, {})
    try:
        runtime.init(address=cluster.address)

        @runtime.remote
        def pid():
            return os.getpid()

        runtime.get(pid.remote(), timeout=60)  # our lease on the only CPU, idle from now on
        other = subprocess.run(
            [sys.executable, "-c", OTHER_DRIVER, cluster.address], capture_output=True, text=True, timeout=120
        )
        assert other.returncode == 0, other.stderr
        assert int(other.stdout.split()[-1]) > 0
        assert runtime.get(pid.remote(), timeout=60) > 0  # and ours asks again and runs
    finally:
        cluster.stop()
