"""The `nbcluster` command, run as a user would: real processes and ports."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
from conftest import free_port, nbcluster, ours, wait_for

import runtime


def test_start_connect_status_stop(no_leaks):
    port = free_port()
    out = nbcluster("start", "--head", "--port", str(port), "--num-cpus", "2", "--resources", '{"alice": 2}')
    assert out.returncode == 0, out.stderr
    assert f"127.0.0.1:{port}" in out.stdout and "%cluster connect" in out.stdout
    assert "ray.init(address=" in out.stdout

    runtime.init(address="auto")
    assert runtime.cluster_resources()["alice"] == 2

    @runtime.remote(resources={"bob": 1})
    def impossible():
        return 1

    @runtime.remote
    def f(x):
        return x * 2

    assert runtime.get([f.remote(i) for i in range(10)]) == [i * 2 for i in range(10)]
    stuck = impossible.remote()
    ready, _ = runtime.wait([stuck], timeout=0.5)
    assert ready == []

    def status_shows_it():
        s = nbcluster("status")
        return s.returncode == 0 and "impossible" in s.stdout and "Infeasible" in s.stdout

    wait_for(status_shows_it, timeout=10, what="status to list the infeasible task")
    status = nbcluster("status").stdout
    assert "CPU" in status and "alice" in status and "workers" in status

    @runtime.remote
    class Named:
        def ping(self):
            return "pong"

    for round_ in range(3):  # a named actor dies with its driver, and at once its name too (as in Ray)
        held = Named.options(name="held", namespace="cli").remote()
        kept = Named.options(name=f"kept{round_}", namespace="cli", lifetime="detached").remote()
        assert runtime.get([held.ping.remote(), kept.ping.remote()]) == ["pong", "pong"]
        runtime.shutdown()
        runtime.init(address="auto", namespace="cli")
        assert runtime.get(runtime.get_actor(f"kept{round_}").ping.remote()) == "pong"
        with pytest.raises(ValueError, match="no such actor"):
            runtime.get_actor("held")
    runtime.shutdown()
    # the cluster outlives its drivers
    assert nbcluster("status").returncode == 0
    stop = nbcluster("stop")
    assert stop.returncode == 0 and "Stopped" in stop.stdout
    wait_for(lambda: not ours(no_leaks), what="cluster processes to exit")
    missing = nbcluster("status")
    assert missing.returncode == 1 and "nbcluster start --head" in missing.stderr


def test_start_block_stops_on_sigterm(no_leaks):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "start", "--head", "--port", str(port), "--block"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert "Started a cluster" in proc.stdout.readline()
    runtime.init(address=f"127.0.0.1:{port}")

    @runtime.remote
    def one():
        return 1

    assert runtime.get(one.remote()) == 1
    runtime.shutdown()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    wait_for(lambda: not ours(no_leaks), what="cluster processes to exit")


def test_port_in_use_is_a_clear_error(no_leaks):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = nbcluster("start", "--head", "--port", str(port))
    assert out.returncode == 1
    assert "another --port" in out.stderr


def test_the_heads_port_is_held_before_its_node_starts(no_leaks):
    """The head listens on its port before it forks the node, so the node's gateway (asked for the
    same port here; in the wild, an ephemeral port the kernel hands out) can never take it."""
    port = free_port()
    for _ in range(3):
        out = nbcluster("start", "--head", "--port", str(port), "--gateway-port", str(port))
        assert out.returncode == 1
        assert "--gateway-port taken" in out.stderr, out.stderr
    wait_for(lambda: not ours(no_leaks), what="the failed cluster's processes to exit")


def test_bad_resources_json():
    out = nbcluster("start", "--head", "--resources", "{alice: 2}")
    assert out.returncode == 2 and "JSON" in out.stderr


def test_demo(no_leaks):
    out = nbcluster("demo", "--samples", "100000", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pi ≈ 3.1" in out.stdout
    assert "sampling" in out.stderr  # the progress bar
