"""The Clusters sidebar in a real JupyterLab and a real Notebook 7, in headless Chromium.

A cluster from ``nbcluster start --head`` and one from a kernel's ``%cluster start`` appear
in the panel; its CPU numbers move while tasks run; Connect makes the active kernel run
tasks there; the task stream names them; Insert (and dragging a card) adds the connecting
cell; Stop stops (asking first for a kernel's cluster) and leaves no process; the Idle finder
stops clusters without work; the panel survives a reload; when the server goes away the
panel stops polling and says so once. A Ray cluster added by address gets a card; Connect
attaches the kernel to it with the Ray engine; Remove forgets it and never stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for
from jupyter_app import browser, server, write_notebook
from ray_cluster import outside_cluster

from kernel_ext.lab import ray_clusters
from runtime import config as cfg

ROOT = Path(__file__).resolve().parent.parent
SIDEBAR = "#nbcluster-sidebar"
CELLS = [
    "import runtime as ray, time\n"
    "@ray.remote\n"
    "def crunch(i):\n"
    "    time.sleep(3)\n"
    "    return i\n"
    "print('sum', sum(ray.get([crunch.remote(i) for i in range(4)])))",
    "%load_ext kernel_ext\n%cluster disconnect\n%cluster start -n 1",
]


@pytest.fixture
def cli_cluster(no_leaks):
    subprocess.run(
        [sys.executable, "-m", "runtime.cli", "start", "--head", "--port", "0", "--num-cpus", "2"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    (info,) = cfg.list_clusters()
    yield info
    subprocess.run([sys.executable, "-m", "runtime.cli", "stop", "--all"], capture_output=True, timeout=60)


@pytest.fixture
def jupyter_env(tmp_path, monkeypatch):
    """Settings and workspaces of the test's server in its own folder, not the user's."""
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "settings"))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(tmp_path / "workspaces"))
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / "panel.ipynb", CELLS)
    return root


def card(cluster_id: str) -> str:
    return f'{SIDEBAR} .nbc-cluster[data-cluster-id="{cluster_id}"]'


def run_cell(page, index: int) -> None:
    page.click(f".jp-Notebook .jp-Cell >> nth={index}")
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Enter")


def kernel_idle(app) -> bool:
    try:
        kernels = app.api("GET", "api/kernels")
    except OSError:  # the server is busy starting it
        return False
    return bool(kernels) and kernels[0]["execution_state"] == "idle"


def kernel_cluster(cli_id: str) -> cfg.ConnectionInfo | None:
    return next((c for c in cfg.list_clusters() if c.cluster_id != cli_id), None)


def test_sidebar_in_jupyterlab(cli_cluster, jupyter_env, no_leaks):
    cli = cli_cluster
    shots = Path(os.environ.get("NBCLUSTER_SCREENSHOTS", jupyter_env.parent / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    with server("jupyterlab", jupyter_env, no_leaks) as lab, browser() as chromium:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        console = []
        page.on("console", lambda m: console.append(m.text))
        page.goto(f"{lab.url}/lab/tree/panel.ipynb?token={lab.token}")
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
        page.wait_for_selector("text=| Idle", timeout=60_000)  # the kernel is up
        page.click('.jp-SideBar .lm-TabBar-tab[data-id="nbcluster-sidebar"]')

        # the CLI's cluster is listed, idle
        page.wait_for_selector(card(cli.cluster_id), timeout=30_000)
        assert cli.head_address in page.inner_text(card(cli.cluster_id))
        assert page.get_attribute(f"{card(cli.cluster_id)} .nbc-stat-cpus", "data-value") == "0"

        # Connect: the notebook's kernel attaches; its tasks run there and the numbers move
        page.click(".jp-Notebook .jp-Cell >> nth=0")
        page.click(f'{card(cli.cluster_id)} [data-action="connect"]')
        page.wait_for_selector(f"text=is connected to {cli.head_address}", timeout=60_000)
        run_cell(page, 0)
        seen = set()

        def cpus_busy() -> bool:
            seen.add(page.get_attribute(f"{card(cli.cluster_id)} .nbc-stat-cpus", "data-value"))
            return "2" in seen

        wait_for(cpus_busy, timeout=60, interval=0.2, what="the panel to show 2 CPUs in use")
        page.wait_for_selector("text=sum 6", timeout=60_000)
        # the task stream names the function, with the count that ran
        page.wait_for_selector(
            f'{card(cli.cluster_id)} .nbc-taskstream-name[data-name="crunch"]:has-text("×4")', timeout=30_000
        )
        assert (
            page.locator(f'{card(cli.cluster_id)} .nbc-taskstream-chart rect[data-name="crunch"]').count()
            == 4
        )
        # its lanes are labelled with the node that ran them
        lanes = page.locator(f"{card(cli.cluster_id)} .nbc-taskstream-lane")
        assert lanes.count() == 1
        node = lanes.get_attribute("data-node")
        assert f"node-{node}.sock" in cli.node_address and lanes.inner_text() == node[:8]
        rects = page.locator(f'{card(cli.cluster_id)} .nbc-taskstream-chart rect[data-name="crunch"]')
        assert {rects.nth(i).get_attribute("data-node") for i in range(4)} == {node}
        sparks = page.get_attribute(f"{card(cli.cluster_id)} .nbc-spark-cpu", "data-values")
        assert len(sparks.split(",")) >= 2  # a history, not one value

        # a kernel's own cluster appears, marked with its notebook
        run_cell(page, 1)
        page.wait_for_selector(".nbcluster-cluster", timeout=60_000)  # the widget in the notebook
        owned = wait_for(lambda: kernel_cluster(cli.cluster_id), timeout=30, what="the kernel's cluster")
        page.wait_for_selector(card(owned.cluster_id), timeout=30_000)
        assert page.inner_text(f"{card(owned.cluster_id)} .nbc-owner-path") == "panel.ipynb"
        page.locator(SIDEBAR).screenshot(path=str(shots / "panel-light.png"))

        # reload in the dark theme: the panel comes back open, by itself, with both clusters
        lab.api(
            "PUT",
            "lab/api/settings/@jupyterlab/apputils-extension:themes",
            {"raw": '{"theme": "JupyterLab Dark"}'},
        )
        # and with every cluster without work counted as idle (the Idle finder's threshold)
        lab.api("PUT", "lab/api/settings/nbcluster-labextension:plugin", {"raw": '{"idleMinutes": 0}'})
        page.reload()
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
        page.wait_for_selector(card(owned.cluster_id), timeout=30_000)
        page.wait_for_selector(card(cli.cluster_id), timeout=30_000)
        assert page.is_visible(SIDEBAR)
        assert page.get_attribute("body", "data-jp-theme-light") == "false"
        page.wait_for_selector(f"{card(cli.cluster_id)} .nbc-spark-cpu", timeout=30_000)
        page.locator(SIDEBAR).screenshot(path=str(shots / "panel-dark.png"))

        # Insert: a cell with the code that connects
        page.click(".jp-Notebook .jp-Cell >> nth=0")
        page.keyboard.press("Escape")
        cells = page.locator(".jp-Notebook .jp-Cell").count()
        page.click(f'{card(cli.cluster_id)} [data-action="insert"]')
        wait_for(lambda: page.locator(".jp-Notebook .jp-Cell").count() == cells + 1, what="a new cell")
        assert f"%cluster connect {cli.head_address}" in page.inner_text(".jp-Notebook .jp-Cell >> nth=1")
        # ... or drag the card into the notebook
        source = page.locator(f"{card(cli.cluster_id)} .nbc-cluster-header").bounding_box()
        target = page.locator(".jp-Notebook .jp-Cell >> nth=-1").bounding_box()
        page.mouse.move(source["x"] + 20, source["y"] + source["height"] / 2)
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(
                source["x"] + 20 + (target["x"] + 60 - source["x"] - 20) * step / 10,
                source["y"] + (target["y"] + target["height"] / 2 - source["y"]) * step / 10,
            )
        page.mouse.up()
        wait_for(lambda: page.locator(".jp-Notebook .jp-Cell").count() == cells + 2, what="the dropped cell")
        dropped = [
            i
            for i in range(cells + 2)
            if f"%cluster connect {cli.head_address}" in page.inner_text(f".jp-Notebook .jp-Cell >> nth={i}")
        ]
        assert len(dropped) == 2, dropped

        # Stop the kernel's cluster: asked first, then gone with every process
        page.click(f'{card(owned.cluster_id)} [data-action="stop"]')
        page.wait_for_selector(".jp-Dialog >> text=started by the kernel of panel.ipynb", timeout=10_000)
        page.click(".jp-Dialog .jp-mod-accept")
        page.wait_for_selector(card(owned.cluster_id), state="detached", timeout=30_000)
        assert not owned.alive()

        # the Idle finder lists the CLI's cluster (no work, nobody owns it) and stops it
        page.wait_for_selector(f'{SIDEBAR} [data-action="stop-idle"]:has-text("Idle (1)")', timeout=30_000)
        page.click(f'{SIDEBAR} [data-action="stop-idle"]')
        page.wait_for_selector(f".jp-Dialog >> text={cli.head_address}: idle", timeout=10_000)
        page.click(".jp-Dialog .jp-mod-accept")
        page.wait_for_selector(card(cli.cluster_id), state="detached", timeout=30_000)
        assert not cli.alive()
        assert cfg.list_clusters() == []
        page.wait_for_selector(f"{SIDEBAR} >> text=No cluster is running", timeout=10_000)

        # the server goes away: the panel stops polling, and says so once
        asked = []
        page.on("request", lambda r: asked.append(r.url) if "/nbcluster/" in r.url else None)
        lab.stop()
        page.wait_for_selector(f"{SIDEBAR} .nbc-status-gone", timeout=120_000)
        after = len(asked)
        time.sleep(5)
        assert len(asked) == after, asked[after:]
        assert sum("the Clusters panel stopped polling" in m for m in console) == 1
    for name in ("panel-light.png", "panel-dark.png"):
        assert (shots / name).stat().st_size > 5_000


def test_screenshots_in_the_readme_exist():
    readme = (ROOT / "README.md").read_text()
    for name in ("docs/img/panel-light.png", "docs/img/panel-dark.png"):
        assert name in readme
        assert (ROOT / name).is_file() and (ROOT / name).stat().st_size < 300_000


def test_sidebar_in_notebook_7(cli_cluster, jupyter_env, no_leaks):
    """Notebook 7 has no lab shell: the panel still loads, opens from the cluster widget's link,
    lists both clusters, inserts the connecting cell, stops the kernel's cluster, and starts
    one from the New form."""
    cli = cli_cluster
    with server("notebook", jupyter_env, no_leaks) as nb7, browser() as chromium:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{nb7.url}/notebooks/panel.ipynb?token={nb7.token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        wait_for(lambda: kernel_idle(nb7), timeout=60, interval=0.2, what="the kernel to be ready")
        run_cell(page, 1)  # %cluster start
        page.wait_for_selector(".nbcluster-cluster .nbcluster-open-panel", timeout=60_000)
        owned = wait_for(lambda: kernel_cluster(cli.cluster_id), timeout=30, what="the kernel's cluster")
        assert not page.is_visible(SIDEBAR)
        page.click(".nbcluster-cluster .nbcluster-open-panel")  # the widget links to the panel
        page.wait_for_selector(card(owned.cluster_id), timeout=30_000)
        page.wait_for_selector(card(cli.cluster_id), timeout=30_000)
        assert page.inner_text(f"{card(owned.cluster_id)} .nbc-owner-path") == "panel.ipynb"

        cells = page.locator(".jp-Notebook .jp-Cell").count()
        page.click(".jp-Notebook .jp-Cell >> nth=0")
        page.click(f'{card(cli.cluster_id)} [data-action="insert"]')
        wait_for(lambda: page.locator(".jp-Notebook .jp-Cell").count() == cells + 1, what="a new cell")
        assert f"%cluster connect {cli.head_address}" in page.inner_text(".jp-Notebook .jp-Cell >> nth=1")

        page.click(f'{card(owned.cluster_id)} [data-action="stop"]')
        page.click(".jp-Dialog .jp-mod-accept")
        page.wait_for_selector(card(owned.cluster_id), state="detached", timeout=30_000)
        assert not owned.alive()
        assert [c.cluster_id for c in cfg.list_clusters()] == [cli.cluster_id]

        # New: the form sizes a cluster; it appears with what was asked for
        page.click(f'{SIDEBAR} [data-action="new"]')
        page.fill('.jp-Dialog input[name="num_cpus"]', "1")
        page.fill('.jp-Dialog input[name="resources"]', "alice=2, bob=0.5")
        page.click(".jp-Dialog .jp-mod-accept")
        made = wait_for(lambda: kernel_cluster(cli.cluster_id), timeout=60, what="the new cluster")
        assert not made.embedded  # lives until stopped, as `nbcluster start --head`
        page.wait_for_selector(f"{card(made.cluster_id)} .nbc-stat-res-alice", timeout=30_000)
        assert page.inner_text(f"{card(made.cluster_id)} .nbc-stat-cpus .nbc-stat-value") == "0/1"
        assert page.inner_text(f"{card(made.cluster_id)} .nbc-stat-res-bob .nbc-stat-value") == "0/0.5"
        page.click(f'{card(made.cluster_id)} [data-action="stop"]')
        page.wait_for_selector(card(made.cluster_id), state="detached", timeout=30_000)
        assert not made.alive()


@pytest.fixture
def ray_outside(tmp_path_factory):
    with outside_cluster(str(tmp_path_factory.mktemp("raypanel")), 2, {"alice": 2}) as cluster:
        yield cluster


@pytest.mark.timeout(900)  # `ray start` alone takes minutes on a loaded 2-core machine
def test_a_ray_cluster_added_by_address(ray_outside, jupyter_env, no_leaks, monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))  # the list of added clusters
    ray = ray_outside
    write_notebook(
        jupyter_env / "ray.ipynb",
        [
            "import ray\n"
            "@ray.remote\n"
            "def ray_probe():\n"
            "    return 1\n"
            "print('alice', ray.cluster_resources().get('alice'), 'probe', ray.get(ray_probe.remote()))"
        ],
    )
    ray_card = card(ray_clusters.cluster_id(ray.address))
    with server("jupyterlab", jupyter_env, no_leaks) as lab, browser() as chromium:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{lab.url}/lab/tree/ray.ipynb?token={lab.token}")
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
        page.wait_for_selector("text=| Idle", timeout=60_000)
        page.click('.jp-SideBar .lm-TabBar-tab[data-id="nbcluster-sidebar"]')

        # Add Ray: the form takes the GCS address and the token
        page.click(f'{SIDEBAR} [data-action="add-ray"]')
        page.fill('.jp-Dialog input[name="address"]', ray.address)
        page.fill('.jp-Dialog input[name="token"]', ray.token)
        page.click(".jp-Dialog .jp-mod-accept")
        page.wait_for_selector(f'{ray_card}[data-engine="ray"]', timeout=180_000)
        assert ray.address in page.inner_text(ray_card)
        page.wait_for_selector(f"{ray_card} .nbc-stat-cpus", timeout=60_000)
        assert page.inner_text(f"{ray_card} .nbc-stat-cpus .nbc-stat-value") == "0/2"
        assert page.inner_text(f"{ray_card} .nbc-stat-res-alice .nbc-stat-value") == "0/2"
        assert page.locator(f'{ray_card} [data-action="stop"]').count() == 0  # not ours to stop
        assert page.locator(f'{ray_card} [data-action="remove"]').count() == 1

        # Connect: the active kernel joins the Ray cluster with the Ray engine
        page.click(".jp-Notebook .jp-Cell >> nth=0")
        page.click(f'{ray_card} [data-action="connect"]')
        run_cell(page, 0)  # runs after the connect code (the kernel takes requests in order)
        page.wait_for_selector("text=alice 2.0 probe 1", timeout=180_000)  # the cluster's own resource
        # the task that ran is in the card's task stream (from Ray's dashboard), in its node's lane
        page.wait_for_selector(f'{ray_card} .nbc-taskstream-name[data-name="ray_probe"]', timeout=60_000)
        assert page.locator(f"{ray_card} .nbc-taskstream-lane").count() >= 1

        # Insert: the connecting cell, with the token's file (never the token itself)
        page.click(".jp-Notebook .jp-Cell >> nth=0")
        page.keyboard.press("Escape")
        cells = page.locator(".jp-Notebook .jp-Cell").count()
        page.click(f'{ray_card} [data-action="insert"]')
        wait_for(lambda: page.locator(".jp-Notebook .jp-Cell").count() == cells + 1, what="a new cell")
        inserted = page.inner_text(".jp-Notebook .jp-Cell >> nth=1")
        assert f"%cluster connect {ray.address} --engine ray --token-file" in inserted
        assert ray.token not in inserted

        # Remove: off the list; the Ray cluster keeps running
        page.click(f'{ray_card} [data-action="remove"]')
        page.wait_for_selector(ray_card, state="detached", timeout=30_000)
        assert ray.alive()
        assert ray_clusters.RayClusters(tmp_path / "data" / "nbcluster").list() == []
