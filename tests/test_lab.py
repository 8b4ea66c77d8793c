"""The sidebar's server side: its REST handlers in a real Jupyter server (pytest-jupyter's
``jp_fetch``), against real clusters started by the CLI, by a kernel and by the handlers
themselves; and ``runtime.timeline()``, whose events the task stream draws."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tornado
from conftest import free_port, nbcluster, nbcluster_checked, ours, wait_for
from pytest_jupyter.jupyter_server import *  # noqa: F403 - fixtures (jp_fetch, ...), see in_loop

import runtime
from runtime import config as cfg


def in_loop(test):
    """Run an ``async def`` test on pytest-jupyter's event loop (the one its server runs on).

    pytest-jupyter's fixtures are imported into this module only: loading it as a plugin
    (``pytest_plugins``) would put its autouse fixtures (an event loop, a ServerApp cleanup)
    on every test of the suite.
    """
    sig = inspect.signature(test)
    params = list(sig.parameters.values())
    if "jp_asyncio_loop" not in sig.parameters:
        params.append(inspect.Parameter("jp_asyncio_loop", inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(test)
    def run(**fixtures):
        loop = fixtures["jp_asyncio_loop"]
        if "jp_asyncio_loop" not in sig.parameters:
            del fixtures["jp_asyncio_loop"]
        return loop.run_until_complete(test(**fixtures))

    run.__signature__ = sig.replace(parameters=params)
    return run


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"kernel_ext.lab": True}}}


@pytest.fixture
def cli_cluster(no_leaks):
    """A cluster started as a user does, with ``nbcluster start --head``; stopped afterwards."""
    out = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "start", "--head", "--port", "0", "--num-cpus", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    (info,) = cfg.list_clusters()
    assert info.head_address in out
    yield info
    subprocess.run([sys.executable, "-m", "runtime.cli", "stop", "--all"], capture_output=True, timeout=60)


async def get_json(jp_fetch, *parts, **kw):
    response = await jp_fetch("nbcluster", *parts, **kw)
    return json.loads(response.body) if response.body else None


def status_json(address: str) -> dict:
    """What `nbcluster status --json` says about the cluster at `address`."""
    out = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "status", "--json", "--address", address],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out)


# ---------------------------------------------------------------- installation
def test_server_and_lab_extensions_are_enabled_by_the_install():
    """`pip install` put the prebuilt front end and the server config where Jupyter looks."""
    lab = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True, text=True, timeout=120
    )
    server = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lab_lines = [line for line in (lab.stdout + lab.stderr).splitlines() if "nbcluster-labextension" in line]
    assert lab_lines and "enabled" in lab_lines[0] and "OK" in lab_lines[0], lab.stdout + lab.stderr
    server_lines = [
        line
        for line in (server.stdout + server.stderr).splitlines()
        if line.strip().startswith("kernel_ext.lab")
    ]
    assert any("enabled" in line for line in server_lines), server.stdout + server.stderr


# ---------------------------------------------------------------- authentication
def test_every_handler_verb_is_authenticated(jp_serverapp):
    from jupyter_server.serverapp import _has_tornado_web_authenticated
    from tornado import web

    from kernel_ext.lab import handlers

    def routed(router) -> list:
        """Every handler class reachable from a router (tornado nests one router per host)."""
        found = []
        for rule in router.rules:
            found += routed(rule.target) if hasattr(rule.target, "rules") else [rule.target]
        return found

    ours = [
        h
        for h in routed(jp_serverapp.web_app.default_router)
        if getattr(h, "__module__", "") == handlers.__name__
    ]
    assert {h.__name__ for h in ours} == {
        "ClustersHandler",
        "ClusterHandler",
        "EventsHandler",
        "RayClustersHandler",
        "RayClusterHandler",
    }
    checked = 0
    for handler in ours:
        for verb in handler.SUPPORTED_METHODS:
            method = getattr(handler, verb.lower())
            if method is web.RequestHandler._unimplemented_method:
                continue
            if hasattr(method, "__allow_unauthenticated"):  # public on purpose: only Jupyter's CORS preflight
                assert verb == "OPTIONS" and method.__module__ != handlers.__name__, (handler, verb)
                continue
            assert _has_tornado_web_authenticated(method), (
                f"{handler.__name__}.{verb.lower()} is not authenticated"
            )
            checked += 1
    assert checked == 8  # GET/POST clusters, GET/DELETE one, GET events, GET/POST ray, DELETE one


@in_loop
async def test_requests_without_a_token_are_refused(jp_fetch, cli_cluster):
    cid = cli_cluster.cluster_id
    no_token = {"Authorization": ""}
    for method, parts, body in [
        ("GET", ("clusters",), None),
        ("POST", ("clusters",), json.dumps({"num_cpus": 1})),
        ("GET", ("clusters", cid), None),
        ("DELETE", ("clusters", cid), None),
        ("GET", ("clusters", cid, "events"), None),
    ]:
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await jp_fetch("nbcluster", *parts, method=method, body=body, headers=no_token)
        assert refused.value.code == 403, (method, parts)
    assert [c.cluster_id for c in cfg.list_clusters()] == [cid]  # nothing started, nothing stopped
    assert cli_cluster.alive()


# ---------------------------------------------------------------- listing
@in_loop
async def test_list_shows_the_cli_cluster_with_the_snapshot_nbcluster_status_reads(jp_fetch, cli_cluster):
    data = await get_json(jp_fetch, "clusters")
    (card,) = data["clusters"]
    assert card["cluster_id"] == cli_cluster.cluster_id
    assert card["head_address"] == cli_cluster.head_address
    assert card["owner"]["kind"] == "detached"
    assert card["connect_code"] == f"%load_ext kernel_ext\n%cluster connect {cli_cluster.head_address}"
    assert card["error"] == ""
    summary = card["summary"]
    assert summary["nodes"] == 1 and summary["cpus_total"] == 2 and summary["cpus_used"] == 0
    assert summary["memory_total"] > 0 and summary["object_store_capacity"] > 0
    assert card["idle_seconds"] >= 0
    # the same record `nbcluster status --json` prints
    status = status_json(cli_cluster.head_address)
    assert status["cluster_id"] == card["snapshot"]["cluster_id"]
    ours = {n["node_id"]: n["resources_total"] for n in card["snapshot"]["nodes"]}
    theirs = {n["node_id"]: n["resources_total"] for n in status["nodes"]}
    assert ours == theirs
    one = await get_json(jp_fetch, "clusters", cli_cluster.cluster_id)
    assert one["cluster_id"] == cli_cluster.cluster_id and one["summary"]["cpus_total"] == 2


@in_loop
async def test_busy_cluster_shows_running_tasks_and_is_not_idle(jp_fetch, cli_cluster):
    ray = runtime
    ray.init(address=cli_cluster.head_address)

    @ray.remote
    def hold(seconds):
        time.sleep(seconds)
        return seconds

    idle = await get_json(jp_fetch, "clusters", cli_cluster.cluster_id)
    assert idle["summary"]["running"] == 0 and idle["summary"]["cpus_used"] == 0
    refs = [hold.remote(30) for _ in range(2)]
    deadline = time.monotonic() + 30
    while True:
        busy = await get_json(jp_fetch, "clusters", cli_cluster.cluster_id)
        if busy["summary"]["running"] == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert busy["summary"]["running"] == 2, busy["summary"]
    assert busy["summary"]["cpus_used"] == 2
    assert busy["idle_seconds"] == 0
    for ref in refs:
        ray.cancel(ref, force=True)
    ray.shutdown()


@in_loop
async def test_unknown_cluster_is_404(jp_fetch, cli_cluster):
    for method in ("GET", "DELETE"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as missing:
            await jp_fetch("nbcluster", "clusters", "00000000", method=method)
        assert missing.value.code == 404
    assert cli_cluster.alive()


# ---------------------------------------------------------------- acting
@in_loop
async def test_create_then_stop_leaves_nothing(jp_fetch, no_leaks):
    response = await jp_fetch(
        "nbcluster",
        "clusters",
        method="POST",
        body=json.dumps({"num_cpus": 1, "resources": {"alice": 2}, "memory": 2**30}),
    )
    assert response.code == 201
    made = json.loads(response.body)
    assert made["summary"]["cpus_total"] == 1
    assert made["summary"]["custom"] == {"alice": [0, 2]}
    assert made["summary"]["memory_reserved"] == 0
    (info,) = cfg.list_clusters()
    assert info.cluster_id == made["cluster_id"] and not info.embedded
    assert cfg.is_loopback(info.head_address.rpartition(":")[0])
    listed = await get_json(jp_fetch, "clusters")
    assert [c["cluster_id"] for c in listed["clusters"]] == [made["cluster_id"]]

    response = await jp_fetch("nbcluster", "clusters", made["cluster_id"], method="DELETE")
    assert response.code == 204
    assert not info.alive()
    assert cfg.list_clusters() == []
    assert (await get_json(jp_fetch, "clusters"))["clusters"] == []


@pytest.mark.parametrize(
    "body",
    [{"num_cpus": -1}, {"num_cpus": "two"}, {"resources": {"CPU": 2}}, {"resources": [1]}, {"memory": True}],
)
@in_loop
async def test_create_refuses_bad_sizes(jp_fetch, body):
    with pytest.raises(tornado.httpclient.HTTPClientError) as bad:
        await jp_fetch("nbcluster", "clusters", method="POST", body=json.dumps(body))
    assert bad.value.code == 400
    assert cfg.list_clusters() == []


@in_loop
async def test_a_kernels_cluster_names_its_notebook_and_stops_cleanly(jp_fetch, jp_serverapp, jp_root_dir):
    (jp_root_dir / "owner.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    session = json.loads(
        (
            await jp_fetch(
                "api",
                "sessions",
                method="POST",
                body=json.dumps({"path": "owner.ipynb", "type": "notebook", "kernel": {"name": "python3"}}),
            )
        ).body
    )
    kernel_id = session["kernel"]["id"]
    kc = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        reply = await kc.execute_interactive("%load_ext kernel_ext\n%cluster start -n 1", timeout=60)
        assert reply["content"]["status"] == "ok"
        (card,) = (await get_json(jp_fetch, "clusters"))["clusters"]
        assert card["embedded"]
        assert card["owner"]["kind"] == "kernel"
        assert card["owner"]["kernel_id"] == kernel_id
        assert card["owner"]["path"] == "owner.ipynb"
        assert card["summary"]["cpus_total"] == 1

        await jp_fetch("nbcluster", "clusters", card["cluster_id"], method="DELETE")
        assert cfg.list_clusters() == []
        # the kernel lives on, and learns its cluster is gone
        said = []
        await kc.execute_interactive(
            "import runtime\ntry:\n    runtime.nodes()\nexcept Exception as e:\n    print(type(e).__name__)",
            timeout=60,
            output_hook=lambda m: said.append(m["content"].get("text", "")),
        )
        assert "".join(said).strip(), "the kernel did not notice its cluster stopped"
        await kc.execute_interactive("%cluster stop", timeout=60)
    finally:
        kc.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")
    wait_for(lambda: kernel_id not in jp_serverapp.kernel_manager, timeout=30, what="the kernel to stop")


# ---------------------------------------------------------------- the task stream
@in_loop
async def test_events_name_the_functions_that_ran_as_runtime_timeline_does(jp_fetch, cli_cluster, tmp_path):
    ray = runtime
    ray.init(address=cli_cluster.head_address)

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def fails():
        raise ValueError("no")

    @ray.remote
    class Counter:
        def incr(self):
            return 1

    started = time.time()
    assert ray.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]
    counter = Counter.remote()
    ray.get(counter.incr.remote())
    with pytest.raises(ValueError):
        ray.get(fails.options(max_retries=0).remote())

    # a worker writes a task's event just after it sent the result: the last ones may lag a little
    expected = sorted(["square"] * 20 + ["Counter.incr", "fails"])
    for _ in range(300):
        data = await get_json(
            jp_fetch, "clusters", cli_cluster.cluster_id, "events", params={"since": started}
        )
        names = [e["name"] for e in data["events"]]
        if sorted(names) == expected:
            break
        await asyncio.sleep(0.1)
    assert names.count("square") == 20
    assert "Counter.incr" in names and "fails" in names
    assert [e["ok"] for e in data["events"] if e["name"] == "fails"] == [False]
    assert all(e["start"] <= e["end"] and e["worker"] > 0 and e["node"] for e in data["events"])
    later = await get_json(
        jp_fetch, "clusters", cli_cluster.cluster_id, "events", params={"since": data["now"]}
    )
    assert later["events"] == []

    trace = ray.timeline()
    assert sorted(e["name"] for e in trace) == sorted(names)
    assert {e["ph"] for e in trace} == {"X"}
    path = tmp_path / "trace.json"
    assert ray.timeline(str(path)) is None
    assert json.loads(path.read_text()) == trace
    ray.shutdown()


@pytest.fixture
def two_machines(no_leaks, tmp_path):
    """A head ("near": 1) and a node joined over TCP ("far": 1) whose runtime dir is another
    folder: its event files are where no reader of this test looks, as on another machine."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    nbcluster_checked("start", "--head", "--port", str(port), "--num-cpus", "1", "--resources", '{"near": 1}')
    (info,) = cfg.list_clusters()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, NBCLUSTER_DIR=str(elsewhere))
    cli = [sys.executable, "-m", "runtime.cli"]
    try:
        out = subprocess.run(
            [*cli, "start", "--address", address, "--token-file", str(info.path)]
            + ["--num-cpus", "1", "--resources", '{"far": 1}'],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        far = re.search(r"Node (\w+) joined", out.stdout).group(1)
        yield info, far, elsewhere
    finally:
        runtime.shutdown()
        subprocess.run([*cli, "stop", "--all"], capture_output=True, timeout=60, env=env)
        nbcluster("stop", "--all")
        # the far node is not this test's (no_leaks looks for its own NBCLUSTER_DIR): checked here
        wait_for(lambda: not ours(str(elsewhere)), timeout=30, what="the far node to stop")
        wait_for(lambda: not [p for p in elsewhere.glob("*") if p.is_dir()], timeout=10, what="its folder")


@in_loop
async def test_the_task_stream_shows_every_nodes_tasks_through_the_head(jp_fetch, two_machines):
    info, far, elsewhere = two_machines
    ray = runtime
    ray.init(address=info.head_address)

    @ray.remote(resources={"near": 1})
    def near_task():
        return ray.get_runtime_context().get_node_id()

    @ray.remote(resources={"far": 1})
    def far_task():
        return ray.get_runtime_context().get_node_id()

    started = time.time()
    near_nodes = set(ray.get([near_task.remote() for _ in range(5)]))
    far_nodes = set(ray.get([far_task.remote() for _ in range(5)]))
    assert far_nodes == {far} and len(near_nodes) == 1 and near_nodes != far_nodes
    (near,) = near_nodes

    # the far node's files are in its own folder, not where this machine's readers look
    wait_for(
        lambda: list((elsewhere / info.cluster_id / "timeline").glob(f"{far}-*.jsonl")),
        timeout=30,
        what="the far node's event files",
    )
    here = [p.name for p in timeline_module().folder(info.cluster_id).iterdir()]
    assert here and all(name.startswith(f"{near}-") for name in here)

    # the sidebar's handler: both nodes, each task with the node that ran it
    for _ in range(300):  # the far node's events reach the head with its next report (every second)
        data = await get_json(jp_fetch, "clusters", info.cluster_id, "events", params={"since": started})
        names = sorted(e["name"] for e in data["events"])
        if names == ["far_task"] * 5 + ["near_task"] * 5:
            break
        await asyncio.sleep(0.1)
    assert names == ["far_task"] * 5 + ["near_task"] * 5, names
    by_name = {e["name"]: e for e in data["events"]}
    assert {e["node"] for e in data["events"] if e["name"] == "far_task"} == {far}
    assert {e["node"] for e in data["events"] if e["name"] == "near_task"} == {near}
    assert by_name["far_task"]["host"] and by_name["far_task"]["worker"] > 0
    assert all(e["start"] <= e["end"] for e in data["events"])

    # runtime.timeline(): the same tasks, a row group per node
    trace = ray.timeline()
    assert sorted(e["name"] for e in trace) == names
    assert {e["pid"] for e in trace if e["name"] == "far_task"} == {f"node {far}"}

    # %cluster status's stream (the runtime engine) reads the same
    from kernel_ext import engines

    seen = sorted(e["name"] for e in engines.get("runtime").task_events(started))
    assert seen == names


def timeline_module():
    # `runtime.timeline` is the function (as `ray.timeline`); the module is reached by its full name
    return importlib.import_module("runtime.timeline")


def test_timeline_needs_a_cluster():
    with pytest.raises(runtime.exceptions.NotInitializedError):
        runtime.timeline()


def test_timeline_files_rotate_and_stay_readable(no_leaks, monkeypatch):
    # `runtime.timeline` is the function (as `ray.timeline`); the module is reached by its full name
    timeline = importlib.import_module("runtime.timeline")
    monkeypatch.setattr(timeline, "ROTATE_LINES", 10)
    (Path(no_leaks) / "feedbeef").mkdir()  # the cluster's folder (the head makes it)
    recorder = timeline.Recorder("feedbeef", "n1", 4242)
    for i in range(25):
        recorder.record(f"f{i}", 1000.0 + i, 1000.5 + i, True)
    files = sorted(p.name for p in timeline.folder("feedbeef").iterdir())
    assert files == ["n1-4242.jsonl", "n1-4242.jsonl.1"]
    events = timeline.task_events("feedbeef")
    assert [e["name"] for e in events] == [f"f{i}" for i in range(10, 25)]  # the oldest rotated out
    assert {e["worker"] for e in events} == {4242}
    assert [e["name"] for e in timeline.task_events("feedbeef", since=1020.6)] == ["f21", "f22", "f23", "f24"]
    shutil.rmtree(Path(no_leaks) / "feedbeef")


def test_a_node_reads_each_of_its_workers_events_once_across_rotations(no_leaks, monkeypatch):
    from runtime.node.events import EventTail

    timeline = timeline_module()
    monkeypatch.setattr(timeline, "ROTATE_LINES", 10)
    (Path(no_leaks) / "feedbeef").mkdir()
    mine, other = timeline.Recorder("feedbeef", "n1", 4242), timeline.Recorder("feedbeef", "n2", 77)
    tail = EventTail(timeline.folder("feedbeef"), "n1")
    got = []
    for i in range(25):  # read after every 7 tasks: across the rotations at 10 and 20 lines
        mine.record(f"f{i}", 1000.0 + i, 1000.5 + i, i != 3)
        other.record(f"g{i}", 1000.0 + i, 1000.5 + i, True)
        if i % 7 == 6:
            got += tail.take()
    got += tail.take()
    assert [e[0] for e in got] == [f"f{i}" for i in range(25)]  # each once, in order; n2's not
    assert {e[5] for e in got} == {4242} and [e[3] for e in got].count(False) == 1
    assert tail.take() == []
    shutil.rmtree(Path(no_leaks) / "feedbeef")


# ---------------------------------------------------------------- the in-notebook views' look
def test_status_view_draws_bars_sparklines_and_the_task_stream(ray):
    from kernel_ext.status_view import StatusView

    @ray.remote
    def sample(i):
        return i

    ray.get([sample.remote(i) for i in range(5)])
    view = StatusView(display=False)
    try:
        wait_for(lambda: len(view.history.get(f"{view.snap.nodes[0].node_id}:cpu")) >= 3, timeout=30)
        html = view.html()
    finally:
        view.stop()
    assert html.count("class='nbc-bar'") == 2  # CPU and memory of the one node
    assert html.count("class='nbc-sparkline'") == 2
    assert "sample ×5" in html  # the task stream's legend
    assert "nbcluster-open-panel" in html  # the link to the sidebar
    # headers and values share their alignment: every numeric column is right-aligned in both
    header_row, value_row = html.split("<tr>")[1:3]
    aligned = [c.split("text-align:")[1].split(";")[0] for c in header_row.split("<th")[1:]]
    assert aligned == [c.split("text-align:")[1].split(";")[0] for c in value_row.split("<td")[1:]]
    assert "CPU" in view._bundle()["text/plain"]  # the text fallback is `nbcluster status`'s table


def test_progress_label_shows_count_rate_and_eta_without_a_second_bar(ray):
    from kernel_ext.progress import ProgressView

    view = ProgressView(lambda: (40, 40, ""), "sampling", display=False)
    wait_for(lambda: view.finished_at is not None, timeout=30, what="the bar to finish")
    label = view.label.value
    assert label.startswith("40/40 · ") and "it/s" in label and "<" in label, label
    assert "█" not in label and "|" not in label and "sampling" not in label
    assert "sampling: 100%|" in view.text()  # the text fallback keeps tqdm's line
    assert view.bar.layout.flex == "1 1 auto"  # the bar gives way: the label is never cut off


@in_loop
async def test_a_status_view_stops_cleanly_when_the_panel_stops_its_cluster(jp_fetch, cli_cluster):
    from kernel_ext.status_view import StatusView

    runtime.init(address=cli_cluster.head_address)
    view = StatusView(display=False)
    await jp_fetch("nbcluster", "clusters", cli_cluster.cluster_id, method="DELETE")
    await asyncio.to_thread(wait_for, lambda: not view.thread.is_alive(), 60, 0.05, "the view to stop")
    assert "the cluster is gone" in view.widget.value
    assert "CPU" in view._bundle()["text/plain"]  # the last state stays readable
    view.stop()
    runtime.shutdown()
