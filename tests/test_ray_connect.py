"""Connecting a kernel to a Ray cluster started outside it (``ray start``), with token auth.

The cluster (a head and a second node, on loopback) lives for the module and
is stopped by killing exactly its processes; the kernel connects, works,
disconnects and leaves it running.
"""

from __future__ import annotations

import os
import re
import secrets
import textwrap

import pytest
from conftest import ours, wait_for
from kernel_harness import Kernel, ok
from ray_cluster import OutsideCluster, free_port, points_at

LEAK_CHECK = "processes"  # conftest.no_leaks: per test here, and per cluster in the fixtures


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    marker = str(tmp_path_factory.mktemp("rayoutside"))
    cluster = OutsideCluster(marker, token=secrets.token_hex(32))
    try:
        cluster.start_head(num_cpus=1, resources={"head_only": 1})
        cluster.add_node(num_cpus=1, resources={"second": 1})
        token_file = os.path.join(marker, "token")
        with open(token_file, "w") as f:
            f.write(cluster.token)
        cluster.token_file = token_file
        yield cluster
    finally:
        cluster.stop()
        assert not ours(marker), "processes of the outside cluster left running"
        assert not points_at(cluster.address)


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory):
    marker = str(tmp_path_factory.mktemp("raykernel2"))
    k = Kernel(dict(os.environ, NBCLUSTER_DIR=marker))
    k.execute("%load_ext kernel_ext")
    yield k
    k.shutdown()
    wait_for(lambda: not ours(marker), timeout=30, what="the kernel to exit")


@pytest.fixture
def kernel(shared_kernel):
    """The module's kernel, left disconnected after each test: a test that fails while connected
    does not make the next one's ``%cluster connect`` meet "Already connected"."""
    yield shared_kernel
    if connected(shared_kernel) == "True":
        shared_kernel.execute("%cluster disconnect", timeout=60)


def connect(kernel: Kernel, line: str, outside: OutsideCluster | None = None) -> str:
    msg_id = ok(kernel, line)
    out = kernel.stream(msg_id)
    assert "UsageError" not in out, out + (outside.client_server_logs() if outside else "")
    assert "Already connected" not in out, out
    return msg_id


def connected(kernel: Kernel) -> str:
    return kernel.value("__import__('kernel_ext').engines.current().is_initialized()")


def test_a_wrong_address_fails_with_a_clear_message(kernel):
    nobody = free_port()
    out = kernel.stream(ok(kernel, f"%cluster connect 127.0.0.1:{nobody} --engine ray"))
    assert f"no Ray cluster answers at 127.0.0.1:{nobody}" in out and "ray start --head" in out, out
    out = kernel.stream(ok(kernel, f"%cluster connect ray://127.0.0.1:{nobody}"))
    assert f"no Ray cluster answers at 127.0.0.1:{nobody}" in out, out
    out = kernel.stream(ok(kernel, "%cluster connect nonsense --engine ray"))
    assert "is not a Ray address" in out, out
    out = kernel.stream(ok(kernel, "%cluster connect 127.0.0.1:1 --engine warp"))
    assert "invalid choice: 'warp'" in out, out
    assert connected(kernel) == "False"


def test_a_missing_token_is_named(kernel, outside):
    out = kernel.stream(ok(kernel, f"%cluster connect {outside.address} --engine ray"))
    assert "authentication token" in out and "--token" in out, out
    assert connected(kernel) == "False"


def test_connect_work_status_and_disconnect(kernel, outside):
    msg_id = ok(kernel, f"%cluster connect {outside.address} --engine ray --token-file {outside.token_file}")
    text = "".join(b.get("text/plain", "") for b in kernel.results(msg_id))
    assert "nodes: 2" in text and "started elsewhere" in text, text + kernel.stream(msg_id)
    ok(
        kernel,
        textwrap.dedent("""
        import ray

        @ray.remote(resources={"second": 1})
        def on_second():
            print("from the second node")
            return ray.get_runtime_context().get_node_id()

        @ray.remote(resources={"head_only": 1})
        def on_head():
            return ray.get_runtime_context().get_node_id()
    """),
    )
    cell = ok(kernel, "print(ray.get(on_second.remote()) != ray.get(on_head.remote()))")
    assert kernel.stream(cell, "stdout").splitlines()[-1] == "True"  # two nodes did the work
    wait_for(lambda: "from the second node" in kernel.stream(cell), what="the second node's print")
    assert re.search(r"\(on_second pid=\d+\) from the second node", kernel.stream(cell))

    status = ok(kernel, "%cluster status")
    texts = [b["text/plain"] for b in kernel.results(status) if "text/plain" in b]
    assert texts and "2 node(s) alive" in texts[0], texts
    assert "head_only" in texts[0] and "second" in texts[0]

    out = kernel.stream(ok(kernel, "%cluster disconnect"))
    assert "Disconnected." in out
    assert connected(kernel) == "False"
    assert outside.alive()  # a cluster started elsewhere keeps running


