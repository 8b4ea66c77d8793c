"""Ray clusters added to the sidebar by address: the REST handlers in a real Jupyter server
against a real Ray cluster (``ray start --head`` with token auth, outside the server)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import tornado
from pytest_jupyter.jupyter_server import *  # noqa: F403 - jp_fetch and the server it needs
from ray_cluster import free_port, outside_cluster
from test_lab import get_json, in_loop, jp_server_config  # noqa: F401 - fixtures

from kernel_ext.lab import ray_clusters

# `ray start` alone takes minutes on a loaded 2-core machine (it retries a missed startup window)
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    with outside_cluster(str(tmp_path_factory.mktemp("raylab")), 2, {"alice": 2}) as cluster:
        yield cluster


@pytest.fixture
def driver(outside):
    """A Ray driver (a script, as a user's) that keeps 2 tasks running, 1 pending and 1 actor."""
    code = textwrap.dedent("""
        import sys, threading, ray
        ray.init(address=sys.argv[1], logging_level="ERROR")

        @ray.remote(num_cpus=1)
        def busy():
            threading.Event().wait()

        @ray.remote(num_cpus=0)
        class Keeper:
            def ping(self):
                return 1

        keeper = Keeper.remote()
        ray.get(keeper.ping.remote())
        refs = [busy.remote() for _ in range(3)]
        print("submitted", flush=True)
        sys.stdin.read()  # until the test closes it
    """)
    env = dict(outside.env)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, outside.address],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "submitted"
    yield proc
    proc.stdin.close()
    proc.wait(60)


async def post_ray(jp_fetch, body: dict):
    return await jp_fetch("nbcluster", "ray", method="POST", body=json.dumps(body))


async def refused(jp_fetch, *parts, **kw) -> tornado.httpclient.HTTPClientError:
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("nbcluster", *parts, **kw)
    return e.value


def message(error: tornado.httpclient.HTTPClientError) -> str:
    return json.loads(error.response.body)["message"]


@in_loop
async def test_a_ray_cluster_is_added_described_connected_to_and_forgotten(jp_fetch, outside, driver):
    info = await get_json(jp_fetch, "ray")
    assert info["installed"] is True and info["install"] == 'pip install "nbcluster[ray]"'
    assert info["clusters"] == []

    # clear refusals: a wrong address, nobody there, no token
    bad = await refused(jp_fetch, "ray", method="POST", body=json.dumps({"address": "ray://x:1"}))
    assert bad.code == 400 and "is not a Ray GCS address" in message(bad)
    nobody = free_port()
    bad = await refused(jp_fetch, "ray", method="POST", body=json.dumps({"address": f"127.0.0.1:{nobody}"}))
    assert bad.code == 400 and f"no Ray cluster answers at 127.0.0.1:{nobody}" in message(bad)
    bad = await refused(jp_fetch, "ray", method="POST", body=json.dumps({"address": outside.address}))
    assert bad.code == 400 and "token" in message(bad)
    assert (await get_json(jp_fetch, "ray"))["clusters"] == []

    response = await post_ray(jp_fetch, {"address": outside.address, "token": outside.token})
    assert response.code == 201
    card = json.loads(response.body)
    cid = card["cluster_id"]
    assert cid.startswith("ray-") and card["engine"] == "ray" and card["owner"]["kind"] == "ray"
    assert card["head_address"] == outside.address and card["error"] == ""

    # remembered in the user's Jupyter data dir; the token apart, readable by its owner only
    store = ray_clusters.store_dir()
    saved = json.loads((store / "ray-clusters.json").read_text())
    assert [c["address"] for c in saved["clusters"]] == [outside.address]
    assert outside.token not in (store / "ray-clusters.json").read_text()
    token_file = store / "ray-tokens" / cid
    assert token_file.read_text() == outside.token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert card["connect_code"] == (
        f"%load_ext kernel_ext\n%cluster connect {outside.address} --engine ray --token-file {token_file}"
    )

    # listed with the others, with the numbers of the same ClusterSnapshot record
    deadline = time.monotonic() + 60
    while True:
        listed = (await get_json(jp_fetch, "clusters"))["clusters"]
        (card,) = [c for c in listed if c["cluster_id"] == cid]
        s = card["summary"]
        # Tasks and resources come from different endpoints of Ray's dashboard, refreshed
        # apart: wait until both show the driver's work.
        settled = s and s["running"] == 2 and s["pending"] == 1 and s["actors"] == 1 and s["cpus_used"] == 2
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert s["running"] == 2 and s["pending"] == 1 and s["actors"] == 1, s
    assert s["nodes"] == 1 and s["cpus_total"] == 2 and s["cpus_used"] == 2
    assert s["custom"] == {"alice": [0, 2]}
    assert s["memory_total"] > 0 and s["object_store_capacity"] > 0
    assert card["idle_seconds"] == 0
    assert card["snapshot"]["nodes"][0]["running"] == {"busy": 2}
    one = await get_json(jp_fetch, "clusters", cid)
    assert one["cluster_id"] == cid
    # the task stream lists finished tasks only: the running ones are not in it
    events = (await get_json(jp_fetch, "clusters", cid, "events"))["events"]
    assert "busy" not in {e["name"] for e in events}

    # Stop never touches it; Remove forgets it and it keeps running
    stop = await refused(jp_fetch, "clusters", cid, method="DELETE")
    assert stop.code == 409 and "remove it" in message(stop)
    assert outside.alive()
    response = await jp_fetch("nbcluster", "ray", cid, method="DELETE")
    assert response.code == 204
    assert [c for c in (await get_json(jp_fetch, "clusters"))["clusters"] if c["cluster_id"] == cid] == []
    assert not token_file.exists()
    assert outside.alive()
    gone = await refused(jp_fetch, "ray", cid, method="DELETE")
    assert gone.code == 404


