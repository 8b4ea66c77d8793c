"""The notebook layer on a real Ray cluster, driven through a real kernel.

One kernel starts its own Ray cluster (``%cluster start --engine ray``) for the
whole module (a Ray start costs seconds and a gigabyte); the last test kills
that kernel with ``kill -9`` and checks nothing of the cluster is left.
"""

from __future__ import annotations

import os
import re
import signal
import textwrap

import pytest
from conftest import ours, wait_for
from kernel_harness import Kernel, ok
from notebook_cells import check_follow_and_progress, check_output_lands, follow_and_progress, output_tasks
from ray_cluster import points_at

START_TIMEOUT = 300  # a Ray start on a busy 2-core machine


LEAK_CHECK = "processes"  # conftest.no_leaks: per test here, and per cluster in the fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A kernel with its own 2-CPU Ray cluster: (kernel, the start cell's msg_id, its NBCLUSTER_DIR)."""
    marker = str(tmp_path_factory.mktemp("raykernel"))
    kernel = Kernel(dict(os.environ, NBCLUSTER_DIR=marker))
    try:
        ok(kernel, "%load_ext kernel_ext")
        start = ok(kernel, "%cluster start --engine ray -n 2", timeout=START_TIMEOUT)
        assert "UsageError" not in kernel.stream(start), kernel.stream(start)
        yield kernel, start, marker
    finally:
        kernel.shutdown()
        wait_for(lambda: not ours(marker), timeout=60, what="the kernel's Ray cluster to stop")


def test_start_shows_the_ray_cluster(cluster):
    kernel, start, _ = cluster
    text = "".join(b.get("text/plain", "") for b in kernel.results(start))
    assert "CPUs: 2" in text and "this kernel (stops with it)" in text, kernel.stream(start)
    again = ok(kernel, "%cluster start --engine ray")
    assert "already in use" in kernel.stream(again)
    assert kernel.value("__import__('ray').cluster_resources()['CPU']") == "2.0"


def test_output_lands_in_the_submitting_cell(cluster):
    kernel, _, _ = cluster
    ok(kernel, output_tasks("ray"))
    first, second, nested = check_output_lands(kernel, at_once=False)
    ok(
        kernel,
        textwrap.dedent("""
        @ray.remote
        class Greeter:
            def __init__(self):
                print("greeter made")
            def hello(self, who):
                print("hello", who)
                return who
            def slow(self, who):
                time.sleep(2)
                print("slowly", who)
                return who
    """),
    )

    made = ok(kernel, "g = Greeter.remote(); ray.get(g.hello.remote('made'))")
    wait_for(lambda: "greeter made" in kernel.stream(made), what="the actor's __init__ print")
    one = ok(kernel, "ray.get(g.hello.remote('one'))")
    two = ok(kernel, "ray.get(g.hello.remote('two'))")
    wait_for(lambda: "hello two" in kernel.stream(two), what="the second method call's print")
    wait_for(lambda: "hello one" in kernel.stream(one), what="the first method call's print")
    assert re.search(r"\(Greeter pid=\d+\) hello one", kernel.stream(one))
    assert "hello two" not in kernel.stream(one) and "hello one" not in kernel.stream(two)

    slow = ok(kernel, "slow = g.slow.remote('later')")
    after = ok(kernel, "y = 3")
    wait_for(lambda: "slowly later" in kernel.stream(slow), timeout=60, what="the actor's late print")
    assert "slowly later" not in kernel.stream(after)
    everything = "".join(kernel.stream(m) for m in (first, second, nested, made, one, two, slow, after))
    assert everything.count("hello one") == 1 and everything.count("late hello") == 1  # never twice
    assert "|cell=" not in everything  # the tag routes; it is not shown


def test_progress_bar_ends_full(cluster):
    kernel, _, _ = cluster
    msg_id = ok(
        kernel,
        textwrap.dedent("""
        import ray, kernel_ext, time
        bar = kernel_ext.ProgressBar(total=24, description="work")

        @ray.remote
        def step(i, bar):
            bar.update(1)
            return i

        assert sum(ray.get([step.remote(i, bar) for i in range(24)])) == sum(range(24))
        deadline = time.time() + 30
        while bar.view.n < 24 and time.time() < deadline:
            time.sleep(0.05)
        bar.close()
        print("bar at", bar.view.n)
    """),
    )
    assert "bar at 24" in kernel.stream(msg_id)
    bars = [s for s in kernel.comm_states().values() if s.get("_model_name") == "FloatProgressModel"]
    assert bars and bars[-1]["value"] == 24 and bars[-1]["bar_style"] == "success"
    assert any("24/24" in b.get("text/plain", "") for b in kernel.results(msg_id))


