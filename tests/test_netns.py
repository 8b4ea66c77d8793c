"""Machines with their own addresses: each node, and the notebook, in its own network namespace.

The head listens on its machine's address (not loopback), so traffic is
encrypted with CurveZMQ; the other machines only have a copy of the
connection file, as a user would scp it. Each machine has its own runtime
folder. Namespaces share the filesystem and /dev/shm (see tests/netns.py),
so these tests check network locality only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from kernel_harness import Kernel
from netns import Machines, netns_available

REASON = netns_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"network namespaces unavailable: {REASON}")
PORT = 6380


def cli(m: Machines, i: int, env: dict, *args: str) -> subprocess.CompletedProcess:
    out = m.run(
        i, [sys.executable, "-m", "runtime.cli", *args], env=env, capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def run_driver(m: Machines, i: int, env: dict, source: str, *args: str) -> dict:
    """Run a driver script on machine `i`; the JSON of its last line."""
    out = m.run(
        i, [sys.executable, "-c", source, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def cluster_on(base: Path, n: int, head_args: list[str], nodes: dict[int, dict]):
    """`n` machines, each with its own runtime folder: a head on machine 0 (`head_args` added to
    its `start`), and a node with these resources on each machine in `nodes`, which only get a
    copy of the connection file. Yields (machines, envs, head address, key file, each start's
    output); stops everything and checks that no process is left."""
    envs = []
    for i in range(n):
        d = base / f"machine{i}"
        d.mkdir()
        envs.append(dict(os.environ, NBCLUSTER_DIR=str(d)))
    with Machines(n) as m:
        head = f"{m.ips[0]}:{PORT}"
        key_file = base / "cluster.key"  # the copy the other machines get
        try:
            out = cli(m, 0, envs[0], "start", "--head", "--host", m.ips[0], "--port", str(PORT), *head_args)
            conn = re.search(r"Connection file \(holds the key\): (\S+)", out.stdout).group(1)
            shutil.copyfile(conn, key_file)
            key_file.chmod(0o600)
            outs = {0: out}
            for i, res in nodes.items():
                outs[i] = cli(
                    m, i, envs[i], "start", "--address", head, "--token-file", str(key_file),
                    "--num-cpus", "2", "--resources", json.dumps(res),
                )  # fmt: skip
            yield m, envs, head, key_file, outs
        finally:
            m.run(
                0, [sys.executable, "-m", "runtime.cli", "stop"], env=envs[0], capture_output=True, timeout=90
            )
            for i in range(n):
                wait_for(lambda i=i: not m.pids(i), 30, what=f"machine {i} to have no process left")
    for i in range(n):
        shutil.rmtree(base / f"machine{i}")


@pytest.fixture
def machines(no_leaks):
    """Four machines: 0 runs the head (5 CPUs, bob), 1 alice, 2 ming1/ming2, 3 only a notebook."""
    head_args = [
        "--num-cpus",
        "5",
        "--resources",
        '{"bob": 5}',
        "--gateway-port",
        "7000",
    ]  # fixed, for a firewall
    with cluster_on(Path(no_leaks), 4, head_args, {1: {"alice": 2}, 2: {"ming1": 1, "ming2": 1}}) as (
        m, envs, head, key_file, outs,
    ):  # fmt: skip
        assert "encrypted with CurveZMQ" in outs[0].stdout and "--token-file" in outs[0].stdout
        for i in (1, 2):
            assert f"tcp://{m.ips[i]}:" in outs[i].stdout
        yield m, envs, head, key_file


COUNTER = """
@ray.remote(resources={"alice": 1})
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n, ray.get_runtime_context().get_node_id()
"""

DRIVER = """
import json, sys
import numpy as np
import runtime as ray

ray.init(address=sys.argv[1], token=sys.argv[2])

@ray.remote
def where(x=None):
    return ray.get_runtime_context().get_node_id(), None if x is None else float(np.asarray(x).sum())

{counter}
nodes = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
ran = {}
for label, res in [("bob", {"bob": 1}), ("alice", {"alice": 1}), ("ming1", {"ming1": 1}), ("ming2", {"ming2": 1})]:
    ran[label] = sorted({n for n, _ in ray.get([where.options(resources=res).remote() for _ in range(5)])})