def test_ray_client_output_lands_in_the_cell(kernel, outside):
    connect(
        kernel,
        f"%cluster connect ray://{outside.node_ip()}:{outside.client_port} --token {outside.token}",
        outside,
    )
    ok(
        kernel,
        textwrap.dedent("""
        import ray

        @ray.remote
        def through_client(i):
            print("client line", i)
            return i
    """),
    )
    first = ok(kernel, "ray.get([through_client.remote(i) for i in range(3)])")
    second = ok(kernel, "z = 0")
    # Each line comes when Ray's log monitor reads its worker's file: a worker started for this
    # cell may be read a second after another, so its line can come after a later one.
    wait_for(
        lambda: all(f"client line {i}" in kernel.stream(first) for i in range(3)),
        timeout=30,
        what="the Ray Client output",
    )
    for i in range(3):
        assert re.search(rf"\(through_client pid=\d+.*\) client line {i}\n", kernel.stream(first))
    assert "client line" not in kernel.stream(second) and "|cell=" not in kernel.stream(first)
    ok(kernel, "%cluster disconnect")
    assert outside.alive()


def test_connect_auto_finds_the_cluster_running_here(outside, tmp_path):
    """``auto`` reads Ray's address file, which ``ray start --head`` writes. The kernel here has a
    Ray temp root of its own (RAY_TMPDIR), holding what the outside head wrote: the machine-wide
    /tmp/ray/ray_current_cluster, which other tests' and users' clusters use, is never touched."""
    marker = tmp_path / "autokernel"
    marker.mkdir()
    ray_tmp = tmp_path / "raytmp"
    env = dict(os.environ, NBCLUSTER_DIR=str(marker), RAY_TMPDIR=str(ray_tmp))
    env.pop("RAY_ADDRESS", None)
    k = Kernel(env)
    try:
        ok(k, "%load_ext kernel_ext")
        out = k.stream(ok(k, "%cluster connect auto --engine ray"))
        assert "no Ray cluster is running on this machine" in out and "ray start --head" in out, out

        address_file = ray_tmp / "ray" / "ray_current_cluster"
        address_file.parent.mkdir(parents=True)
        stale = f"127.0.0.1:{free_port()}"  # what a cluster killed with kill -9 leaves behind
        address_file.write_text(stale)
        out = k.stream(ok(k, "%cluster connect auto --engine ray", timeout=30))
        assert f"ray_current_cluster names {stale}, but no Ray cluster answers" in out, out
        assert connected(k) == "False"

        written = outside.address_file().read_text().strip()  # as `ray start --head` wrote it:
        assert written.endswith(f":{outside.port}")  # its GCS port, at the node's own IP
        address_file.write_text(written)
        msg_id = connect(k, f"%cluster connect auto --engine ray --token-file {outside.token_file}", outside)
        text = "".join(b.get("text/plain", "") for b in k.results(msg_id))
        assert f"address: {written}" in text and "nodes: 2" in text, text + k.stream(msg_id)
        assert connected(k) == "True"
        assert "Disconnected." in k.stream(ok(k, "%cluster disconnect"))
        assert outside.alive()
    finally:
        k.shutdown()
        wait_for(lambda: not ours(str(marker)), timeout=30, what="the auto kernel to exit")
    assert not points_at(outside.address)  # the machine-wide file never named this cluster


def test_status_without_the_dashboard_says_what_is_missing(kernel, tmp_path_factory):
    """A head started with --include-dashboard=false: nodes, resources and infeasible demands
    (from the GCS) still show; what needs the dashboard is said to be missing, on screen."""
    marker = str(tmp_path_factory.mktemp("raybare"))
    bare = OutsideCluster(marker, token=secrets.token_hex(32))
    try:
        bare.start_head(num_cpus=1, resources={}, dashboard=False)
        connect(kernel, f"%cluster connect {bare.address} --engine ray --token {bare.token}", bare)
        ok(
            kernel,
            textwrap.dedent("""
            import ray
            @ray.remote(num_gpus=4)
            def wants_gpus():
                return 1
            stuck = wants_gpus.remote()
            print(ray.get(ray.put(5)))
        """),
        )
        snap = "__import__('kernel_ext').engines.current().snapshot()"
        wait_for(
            lambda: "'GPU': 4.0" in kernel.value(f"{snap}.infeasible"),
            timeout=60,
            interval=0.5,
            what="the infeasible task in the snapshot",
        )
        msg_id = ok(kernel, "%cluster status")
        texts = [b["text/plain"] for b in kernel.results(msg_id) if "text/plain" in b]
        assert texts and "1 node(s) alive" in texts[0] and "CPU" in texts[0], texts
        assert "Ray's dashboard is not running here" in texts[0] and "ray[default]" in texts[0], texts
        assert "Infeasible" in texts[0] and "task or actor needs" in texts[0], texts
        widget = kernel.value(
            "__import__('kernel_ext.status_view', fromlist=['x']).render_html(" + snap + ")"
        )
        assert "dashboard is not running" in widget and "Infeasible" in widget, widget
        ok(kernel, "ray.cancel(stuck)")
        assert "Disconnected." in kernel.stream(ok(kernel, "%cluster disconnect"))
    finally:
        bare.stop()
    assert not ours(marker), "processes of the dashboard-less cluster left running"
