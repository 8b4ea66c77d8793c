"""Ray clusters for the tests: started with ``ray start --block`` as our own children.

Each cluster gets its own temp dir and free ports, and every process of it
carries the test's ``NBCLUSTER_DIR`` in its environment, so teardown can
find and stop exactly these processes (``ray stop`` is machine-wide and would
hit other tests' clusters).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import free_port, ours

ADDRESS_FILE = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


class OutsideCluster:
    """A head (and optionally more nodes) started outside the kernel, with token auth on."""

    def __init__(self, marker: str, token: str) -> None:
        self.marker = marker
        self.token = token
        self.temp_dir = tempfile.mkdtemp(prefix="nbcrt-")
        self.temp_dirs = [self.temp_dir]
        self.ports: set[int] = set()  # handed out to this cluster's processes
        self.port = self.free_port()
        self.client_port = self.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, NBCLUSTER_DIR=marker, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        self.env.pop("RAY_ADDRESS", None)

    def free_port(self) -> int:
        """A free port no process of this cluster was given yet. A port is free again once
        its probe socket closes, so two probes in a row can return the same one, and Ray
        refuses one port for two of its components ("is used by other components")."""
        while True:
            port = free_port()
            if port not in self.ports:
                self.ports.add(port)
                return port

    def _ray_start(self, name: str, args: list[str], tries: int = 3) -> str:
        """`ray start --block`; tried again when a busy machine makes Ray miss its fixed 30 s
        registration window ("timed out during startup")."""
        for attempt in range(tries):
            try:
                self._ray_start_once(f"{name}-{attempt}", args)
                return f"{name}-{attempt}.out"
            except TimeoutError:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _ray_start_once(self, name: str, args: list[str]) -> subprocess.Popen:
        log = Path(self.marker) / f"{name}.out"
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats"]
        cmd += [
            "--node-ip-address=127.0.0.1",
            f"--dashboard-agent-listen-port={self.free_port()}",
            f"--runtime-env-agent-port={self.free_port()}",
            f"--metrics-export-port={self.free_port()}",
            *args,
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 240
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")
                if "timed out during startup" in text:
                    proc.wait(30)
                    self.procs.remove(proc)  # gone; `alive()` is about the attempt that started
                    raise TimeoutError(text[-300:])
                raise AssertionError(f"ray start {name} failed:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        return proc

    def start_head(self, num_cpus: int, resources: dict, dashboard: bool = True) -> None:
        """The head; `dashboard=False`: ``--include-dashboard=false`` (Ray without its dashboard)."""
        web = ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.free_port()}"]
        self.head_log = self._ray_start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}",
                *(web if dashboard else ["--include-dashboard=false"]),
                f"--ray-client-server-port={self.client_port}",
            ],
        )

    def address_file(self) -> Path:
        """The address file ``ray start --head`` wrote (in its temp dir; without ``--temp-dir`` it
        is the machine-wide ``/tmp/ray/ray_current_cluster`` that ``address="auto"`` reads)."""
        return Path(self.temp_dir) / "ray_current_cluster"

    def node_ip(self) -> str:
        """The address Ray chose for the head's node (its Ray Client server listens there)."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", (Path(self.marker) / self.head_log).read_text(errors="replace"))
        return re.search(r"Local node IP: (\S+)", text).group(1)

    def add_node(self, num_cpus: int, resources: dict) -> None:
        """Another node on this machine, with its own temp dir as on a machine of its own
        (sharing one, two log monitors would tail the same worker logs)."""
        temp_dir = tempfile.mkdtemp(prefix="nbcrt-")
        self.temp_dirs.append(temp_dir)
        self._ray_start(
            f"node{len(self.procs)}",
            [
                f"--address={self.address}",
                f"--temp-dir={temp_dir}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}",
            ],
        )

    def client_server_logs(self, tail: int = 2000) -> str:
        """The ends of the head's Ray Client server logs (the proxy and a server per client):
        what a failed ray:// connection says on the head's side."""
        logs = sorted(Path(self.temp_dir).glob("session_*/logs/ray_client_server*"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in logs)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """Stop every process of this cluster: process groups first, then anything carrying the marker."""
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while ours(self.marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in ours(self.marker):
            p.kill()
        for p in self.procs:
            p.wait(10)
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


@contextmanager
def outside_cluster(marker: str, num_cpus: int, resources: dict) -> Iterator[OutsideCluster]:
    """A Ray head with token auth, started as a user would; afterwards none of it runs and
    Ray's machine-wide address file does not name it."""
    import secrets

    cluster = OutsideCluster(marker, token=secrets.token_hex(32))
    try:
        cluster.start_head(num_cpus=num_cpus, resources=resources)
        yield cluster
    finally:
        cluster.stop()
        assert not ours(marker), "processes of the Ray cluster left running"
        assert not points_at(cluster.address)


def points_at(address: str) -> bool:
    """Whether Ray's machine-wide address file names this cluster."""
    try:
        return address.split(":")[-1] in ADDRESS_FILE.read_text()
    except OSError:
        return False