data = np.arange(2_000_000, dtype=np.float64)  # 16 MB: goes into the cluster, then to "ming"
moved = ray.get(where.options(resources={"ming1": 1}).remote(ray.put(data)))
counter = Counter.remote()
calls = ray.get([counter.incr.remote() for _ in range(3)])
print(json.dumps({"nodes": nodes, "ran": ran, "moved": moved, "sum": float(data.sum()), "calls": calls}))
ray.shutdown()
"""
DRIVER = DRIVER.replace("{counter}", COUNTER)


def test_nodes_on_separate_addresses(machines):
    m, envs, head, key_file = machines
    # Machine 3 has no node: its driver uses a node's gateway over the network.
    got = run_driver(m, 3, envs[3], DRIVER, head, str(key_file))
    nodes = got["nodes"]
    assert set(nodes) == {m.ips[0], m.ips[1], m.ips[2]}
    assert got["ran"] == {
        "bob": [nodes[m.ips[0]]],
        "alice": [nodes[m.ips[1]]],
        "ming1": [nodes[m.ips[2]]],
        "ming2": [nodes[m.ips[2]]],
    }
    assert got["moved"] == [nodes[m.ips[2]], got["sum"]]
    assert got["calls"] == [[i, nodes[m.ips[1]]] for i in (1, 2, 3)]

    status = cli(m, 3, envs[3], "status", "--address", head, "--token-file", str(key_file)).stdout
    assert "3 node(s) alive" in status
    for ip in m.ips[:3]:
        assert ip in status

    listed = json.loads(
        cli(m, 3, envs[3], "status", "--address", head, "--token-file", str(key_file), "--json").stdout
    )
    assert {n["gateway"] for n in listed["nodes"] if n["ip"] == m.ips[0]} == {f"tcp://{m.ips[0]}:7000"}

    # `nbcluster stop` on a node's machine: that node leaves, the cluster stays.
    assert "left the cluster" in cli(m, 2, envs[2], "stop").stdout
    wait_for(lambda: not m.pids(2), 30, what="machine 2's node to exit")
    status = cli(m, 3, envs[3], "status", "--address", head, "--token-file", str(key_file)).stdout
    assert "2 node(s) alive" in status and "DEAD" in status


def test_wrong_key_from_another_machine(machines, tmp_path):
    m, envs, head, key_file = machines
    bad = json.loads(key_file.read_text())
    bad["key"] = "00" * 32
    bad_file = tmp_path / "bad.key"
    bad_file.write_text(json.dumps(bad))
    out = m.run(
        3,
        [sys.executable, "-m", "runtime.cli", "status", "--address", head, "--token-file", str(bad_file)],
        env=envs[3],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 1
    assert "authentication failed" in out.stderr


def test_notebook_connects_from_another_machine(machines, tmp_path, monkeypatch):
    """A real kernel on machine 3 runs `%cluster connect` with the copied connection file."""
    m, envs, head, key_file = machines
    ip = m.ips[3]
    spec = tmp_path / "kernels" / "netns"
    spec.mkdir(parents=True)
    argv = m.argv(3, [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "netns", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    # The kernel listens on machine 3's address: ports there are all free (its own namespace).
    kernel = Kernel(envs[3], kernel_name="netns", ip="0.0.0.0", ports=range(41000, 41005), connect_ip=ip)
    try:
        ok = kernel.execute("%load_ext kernel_ext")
        assert not kernel.errors(ok)
        msg_id = kernel.execute(f"%cluster connect {head} --token-file {key_file}")
        assert not kernel.errors(msg_id), kernel.errors(msg_id)
        code = (
            "import runtime as ray\n"
            "@ray.remote(resources={'alice': 1})\n"
            "def hello():\n"
            "    print('hello from', ray.get_runtime_context().get_node_id())\n"
            "    return ray.get_runtime_context().get_node_id()\n"
            "node = ray.get(hello.remote())\n"
            "print('result', node)\n"
        )
        msg_id = kernel.execute(code)
        assert not kernel.errors(msg_id), kernel.errors(msg_id)
        text = kernel.stream(msg_id)
        node = re.search(r"result (\w+)", text).group(1)
        wait_for(
            lambda: f"hello from {node}" in kernel.stream(msg_id), 30, what="the remote print in the cell"
        )
        # The notebook's resource view shows every node.
        msg_id = kernel.execute("%cluster status")
        assert not kernel.errors(msg_id)
        shown = "".join(
            str(r.get("text/plain", "")) + str(r.get("text/html", "")) for r in kernel.results(msg_id)
        )
        for node_ip in m.ips[:3]:
            assert node_ip in shown
        alice = kernel.value("[n['NodeID'] for n in ray.nodes() if n['Resources'].get('alice')][0]")
        assert node == alice.strip("'")
        assert not kernel.errors(kernel.execute("%cluster disconnect"))
    finally:
        kernel.shutdown()


WAITER = """
import sys, time
import runtime as ray

