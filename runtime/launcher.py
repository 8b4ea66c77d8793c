"""Starting a cluster's processes: used by `init()` and `nbcluster start`.

The head (``runtime.head.main``) is started once; it forks the node daemon, which
forks the zygote, which forks the workers — one Python start-up in all.
The head runs in its own session (no terminal signals reach it: Ctrl-C in
the driver does not kill workers mid-task).

Embedded (``init()``): the driver keeps the head's stdin open; when the
driver exits for any reason, even ``kill -9``, the pipe closes and the
cluster takes itself down. Detached (``nbcluster start``): stdin is closed
after the settings are read and the cluster lives until ``nbcluster stop``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from . import config as cfg
from .exceptions import ConnectionFailedError

START_TIMEOUT = 60.0


def default_resources(
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    memory: int | None = None,
) -> dict[str, float]:
    """CPU, GPU, memory and custom resources of this machine (Ray's defaults)."""
    if resources:
        for bad in ("CPU", "GPU"):
            if bad in resources:
                raise ValueError(f"pass {bad} as num_{bad.lower()}s=..., not inside resources={resources!r}")
        for name, amount in resources.items():
            if not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"resource {name!r} must be a non-negative number, got {amount!r}")
    if num_cpus is None:
        try:
            num_cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            num_cpus = os.cpu_count() or 1
    if num_gpus is None:
        num_gpus = detect_gpus()
    if num_cpus < 0 or num_gpus < 0:
        raise ValueError("num_cpus and num_gpus must be non-negative")
    out: dict[str, float] = {"CPU": float(num_cpus)}
    if num_gpus:
        out["GPU"] = float(num_gpus)
    if memory is None:
        import psutil

        memory = int(psutil.virtual_memory().available * 0.7)
    out["memory"] = float(memory)
    out.update({k: float(v) for k, v in (resources or {}).items()})
    return out


def detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def default_object_store_memory() -> int:
    import psutil

    total = psutil.virtual_memory().total
    cap = int(total * 0.3)
    try:
        shm = psutil.disk_usage(str(cfg.shm_dir()))
        cap = min(cap, int(shm.free * 0.8))
    except OSError:
        pass
    return max(cap, 64 * 1024 * 1024)


def start_cluster(
    *,
    resources: dict[str, float],
    object_store_memory: int | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    embedded: bool = True,
    env: dict[str, str] | None = None,
    encrypt: bool | None = None,
    node_timeout: float | None = None,
    node_ip: str | None = None,
    gateway_port: int = 0,
    memory_usage_threshold: float | None = None,
    durable: bool = False,
    head_silence: float | None = None,
    restore: cfg.ConnectionInfo | None = None,
) -> tuple[cfg.ConnectionInfo, subprocess.Popen, int]:
    """Start a head (and its node); return (connection info, head process, node pid).

    `durable` (``nbcluster start --head``): this machine's node outlives the
    head, waiting `head_silence` seconds for it to come back. `restore`: the
    connection info of a cluster whose head died; the new head takes its id,
    key and port and reloads its control store (its node is kept if it still runs);
    ``proc.restored`` then says what came back ({"nodes": n, "named_actors": m}).
    """
    cfg.remove_stale_clusters(keep=restore.cluster_id if restore else "")
    settings = {
        "resources": resources,
        "object_store_memory": int(object_store_memory or default_object_store_memory()),
        "host": host,
        "port": port,
        "embedded": embedded,
        "owner_pid": os.getpid() if embedded else 0,
    }
    if encrypt is not None:
        settings["encrypt"] = encrypt
    if node_timeout is not None:
        settings["node_timeout"] = node_timeout
    if node_ip:
        settings["node_ip"] = node_ip
    if gateway_port:
        settings["gateway_port"] = gateway_port
    if memory_usage_threshold:
        settings["memory_usage_threshold"] = memory_usage_threshold
    if durable:
        settings["durable"] = True
    if head_silence is not None:
        settings["head_silence"] = head_silence
    if restore is not None:
        settings["restore"] = dataclasses.asdict(restore)
    reply, proc = _spawn("runtime.head", "main", settings, keep_stdin=embedded, env=env)
    proc.restored = reply.get("restored")  # type: ignore[attr-defined]  # what a restored head took back
    info = cfg.ConnectionInfo(**reply["info"])
    return info, proc, int(reply["node_pid"])


def start_node(
    *,
    info: cfg.ConnectionInfo,
    resources: dict[str, float],
    object_store_memory: int | None = None,
    host: str,
    node_ip: str,
    block: bool = False,
    env: dict[str, str] | None = None,
    gateway_port: int = 0,
    memory_usage_threshold: float | None = None,
    head_silence: float | None = None,
) -> tuple[dict, subprocess.Popen]:
    """Start a node daemon that joins the head in `info`; return ({node_id, gateway, pid}, process)."""
    settings = {
        "cluster_id": info.cluster_id,
        "head_address": info.head_address,
        "key": info.key,
        "curve": {"public": info.curve_public, "secret": info.curve_secret} if info.curve_public else None,
        "resources": resources,
        "object_store_memory": int(object_store_memory or default_object_store_memory()),
        "host": host,
        "ip": node_ip,
        "block": block,
        "gateway_port": gateway_port,
        "memory_usage_threshold": memory_usage_threshold,
        "head_silence": head_silence,
    }
    return _spawn("runtime.node", "standalone", settings, keep_stdin=block, env=env)


def _spawn(
    module: str, function: str, settings: dict, keep_stdin: bool, env: dict[str, str] | None
) -> tuple[dict, subprocess.Popen]:
    """Start `module.function()` in a new session, hand it `settings`, read its one-line answer."""
    # Not `-m runtime.head`: that would import a `runtime` folder in the current
    # directory first, which may be another copy than this driver's.
    root = str(Path(__file__).resolve().parent.parent)
    boot = f"import sys; sys.path.insert(0, {root!r}); from {module} import {function}; {function}()"
    proc = subprocess.Popen(
        [sys.executable, "-c", boot],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
        close_fds=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps(settings) + "\n").encode())
    proc.stdin.flush()
    if not keep_stdin:
        proc.stdin.close()
    line = _read_line(proc, START_TIMEOUT)
    if not line:
        err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
        proc.kill()
        raise ConnectionFailedError(
            f"the cluster did not start within {START_TIMEOUT:.0f} s"
            + (f":\n{err}" if err else "; see the logs under " + str(cfg.runtime_dir()))
        )
    reply = json.loads(line)
    if "error" in reply:
        proc.wait(5)
        raise ConnectionFailedError(reply["error"])
    proc.stdout.close()
    proc.stderr.close()
    return reply, proc


def _read_line(proc: subprocess.Popen, timeout: float) -> bytes:
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            buf += chunk
        elif proc.poll() is not None:
            return b""
    return buf.split(b"\n", 1)[0]


def stop_embedded(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Close the owner pipe and wait until the cluster has cleaned up."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
