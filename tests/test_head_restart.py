"""The head comes back: its control store on disk, a head killed -9 and started again.

Real clusters started with the `nbcluster` command, a driver running work while the
head is gone, and the decisions of `runtime.head.restore` with plain data.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from conftest import free_port, nbcluster, ours, segments, wait_for

import runtime
from runtime import config as cfg
from runtime.head import restore
from runtime.head.store import ControlStore, path_in


def _head_pid(port: int) -> int:
    info = cfg.find_cluster(f"127.0.0.1:{port}")
    assert info is not None, "no running head on that port"
    return info.head_pid


def _kill_head(port: int) -> None:
    pid = _head_pid(port)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not cfg.pid_alive(pid), what="the head to die")


def _alive_nodes(port: int) -> set[str]:
    out = nbcluster("status", "--address", f"127.0.0.1:{port}", "--json", timeout=30)
    if out.returncode != 0:
        return set()
    return {n["node_id"] for n in json.loads(out.stdout)["nodes"] if n.get("alive")}


@runtime.remote
def square(x: int) -> int:
    time.sleep(0.02)  # a workload that is still running when the head dies
    return x * x


@runtime.remote
class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n


# -- the decisions, with plain data --------------------------------------------------------
def _row(node_id: str, alive: bool = True, dead_at: float = 0.0) -> dict:
    return {
        "node_id": node_id,
        "address": f"/x/{node_id}.sock",
        "resources_total": {"CPU": 2.0},
        "pid": 1,
        "hostname": "h",
        "ip": "127.0.0.1",
        "gateway": "tcp://127.0.0.1:1",
        "joined_at": 0.0,
        "alive": alive,
        "dead_reason": "" if alive else "it was stopped",
        "dead_at": dead_at,
    }


def test_restored_nodes_get_time_to_report_and_the_dead_stay_dead():
    rows = [_row("a"), _row("b", alive=False, dead_at=990.0), _row("c", alive=False, dead_at=100.0)]
    nodes = restore.trusted_nodes(rows, now=50.0, wall_now=1000.0, node_timeout=5.0, forget=600.0, grace=10.0)
    assert set(nodes) == {"a", "b"}  # c died more than `forget` seconds ago
    a = nodes["a"]
    assert a["alive"] and a["report"] is None and a["resources_available"] == {"CPU": 2.0}
    # declared dead when last_seen + node_timeout passes: that is `grace` seconds from now
    assert a["last_seen"] + 5.0 == 60.0
    assert not nodes["b"]["alive"] and nodes["b"]["last_seen"] == 40.0


def test_what_a_report_means_to_a_head():
    node = {"alive": True}
    assert restore.on_report(None, None, b"x") == restore.REJOIN
    assert restore.on_report({"alive": False}, b"x", b"x") == restore.EXIT
    assert restore.on_report(node, None, b"x") == restore.ADOPT  # the head restarted
    assert restore.on_report(node, b"old", b"x") == restore.ADOPT  # the node reconnected
    assert restore.on_report(node, b"x", b"x") == restore.ACCEPT


def test_the_store_keeps_what_it_was_told(tmp_path):
    store = ControlStore(path_in(tmp_path))
    store.node_joined(_row("a"))
    store.node_joined(_row("b"))
    store.node_dead("b", "no heartbeat", at=5.0)
    store.name_registered(
        "ns", "counter", {"actor_id": b"\x01A", "meta": {"m": [1]}, "state": "pending", "node_id": ""}
    )
    store.name_moved("ns", "counter", "alive", "a")
    store.name_registered("ns", "gone", {"actor_id": b"\x02A", "meta": {}, "state": "pending", "node_id": ""})
    store.name_removed("ns", "gone")
    store.job_started(1, "h")
    store.job_started(2, "h")
    store.close()
    assert oct(os.stat(path_in(tmp_path)).st_mode & 0o777) == "0o600"
    again = ControlStore(path_in(tmp_path)).load()
    assert {n["node_id"]: n["alive"] for n in again.nodes} == {"a": True, "b": False}
    assert again.names == {
        ("ns", "counter"): {"actor_id": b"\x01A", "meta": {"m": [1]}, "state": "alive", "node_id": "a"}
    }
    assert again.next_job == 3 and [j["job_id"] for j in again.jobs] == [1, 2]


# -- real clusters -------------------------------------------------------------------------
def test_head_killed_mid_workload_comes_back_with_its_state(no_leaks):
    port = free_port()
    address = f"127.0.0.1:{port}"
    out = nbcluster("start", "--head", "--port", str(port), "--num-cpus", "2")
    assert out.returncode == 0, out.stderr
    joined = nbcluster("start", "--address", address, "--num-cpus", "1", "--resources", '{"far": 1}')
    assert joined.returncode == 0, joined.stderr
    wait_for(lambda: len(_alive_nodes(port)) == 2, timeout=30, what="two nodes")
    nodes_before = _alive_nodes(port)

    runtime.init(address=address, namespace="restart")
    first_job = runtime.get_runtime_context().get_job_id()
    counter = Counter.options(name="counter").remote(10)
    keeper = Counter.options(name="keeper", lifetime="detached", resources={"far": 1}).remote(100)
    assert runtime.get([counter.incr.remote(), keeper.incr.remote()]) == [11, 101]

    in_flight = [square.remote(i) for i in range(60)]
    _kill_head(port)

    # Without a head: tasks and actor calls go on (they go worker to worker, and through the nodes).
    meanwhile = [square.remote(i) for i in range(100, 120)]
    assert runtime.get(meanwhile) == [i * i for i in range(100, 120)]
    assert runtime.get([counter.incr.remote(), keeper.incr.remote()]) == [12, 102]
    status = nbcluster("status", "--address", address)
    assert status.returncode == 1 and f"nbcluster start --head --port {port}" in status.stderr, status.stderr
    # A request to the head made now waits for it (ZeroMQ keeps it until the head is back).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(runtime.get_actor, "counter")

        back = nbcluster("start", "--head", "--port", str(port), "--num-cpus", "2")
        assert back.returncode == 0, back.stderr
        assert "Restarted the head" in back.stdout and "2 nodes and 2 named actors" in back.stdout, (
            back.stdout
        )
        assert runtime.get(waiting.result(timeout=30).incr.remote()) == 13
    assert runtime.get(in_flight) == [i * i for i in range(60)]
    wait_for(lambda: _alive_nodes(port) == nodes_before, timeout=30, what="both nodes back in status")
    text = nbcluster("status", "--address", address)
    assert text.returncode == 0 and "DEAD" not in text.stdout, text.stdout

    # Named actors are found by name, with their state; the head takes new names again.
    assert runtime.get(runtime.get_actor("counter").incr.remote()) == 14
    assert runtime.get(runtime.get_actor("keeper").incr.remote()) == 103
    other = Counter.options(name="after").remote(0)
    assert runtime.get(other.incr.remote()) == 1
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(name="counter").remote(0)
    runtime.shutdown()

    # A new driver: a new job id (the counter was kept), and the detached actor outlived its creator.
    runtime.init(address=address, namespace="restart")
    assert int(runtime.get_runtime_context().get_job_id(), 16) > int(first_job, 16)
    assert runtime.get(runtime.get_actor("keeper").incr.remote()) == 104
    with pytest.raises(ValueError, match="no such actor"):
        runtime.get_actor("counter")  # it died with its driver
    runtime.shutdown()

    stop = nbcluster("stop")
    assert stop.returncode == 0 and "Stopped" in stop.stdout, stop.stdout + stop.stderr
    wait_for(lambda: not ours(no_leaks), timeout=20, what="every cluster process to exit")
    wait_for(lambda: not segments(), what="every shared-memory segment to go")


def test_block_supervisor_restarts_its_head(no_leaks):
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "start",
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--block",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "Started a cluster" in proc.stdout.readline()
        runtime.init(address=address, namespace="block")
        counter = Counter.options(name="counter").remote(0)
        assert runtime.get(counter.incr.remote()) == 1
        _kill_head(port)
        said = []

        def back() -> bool:  # reads what is there, never blocks on a supervisor that says nothing
            fd = proc.stdout.fileno()
            if select.select([fd], [], [], 0.1)[0]:
                said.append(os.read(fd, 65536).decode())
            return "The head is back" in "".join(said)

        wait_for(back, timeout=60, what="the supervisor to start the head again")
        assert "killed by SIGKILL" in "".join(said), said
        assert runtime.get(runtime.get_actor("counter").incr.remote()) == 2
        assert runtime.get([square.remote(i) for i in range(10)]) == [i * i for i in range(10)]
        runtime.shutdown()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    wait_for(lambda: not ours(no_leaks), timeout=20, what="cluster processes to exit")


def test_a_node_waiting_for_its_head_gives_up_and_leaves_nothing(no_leaks):
    port = free_port()
    out = nbcluster("start", "--head", "--port", str(port), "--num-cpus", "1", "--head-timeout", "2")
    assert out.returncode == 0, out.stderr
    _kill_head(port)
    # Its node waits for the head (a restart would find it), then gives up and cleans up.
    wait_for(lambda: not ours(no_leaks), timeout=30, what="the node to give up")
    wait_for(
        lambda: not any(p.is_dir() for p in cfg.runtime_dir().glob("*")), what="the cluster folder to go"
    )


def test_stop_stops_a_node_whose_head_is_gone(no_leaks):
    port = free_port()
    out = nbcluster("start", "--head", "--port", str(port), "--num-cpus", "1")
    assert out.returncode == 0, out.stderr
    _kill_head(port)
    stop = nbcluster("stop")
    assert stop.returncode == 0 and "its head was gone" in stop.stdout, stop.stdout + stop.stderr
    wait_for(lambda: not ours(no_leaks), timeout=20, what="the node to exit")


def test_a_head_without_its_store_asks_its_nodes_to_say_hello_again(no_leaks):
    port = free_port()
    address = f"127.0.0.1:{port}"
    assert nbcluster("start", "--head", "--port", str(port), "--num-cpus", "1").returncode == 0
    assert nbcluster("start", "--address", address, "--num-cpus", "1").returncode == 0
    wait_for(lambda: len(_alive_nodes(port)) == 2, timeout=30, what="two nodes")
    nodes_before = _alive_nodes(port)
    folder = cfg.find_cluster(address).directory
    _kill_head(port)
    for f in folder.glob("control.db*"):  # the store is lost (say, a disk was wiped)
        f.unlink()
    back = nbcluster("start", "--head", "--port", str(port), "--num-cpus", "1")
    assert back.returncode == 0 and "Restarted the head" in back.stdout, back.stdout + back.stderr
    # Unknown nodes are told to say NODE_HELLO again (REJOIN) when they report.
    wait_for(lambda: _alive_nodes(port) == nodes_before, timeout=30, what="both nodes to join again")
    runtime.init(address=address)
    assert runtime.get(square.remote(7)) == 49
    runtime.shutdown()
    assert nbcluster("stop").returncode == 0
    wait_for(lambda: not ours(no_leaks), timeout=20, what="every cluster process to exit")
