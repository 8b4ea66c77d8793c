"""The head machine's node daemon: how long it lives, relative to the head that forks it.

::

    init() / %cluster start (embedded)   driver ══pipe══▶ head ══pipe + PDEATHSIG══▶ node
                                          the node dies with the head, the head with the driver
    nbcluster start --head (durable)      head ──fork──▶ node   (no pipe, no PDEATHSIG)
                                          head killed: the node waits --head-timeout s for a
                                          head started again on the port (it reconnects), then
                                          stops and, if no head came, removes the cluster's files
    nbcluster start --head --block        CLI ══pipe══▶ head(s) ──fork──▶ node ══the first
                                          head's stdin══▶ follows the CLI, not the head

A head that stops on purpose tells its nodes EXIT and waits for this machine's
node (`wait_node`), whether it forked it or found it waiting after a restart.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from .. import config as cfg
from ..prctl import set_parent_death_signal


def fork_node(node_conf: dict, durable: bool, embedded: bool, close: int = -1) -> tuple[int, int]:
    """Fork this machine's node daemon; return (its pid, the write end of the pipe it may follow).

    Embedded in a driver (``init()``): it dies with this process (the pipe, and
    SIGKILL as parent-death signal). Durable: it outlives this process, so a
    head started again finds it; in ``--block`` mode it follows the owner's
    pipe (this process' stdin, which it inherits) instead. ``close``: a file
    descriptor of this process that the node must not keep (the head's listener).
    """
    from .. import node

    r, w = os.pipe()
    node_pid = os.fork()
    if node_pid == 0:
        os.close(w)
        if close >= 0:
            os.close(close)
        code = 0
        head_pid = os.getppid()
        try:
            if durable:
                os.close(r)
                node.main(node_conf, parent_fd=sys.stdin.fileno() if embedded else None)
            else:
                set_parent_death_signal(signal.SIGKILL)
                node.main(node_conf, parent_fd=r)
        except BaseException:
            logging.getLogger("runtime.node").exception("node failed")
            code = 1
        finally:
            if durable:
                _clean_if_headless(node_conf["cluster_id"], head_pid)
            os._exit(code)
    os.close(r)
    return node_pid, w


def _clean_if_headless(cluster_id: str, head_pid: int) -> None:
    """A durable node that stops while no head runs (it gave up waiting) leaves nothing behind.
    While its first head, or one started again, runs, that head cleans up after the node."""
    if cfg.pid_alive(head_pid):
        return
    folder = cfg.runtime_dir() / cluster_id
    try:
        info = cfg.ConnectionInfo.read(folder / "connection.json")
    except (OSError, ValueError, TypeError):
        info = None
    if info is not None and info.alive():
        return
    for seg in cfg.shm_glob(cluster_id):
        cfg.remove_shm(seg)
    remove_folder(folder)


def remove_folder(folder: Path) -> None:
    """Remove a cluster folder that the node's last processes may still be writing into
    (a log line, a worker's event file): try again until nothing is left, for up to 2 s."""
    deadline = time.monotonic() + 2.0
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists() or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def wait_node(pid: int, child: bool, timeout: float = 5.0) -> None:
    """Give this machine's node `timeout` s to stop (it was told EXIT), then SIGTERM, then SIGKILL."""

    def gone() -> bool:
        if child:
            try:
                return os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:  # reaped already
                return True
        return not cfg.pid_alive(pid)

    for sig in (signal.SIGTERM, signal.SIGKILL, None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.01)
        if sig is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