def test_follow_an_actor_and_progress_of_refs(cluster):
    kernel, _, _ = cluster
    msg_id = ok(kernel, follow_and_progress("ray"))
    check_follow_and_progress(kernel.stream(msg_id, "stdout"), "RayTaskError")


def test_remote_cells_round_trip_names(cluster):
    kernel, _, _ = cluster
    ok(kernel, "x = 21\nimport numpy as np")
    cell = ok(
        kernel,
        "%%remote --num-cpus 1\nimport os\ny = x * 2\nz = np.arange(3).sum()\nprint('remote hi')\ny + int(z)",
    )
    result = [b for b in kernel.results(cell) if "text/plain" in b]
    assert result and result[-1]["text/plain"] == "45"
    wait_for(lambda: "remote hi" in kernel.stream(cell), what="the remote cell's print")
    assert re.search(r"\(run_cell pid=\d+\) remote hi", kernel.stream(cell))
    assert kernel.value("(y, int(z))") == "(42, 3)"
    err = kernel.execute("%%remote\n1 / 0")
    errors = kernel.errors(err)
    assert errors and "ZeroDivisionError" in errors[0]["ename"] + " ".join(errors[0]["traceback"])
    ok(kernel, "%%remote --actor engine\ncounter = 1\nimport os\npid = os.getpid()")
    ok(kernel, "%%remote --actor engine\ncounter += 1\nsame = os.getpid() == pid")
    assert kernel.value("(counter, same)") == "(2, True)"
    ref = ok(kernel, "%%remote --no-wait\nanswer = 6 * 7\nanswer + 1")
    assert "ObjectRef" in kernel.results(ref)[-1]["text/plain"]
    assert kernel.value("__import__('ray').get(_)") == "43"
    wait_for(lambda: kernel.value("globals().get('answer')") == "42", what="the --no-wait names")


def test_status_shows_nodes_tasks_and_actors(cluster):
    kernel, _, _ = cluster
    ok(
        kernel,
        textwrap.dedent("""
        import ray, time
        @ray.remote(num_cpus=0)
        class Holder:
            def ping(self):
                return 1
        holder = Holder.remote()
        ray.get(holder.ping.remote())
    """),
    )
    msg_id = ok(kernel, "%cluster status")
    texts = [b["text/plain"] for b in kernel.results(msg_id) if "text/plain" in b]
    assert texts and "1 node(s) alive" in texts[0] and "CPU" in texts[0], texts
    snap = "__import__('kernel_ext').engines.current().snapshot()"
    wait_for(
        lambda: "Holder" in kernel.value(f"[a.class_name for n in {snap}.nodes for a in n.actors]"),
        timeout=30,
        what="the actor in the status",
    )
    assert kernel.value(f"{snap}.notes") == "()"  # the dashboard is there: nothing is missing
    # the status view's task stream: the finished call, from Ray's state API
    events = "__import__('kernel_ext').engines.current().task_events(0.0)"
    wait_for(
        lambda: "Holder.ping" in kernel.value(f"[e['name'] for e in {events}]"),
        timeout=60,
        interval=1.0,
        what="the finished actor call in the task stream",
    )


