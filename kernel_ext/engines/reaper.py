"""Stops a Ray cluster when the kernel that started it goes away, even after ``kill -9``.

::

    kernel ──holds the write end of a pipe──▶ reaper (own session) blocks reading its stdin
    %cluster stop closes the pipe; the kernel exits, restarts or is killed: the OS closes it
        ─▶ EOF ─▶ SIGTERM, then SIGKILL, every process whose environment carries
                  NBCLUSTER_RAY=<cluster id> (``ray start``, GCS, raylet, dashboard,
                  agents, workers: Ray's processes inherit it)
              ─▶ the cluster's temp dir (sessions, sockets, address file) is removed

Run as ``python -m kernel_ext.engines.reaper <cluster id> <temp dir>``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

import psutil

MARK = "NBCLUSTER_RAY"


def members(cluster_id: str) -> list[psutil.Process]:
    """The live processes of one cluster, found by the mark in their environment."""
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(MARK) == cluster_id and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill(cluster_id: str, grace: float = 3.0, limit: float = 20.0) -> None:
    """Terminate the cluster's processes; kill those that outlive `grace`; rescan until none is left."""
    deadline = time.monotonic() + limit
    sig = signal.SIGTERM
    started = time.monotonic()
    while time.monotonic() < deadline:
        procs = members(cluster_id)
        if not procs:
            return
        if time.monotonic() - started > grace:
            sig = signal.SIGKILL
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=0.5)


def main(argv: list[str]) -> int:
    cluster_id, temp_dir = argv[0], argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the notebook is not for us
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    kill(cluster_id)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