ray.init(address=sys.argv[1], token=sys.argv[2])

@ray.remote(resources={"alice": 1})
def slow():
    time.sleep(120)

ref = slow.remote()
print("waiting", flush=True)
try:
    ray.get(ref)
except ray.exceptions.ConnectionFailedError as e:
    print("lost:", e, flush=True)
"""


def test_driver_without_a_node_notices_its_node_dying(machines):
    """The node a notebook machine talks through is killed: get() fails with the reason, no hang."""
    import psutil

    m, envs, head, key_file = machines
    waiter = m.popen(
        3,
        [sys.executable, "-c", WAITER, head, str(key_file)],
        env=envs[3],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert waiter.stdout.readline().strip() == "waiting"

        def gateway_node() -> dict:  # the node it uses: the head's
            status = json.loads(
                cli(
                    m, 3, envs[3], "status", "--address", head, "--token-file", str(key_file), "--json"
                ).stdout
            )
            return next(n for n in status["nodes"] if n["ip"] == m.ips[0])

        # That node knows the driver: its task shows as running in the node's report.
        wait_for(
            lambda: gateway_node()["running"].get("slow") == 1, 20, what="the driver's task in the status"
        )
        gateway = gateway_node()
        node = psutil.Process(gateway["pid"])
        for proc in [node, *node.children(recursive=True)]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:  # a worker may go with its daemon first
                pass
        out, _ = waiter.communicate(timeout=60)
        assert "lost:" in out and "has not answered" in out, out
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()


DIRECT_DRIVER = """
import json, os, sys
import numpy as np
import psutil
import runtime as ray

ray.init(address=sys.argv[1])
other = sys.argv[2]

@ray.remote(resources={"alice": 1})
def on_alice(x=None):
    return ray.get_runtime_context().get_node_id(), None if x is None else float(np.asarray(x).sum())

@ray.remote(resources={"alice": 1})
def make():
    return np.full(3_000_000, 2.0)  # 24 MB: moved back to this machine's node

{counter}
data = np.arange(2_000_000, dtype=np.float64)  # 16 MB: pulled by the other machine's node
ran = ray.get([on_alice.remote() for _ in range(20)])
moved = ray.get(on_alice.remote(ray.put(data)))
back = float(ray.get(make.remote()).sum())
counter = Counter.remote()
calls = [n for n, _ in ray.get([counter.incr.remote() for _ in range(50)])]
links = sorted({(c.raddr.ip, c.raddr.port) for c in psutil.Process().net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.ip == other})
print(json.dumps({"ran": sorted({n for n, _ in ran}), "moved": moved, "sum": float(data.sum()),
                  "back": back, "calls": calls, "links": links}))
ray.shutdown()
"""
DIRECT_DRIVER = DIRECT_DRIVER.replace("{counter}", COUNTER)


@pytest.mark.parametrize("encrypted", [False, True], ids=["signed", "sealed"])
def test_direct_links_between_machines(no_leaks, encrypted):
    """Real addresses, with CurveZMQ (the default there) or --no-encryption: a driver on
    machine 0 calls machine 1's workers over direct links on machine 1's address (not through
    the nodes), large values both ways."""
    args = [] if encrypted else ["--no-encryption"]
    with cluster_on(Path(no_leaks), 2, args, {1: {"alice": 2}}) as (m, envs, head, _, outs):
        assert ("CurveZMQ" in outs[0].stdout) is encrypted
        gateway = int(re.search(rf"tcp://{re.escape(m.ips[1])}:(\d+)", outs[1].stdout).group(1))
        got = run_driver(m, 0, envs[0], DIRECT_DRIVER, head, m.ips[1])
        assert len(got["ran"]) == 1 and got["moved"] == [got["ran"][0], got["sum"]]
        assert got["back"] == 6_000_000.0 and got["calls"] == list(range(1, 51))
        # The driver's connections to machine 1 are to its workers, not its gateway.
        assert got["links"] and all(port != gateway for _, port in got["links"])
