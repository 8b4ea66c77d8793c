"""The node daemon's process: `main` (forked by the head) and `standalone` (joins a head).

::

    head process ──fork──▶ main(conf, parent_fd) ─┐
    nbcluster start --address ─▶ standalone() ────┴─▶ Node(conf): fork the zygote first,
        settings as JSON on stdin                      then serve() until EXIT, SIGTERM,
        one JSON line on stdout once joined            or the parent's pipe closes
"""

from __future__ import annotations

import logging
import os
import signal
import time

from .. import config as cfg
from ..prctl import set_process_name
from ..wire import direct
from .daemon import Node
from .transfer import keep_chunk_buffers


def main(conf: dict, parent_fd: int | None = None, on_joined=None) -> None:
    """Run a node daemon in this (freshly forked or started) process."""
    from .. import worker

    set_process_name("nbc-node")
    _setup_logging(conf, f"node-{conf['node_id']}")
    node = Node(conf)
    node.on_joined = on_joined

    def worker_main(wid: int) -> None:
        worker.main(conf, wid)

    if conf.get("curve"):
        direct.preload()  # every worker makes a key pair for its direct links: import it once
    node.start_zygote(worker_main)
    keep_chunk_buffers()  # after the fork: the workers keep glibc's defaults
    signal.signal(signal.SIGTERM, lambda *_: setattr(node, "running_flag", False))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    node.serve(parent_fd)


def _setup_logging(conf: dict, name: str) -> None:
    logdir = cfg.runtime_dir() / conf["cluster_id"] / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(logdir / f"{name}.log"),
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )


def standalone() -> None:
    """A node that joins a head (``nbcluster start --address``); settings as JSON on stdin.

    Answers one JSON line on stdout once the head has welcomed it, then
    writes only to its log. With ``block`` (the starter waits in the
    foreground) it exits when its stdin closes.
    """
    import json
    import secrets
    import shutil
    import sys

    conf = json.loads(sys.stdin.readline())
    cluster_id = conf["cluster_id"]
    cluster_dir = cfg.runtime_dir() / cluster_id
    own_dir = not cluster_dir.exists()  # False when the head (or another node) runs here too
    (cluster_dir / "logs").mkdir(parents=True, exist_ok=True)
    os.chmod(cluster_dir, 0o700)
    node_id = secrets.token_hex(4)
    conf.update(node_id=node_id, node_address=f"{cluster_dir}/node-{node_id}.sock", standalone=True)
    info = cfg.ConnectionInfo(
        cluster_id=cluster_id,
        head_address=conf["head_address"],
        key=conf["key"],
        node_address=conf["node_address"],
        head_pid=os.getpid(),
        started_at=time.time(),
        curve_public=(conf.get("curve") or {}).get("public", ""),
        curve_secret=(conf.get("curve") or {}).get("secret", ""),
        role="node",
    )
    wrote_info = False

    def joined(node: Node) -> None:
        nonlocal wrote_info
        if not info.path.exists():  # drivers on this machine find the cluster through it
            info.write()
            wrote_info = True
        print(
            json.dumps({"node_id": node_id, "gateway": node.gateway_address, "pid": os.getpid()}), flush=True
        )
        logfd = os.open(
            cluster_dir / "logs" / f"node-{node_id}.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.close(logfd)

    try:
        main(conf, sys.stdin.fileno() if conf.get("block") else None, joined)
    finally:
        if wrote_info:
            info.path.unlink(missing_ok=True)
        shutil.rmtree(cluster_dir / "spill" / node_id, ignore_errors=True)
        if own_dir:
            shutil.rmtree(cluster_dir, ignore_errors=True)
