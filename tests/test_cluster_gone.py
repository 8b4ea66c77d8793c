"""Kernels connected to a cluster that is stopped are told: one line, views that stop cleanly,
and a clear error from every later call (real kernels, real clusters, stopped for real)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ours, wait_for
from kernel_harness import Kernel, ok

from runtime import config as cfg
from runtime.client import head_client
from runtime.snapshot import ClusterSnapshot

LINE = "nbcluster: the cluster at {} was stopped"


@pytest.fixture
def kernels(no_leaks):
    started: list[Kernel] = []

    def make() -> Kernel:
        k = Kernel(dict(os.environ, NBCLUSTER_DIR=no_leaks))
        started.append(k)
        ok(k, "%load_ext kernel_ext")
        return k

    yield make
    for k in started:
        k.shutdown()
    wait_for(lambda: not ours(no_leaks), timeout=30, what="the kernels to exit")


def cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def running(info: cfg.ConnectionInfo) -> int:
    """How many tasks run on the cluster now (asked of its head, as `nbcluster status` does)."""
    client = head_client(info)
    try:
        return sum(ClusterSnapshot.from_dict(client.request("snapshot", timeout=10)).running.values())
    finally:
        client.close(say_bye=False)


def widget_values(kernel: Kernel, css_class: str) -> list[dict]:
    return [s for s in kernel.comm_states().values() if css_class in s.get("_dom_classes", ())]


def all_streams(kernel: Kernel) -> str:
    with kernel.lock:
        msgs = [m for ms in kernel.by_parent.values() for m in ms]
    return "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream")


def test_a_busy_kernel_is_told_once_when_nbcluster_stop_stops_its_cluster(kernels):
    cli("start", "--head", "--port", "0", "--num-cpus", "1")
    (info,) = cfg.list_clusters()
    kernel = kernels()
    ok(kernel, f"%cluster connect {info.head_address}")
    ok(
        kernel,
        textwrap.dedent("""
        import runtime as ray, time, kernel_ext

        @ray.remote
        def hold():
            time.sleep(600)

        bar = kernel_ext.ProgressBar(total=10, description="work")
        bar.update(3)
    """),
    )
    ok(kernel, "%cluster status")
    wait_for(
        lambda: any("3/10" in s.get("value", "") for s in widget_values(kernel, "nbcluster-progress-label")),
        timeout=30,
        what="the bar to count 3",
    )
    blocked = kernel.submit("ray.get(hold.remote())")
    wait_for(lambda: running(info) == 1, timeout=60, what="the task to run")

    cli("stop", "--all")
    wait_for(lambda: blocked in kernel.idle, timeout=60, what="the blocked cell to end")

    # one line, in the cell that was running; its get() fails saying the cluster is gone
    line = LINE.format(info.head_address)
    assert kernel.stream(blocked).count(line) == 1, kernel.stream(blocked)
    (error,) = kernel.errors(blocked)
    assert error["ename"] == "ClusterGoneError" and "is gone" in error["evalue"], error
    # the views stopped cleanly and say why
    (status,) = widget_values(kernel, "nbcluster-status-view")
    assert "Stopped following: the cluster is gone" in status["value"] and line in status["value"]
    assert "CPU" in status["value"]  # the last state stays readable
    (bar,) = widget_values(kernel, "nbcluster-progress")
    assert bar["bar_style"] == "danger"
    (label,) = widget_values(kernel, "nbcluster-progress-label")
    assert "the cluster is gone" in label["value"] and "3/10" in label["value"]
    (card,) = widget_values(kernel, "nbcluster-cluster")
    assert "stopped" in card["value"] and line in card["value"]

    # later calls raise a clear error; the line is not said again
    later = kernel.execute("hold.remote()")
    (error,) = kernel.errors(later)
    assert error["ename"] == "ClusterGoneError", error
    assert f"the cluster at {info.head_address} is gone" in error["evalue"]
    assert "%cluster start or %cluster connect" in error["evalue"]
    assert line not in kernel.stream(later)
    assert "Traceback" not in all_streams(kernel)  # no background thread complained

    # starting again needs no disconnect first
    again = ok(kernel, "%cluster start -n 1")
    assert "already in use" not in kernel.stream(again)
    ok(kernel, "print(ray.get(ray.remote(lambda: 42).remote()))")
    assert all_streams(kernel).count(line) == 1
    ok(kernel, "%cluster stop")


def test_an_idle_kernel_learns_when_the_owner_kernel_stops_the_cluster(kernels):
    owner, user = kernels(), kernels()
    ok(owner, "%cluster start -n 1")
    address = owner.value("__import__('kernel_ext').engines.current().address").strip("'")
    ok(user, f"%cluster connect {address}")
    ok(user, "import runtime as ray")

    ok(owner, "%cluster stop")
    line = LINE.format(address)
    # the card of %cluster connect turns into a stopped card at once (a live widget)
    wait_for(
        lambda: any(line in s.get("value", "") for s in widget_values(user, "nbcluster-cluster")),
        timeout=30,
        what="the connected kernel's card to say the cluster stopped",
    )
    # the line comes with the next cell that runs, once
    first = ok(user, "x = 1")
    assert user.stream(first, "stderr").count(line) == 1, user.stream(first)
    second = ok(user, "y = 2")
    assert line not in user.stream(second)
    gone = user.execute("ray.put(1)")
    assert [e["ename"] for e in user.errors(gone)] == ["ClusterGoneError"]
    out = user.stream(ok(user, "%cluster disconnect"))
    assert f"The cluster at {address} was already gone" in out
    assert cfg.list_clusters() == []