def test_status_shows_infeasible_tasks(cluster):
    """A task asking for a resource no node has waits, named, in the text and widget views."""
    kernel, _, _ = cluster
    ok(
        kernel,
        textwrap.dedent("""
        import ray
        @ray.remote(resources={"unicorn": 1})
        def needs_a_unicorn():
            return 1
        stuck = [needs_a_unicorn.remote() for _ in range(2)]
    """),
    )
    snap = "__import__('kernel_ext').engines.current().snapshot()"
    wait_for(
        lambda: "needs_a_unicorn" in kernel.value(f"{snap}.infeasible"),
        timeout=60,
        interval=0.5,
        what="the infeasible task in the snapshot",
    )
    assert "'unicorn': 1.0" in kernel.value(f"{snap}.infeasible")
    msg_id = ok(kernel, "%cluster status")
    text = "".join(b.get("text/plain", "") for b in kernel.results(msg_id))
    assert "Infeasible (no node has the resources" in text and "needs_a_unicorn ×2 needs" in text, text
    widget = kernel.value("__import__('kernel_ext.status_view', fromlist=['x']).render_html(" + snap + ")")
    assert "Infeasible" in widget and "needs_a_unicorn ×2 needs" in widget, widget
    ok(kernel, "for r in stuck:\n    ray.cancel(r)\ndel stuck")
    wait_for(
        lambda: kernel.value(f"{snap}.infeasible") == "[]",
        timeout=60,
        interval=0.5,
        what="the cancelled tasks to leave the status",
    )


def test_ray_tqdm_bars_and_ray_data_land_in_their_cell(cluster):
    kernel, _, _ = cluster
    msg_id = ok(
        kernel,
        textwrap.dedent("""
        import ray, time
        from ray.experimental import tqdm_ray

        @ray.remote
        def crunch(n):
            bar = tqdm_ray.tqdm(total=n, desc="crunching")
            for _ in range(n):
                time.sleep(0.2)
                bar.update(1)
            bar.close()
            return n

        ray.get(crunch.remote(10))
    """),
    )
    wait_for(
        lambda: any(
            "crunching" in b.get("text/plain", "") and "10/10" in b.get("text/plain", "")
            for b in kernel.results(msg_id)
        ),
        timeout=30,
        what="the tqdm_ray bar to end full in its cell",
    )
    assert "__ray_tqdm_magic_token__" not in kernel.stream(msg_id)
    data = ok(
        kernel,
        textwrap.dedent("""
        def double(batch):
            print("batch of", len(batch["id"]))
            return {"id": batch["id"] * 2}

        ds = ray.data.range(1000).repartition(4).map_batches(double)
        print("total", ds.sum("id"))
    """),
        timeout=240,
    )
    assert "total 999000" in kernel.stream(data, "stdout")
    wait_for(lambda: "batch of" in kernel.stream(data), timeout=30, what="a Ray Data task's print")
    later = ok(kernel, "w = 1")
    assert "batch of" not in kernel.stream(later)


def test_kernel_restart_leaves_no_ray_process(tmp_path_factory):
    """Restarting the kernel (the notebook's Restart) stops the Ray cluster it started."""
    marker = str(tmp_path_factory.mktemp("rayrestart"))
    kernel = Kernel(dict(os.environ, NBCLUSTER_DIR=marker))
    try:
        ok(kernel, "%load_ext kernel_ext")
        start = ok(kernel, "%cluster start --engine ray -n 1", timeout=START_TIMEOUT)
        assert "UsageError" not in kernel.stream(start), kernel.stream(start)
        address = kernel.value("__import__('kernel_ext').engines.current().address").strip("'")
        assert len(ours(marker)) >= 4  # the kernel, GCS, raylet, workers
        old = kernel.pid
        kernel.km.restart_kernel(
            now=False
        )  # as the notebook's Restart: a shutdown request, then a new kernel
        assert kernel.pid != old
        wait_for(
            lambda: {p.pid for p in ours(marker)} <= {kernel.pid},
            timeout=60,
            what="every process of the restarted kernel's Ray cluster to exit",
        )
        assert not points_at(address)
        ok(kernel, "%load_ext kernel_ext", timeout=120)  # the new kernel (same channels) works
        assert kernel.value("__import__('kernel_ext').engines.current().is_initialized()") == "False"
    finally:
        kernel.shutdown()
        wait_for(lambda: not ours(marker), timeout=60, what="the restarted kernel to exit")


def test_kernel_killed_leaves_no_ray_process(cluster):
    kernel, _, marker = cluster
    address = kernel.value("__import__('kernel_ext').engines.current().address").strip("'")
    assert len(ours(marker)) >= 4  # the kernel, GCS, raylet, workers: all carry its NBCLUSTER_DIR
    os.kill(kernel.pid, signal.SIGKILL)
    wait_for(lambda: not ours(marker), timeout=60, what="every process of the killed kernel's Ray cluster")
    assert not points_at(address)