@in_loop
async def test_a_ray_clusters_task_stream_lists_the_tasks_that_ran(jp_fetch, outside):
    code = textwrap.dedent("""
        import sys, ray
        ray.init(address=sys.argv[1], logging_level="ERROR")

        @ray.remote
        def stream_probe(i):
            return i

        @ray.remote(max_retries=0)
        def stream_fails():
            raise ValueError("no")

        assert ray.get([stream_probe.remote(i) for i in range(4)]) == [0, 1, 2, 3]
        try:
            ray.get(stream_fails.remote())
        except ray.exceptions.RayTaskError:
            pass
        print("done", flush=True)
        sys.stdin.read()  # alive until the test has read the stream: its task events are sent
    """)
    started = time.time()
    driver = subprocess.Popen(
        [sys.executable, "-c", code, outside.address],
        env=dict(outside.env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    cid = ""
    try:
        assert driver.stdout.readline().strip() == "done"
        response = await post_ray(jp_fetch, {"address": outside.address, "token": outside.token})
        cid = json.loads(response.body)["cluster_id"]
        # Ray's dashboard hears of finished tasks about a second late; the server caches its answer
        deadline = time.monotonic() + 120
        while True:
            data = await get_json(jp_fetch, "clusters", cid, "events", params={"since": started - 1})
            mine = [e for e in data["events"] if e["name"] in ("stream_probe", "stream_fails")]
            names = sorted(e["name"] for e in mine)
            if names == ["stream_fails"] + ["stream_probe"] * 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert names == ["stream_fails"] + ["stream_probe"] * 4, data["events"]
        assert [e["ok"] for e in mine if e["name"] == "stream_fails"] == [False]
        card = await get_json(jp_fetch, "clusters", cid)
        (node,) = [n["node_id"] for n in card["snapshot"]["nodes"]]
        assert {e["node"] for e in mine} == {node}  # the card's node: the lane is labelled with it
        assert all(e["worker"] > 0 and started - 1 <= e["start"] <= e["end"] for e in mine)
        later = await get_json(jp_fetch, "clusters", cid, "events", params={"since": data["now"]})
        assert not [e for e in later["events"] if e["name"] in ("stream_probe", "stream_fails")]
    finally:
        driver.stdin.close()
        driver.wait(60)
        if cid:
            await jp_fetch("nbcluster", "ray", cid, method="DELETE")


@in_loop
async def test_an_unreachable_ray_cluster_shows_as_such_and_can_be_removed(jp_fetch, outside):
    # added when it answered (a real add), then its address stops answering: as after the
    # cluster was stopped, the remembered entry points at a port nobody listens on
    response = await post_ray(jp_fetch, {"address": outside.address, "token": outside.token})
    cid = json.loads(response.body)["cluster_id"]
    store = ray_clusters.RayClusters()
    (entry,) = store.list()
    nobody = f"127.0.0.1:{free_port()}"
    entry.address, entry.cluster_id, entry.dashboard = (
        nobody,
        ray_clusters.cluster_id(nobody),
        "http://" + nobody,
    )
    store._save([entry])
    os.rename(store.token_path(cid), store.token_path(entry.cluster_id))

    for _ in range(3):  # polled again and again: the same line, no error response
        (card,) = (await get_json(jp_fetch, "clusters"))["clusters"]
        assert card["error"].startswith(f"unreachable: no Ray cluster answers at {nobody}"), card
        assert card["summary"] is None
    response = await jp_fetch("nbcluster", "ray", entry.cluster_id, method="DELETE")
    assert response.code == 204
    assert (await get_json(jp_fetch, "clusters"))["clusters"] == []
    assert outside.alive()


def test_a_ray_address_must_be_host_and_port():
    for wrong in ("", "host", "ray://h:1", "h:port", "h:99999"):
        with pytest.raises(ray_clusters.RayClusterError, match="host:port"):
            ray_clusters.check_address(wrong)
    assert ray_clusters.check_address(" 10.0.0.5:6379 ") == "10.0.0.5:6379"
