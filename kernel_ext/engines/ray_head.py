"""A local Ray cluster owned by this kernel: ``%cluster start --engine ray``.

::

    kernel ──spawns──▶ reaper (watches a pipe from the kernel; see reaper.py)
           ──spawns──▶ ray start --head --block --temp-dir <own dir> (own session, marked
                       NBCLUSTER_RAY=<id>; GCS, raylet, dashboard, workers inherit the mark)
           ──ray.init(address)──▶ the kernel joins as a driver

Plain ``ray.init()`` leaves Ray processes and a stale ``/tmp/ray/ray_current_cluster``
behind when its kernel is killed; this head lives in its own temp dir and
is stopped by the reaper whatever way the kernel ends. Every port is chosen
free so that several such clusters (several kernels) share a machine.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from . import EngineError
from .reaper import MARK

START_TIMEOUT = 180.0  # seconds; Ray starts in ~7 s on an idle 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"  # ray._private.ray_constants
HOOK_MODULE = "kernel_ext.engines.ray_tags.setup_worker"


def head_command(
    port: int,
    temp_dir: str,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict | None,
    object_store_memory: int | None,
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--port={port}",
        f"--temp-dir={temp_dir}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={int(num_cpus)}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={int(num_gpus)}")
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    if object_store_memory is not None:
        cmd.append(f"--object-store-memory={object_store_memory}")
    return cmd


def new_token() -> str:
    try:
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )

        return generate_new_authentication_token()
    except Exception:  # an older Ray: any long random string does
        return secrets.token_hex(32)


class RayHead:
    """The processes of one owned cluster; `stop()` (or the kernel's end) removes them all."""

    def __init__(
        self,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: dict | None = None,
        object_store_memory: int | None = None,
        worker_hook: bool = True,
    ) -> None:
        self.cluster_id = uuid.uuid4().hex[:12]
        self.temp_dir = tempfile.mkdtemp(prefix="nbcray-")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token = new_token()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env.pop("RAY_ADDRESS", None)
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "kernel_ext.engines.reaper", self.cluster_id, self.temp_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        env.update({MARK: self.cluster_id, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token})
        # Every worker runs our setup hook by module path (Ray's default_worker reads this variable;
        # the raylet's environment is its workers'). The kernel then needs no job runtime_env, which
        # made Ray start a new worker for the job's environment again and again (ray_layer.py).
        if worker_hook:
            env[HOOK_ENV] = HOOK_MODULE
        self.log = os.path.join(self.temp_dir, "head.out")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                head_command(self.port, self.temp_dir, num_cpus, num_gpus, resources, object_store_memory),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        try:
            self._wait_started()
        except BaseException:
            self.stop()
            raise

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self._output()
            if "Ray runtime started" in text:
                return
            if self.proc.poll() is not None:
                tail = "\n".join(text.strip().splitlines()[-15:])
                raise EngineError(f"ray start failed (exit code {self.proc.returncode}):\n{tail}")
            time.sleep(0.1)
        raise EngineError(f"the Ray head did not start within {START_TIMEOUT:.0f} s; see {self.log}")

    def _output(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Close the reaper's pipe and wait for it to have removed every process of the cluster."""
        if self.reaper.stdin is not None and not self.reaper.stdin.closed:
            try:
                self.reaper.stdin.close()
            except OSError:
                pass
        try:
            self.reaper.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_head(
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict | None = None,
    object_store_memory: int | None = None,
    tries: int = 3,
    worker_hook: bool = True,
) -> RayHead:
    """A started `RayHead`; tried again when Ray misses its fixed 30 s raylet registration
    window, which a busy machine can."""
    for attempt in range(tries):
        try:
            return RayHead(num_cpus, num_gpus, resources, object_store_memory, worker_hook)
        except EngineError as e:
            if "timed out during startup" not in str(e) or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")
