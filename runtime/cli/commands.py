"""``nbcluster``: start, inspect and stop clusters from a terminal.

::

    nbcluster start --head [--host 127.0.0.1] [--port 6380] [--num-cpus N] [--num-gpus G]
                    [--resources JSON] [--object-store-memory BYTES] [--block]
                    [--memory-usage-threshold FRACTION]
                    [--no-encryption | --encryption] [--node-timeout S] [--node-ip-address IP] [--head-timeout S]
    nbcluster start --address HOST:PORT [--token-file FILE] [--num-cpus N] ... [--block]

A head started again on the port of a cluster whose head died (``kill -9``, a
crash) while its node still runs restores that cluster from its control store;
``--block`` restarts its head by itself.
    nbcluster status [--address HOST:PORT] [--token-file FILE]
    nbcluster stop [--address HOST:PORT] [--all]
    nbcluster demo [--tasks N] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from .. import config as cfg
from .. import launcher
from ..exceptions import ConnectionFailedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nbcluster",
        description="Start, inspect and stop nbcluster clusters on this machine.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start a cluster head, or a node that joins one")
    role = start.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="start a head (and this machine's node daemon)")
    role.add_argument(
        "--address", default=None, help="HOST:PORT of a head: start a node on this machine that joins it"
    )
    start.add_argument(
        "--token-file",
        default=None,
        help="the head's connection file (copied from the head machine); not needed on the head's machine",
    )
    start.add_argument(
        "--host",
        default=None,
        help="interface to listen on (head default 127.0.0.1: this machine only; 0.0.0.0 for all)",
    )
    start.add_argument(
        "--node-ip-address", default=None, help="the address other machines reach this node at"
    )
    start.add_argument(
        "--gateway-port",
        type=int,
        default=0,
        help="port of this node's gateway, where other nodes connect (default: any free port)",
    )
    encryption = start.add_mutually_exclusive_group()
    encryption.add_argument(
        "--no-encryption",
        action="store_true",
        help="no CurveZMQ encryption even when listening beyond loopback (messages are still signed)",
    )
    encryption.add_argument(
        "--encryption",
        action="store_true",
        help="CurveZMQ encryption even on loopback (to measure or test what other machines get)",
    )
    start.add_argument(
        "--node-timeout",
        type=float,
        default=None,
        help="seconds without a heartbeat before a node is declared dead (default 5)",
    )
    start.add_argument(
        "--head-timeout",
        type=float,
        default=None,
        help="seconds a node waits for a head that is gone (to be started again) before it stops "
        "(default 30)",
    )
    start.add_argument("--port", type=int, default=cfg.DEFAULT_PORT, help="port (default 6380)")
    start.add_argument("--num-cpus", type=float, default=None, help="CPUs to offer (default: all cores)")
    start.add_argument("--num-gpus", type=float, default=None, help="GPUs to offer (default: detected)")
    start.add_argument(
        "--resources",
        type=json_resources,
        default=None,
        help="custom resources as JSON, e.g. '{\"alice\": 2}'",
    )
    start.add_argument(
        "--object-store-memory",
        type=int,
        default=None,
        help="shared memory for objects, in bytes; beyond it objects spill to disk",
    )
    start.add_argument(
        "--memory-usage-threshold",
        type=fraction,
        default=None,
        metavar="FRACTION",
        help="memory use (of the machine, or of the node's cgroup when it has a limit) above which "
        "the node kills the worker of the newest task (default 0.95, as Ray's)",
    )
    start.add_argument(
        "--block", action="store_true", help="stay in the foreground; stop the cluster on Ctrl-C or SIGTERM"
    )

    status = sub.add_parser("status", help="nodes, resources, workers, tasks and actors")
    status.add_argument("--address", default=None, help="HOST:PORT of the head (default: newest cluster)")
    status.add_argument("--token-file", default=None, help="the head's connection file, from another machine")
    status.add_argument("--json", action="store_true", help="print the raw snapshot as JSON")

    stop = sub.add_parser("stop", help="stop clusters started with `nbcluster start`")
    stop.add_argument("--address", default=None, help="stop only the cluster at HOST:PORT")
    stop.add_argument(
        "--all", action="store_true", help="also stop clusters owned by a running Python process or notebook"
    )

    demo = sub.add_parser("demo", help="Monte Carlo pi on a local cluster, with a progress bar")
    demo.add_argument("--tasks", type=int, default=None, help="number of tasks (default: 4 per core)")
    demo.add_argument("--samples", type=int, default=2_000_000, help="samples per task")

    args = parser.parse_args(argv)
    try:
        return {"start": cmd_start, "status": cmd_status, "stop": cmd_stop, "demo": cmd_demo}[args.command](
            args
        )
    except (ConnectionFailedError, ValueError) as e:
        print(f"nbcluster {args.command}: {e}", file=sys.stderr)
        return 1


def json_resources(text: str) -> dict[str, float]:
    """argparse type for --resources: a JSON object, with an error that shows one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}); write e.g. '{{\"alice\": 2}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object like '{\"alice\": 2}'")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; write e.g. 0.9") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction in (0, 1]; write e.g. 0.9")
    return value


def cmd_start(args: argparse.Namespace) -> int:
    resources = launcher.default_resources(args.num_cpus, args.num_gpus, args.resources)
    if args.address:
        return _start_node(args, resources)
    old = cfg.headless_cluster(args.port) if args.port else None

    def start(restore: cfg.ConnectionInfo | None):
        return launcher.start_cluster(
            resources=resources,
            object_store_memory=args.object_store_memory,
            memory_usage_threshold=args.memory_usage_threshold,
            host=args.host or "127.0.0.1",
            port=args.port,
            embedded=args.block,
            encrypt=False if args.no_encryption else True if args.encryption else None,
            node_timeout=args.node_timeout,
            node_ip=args.node_ip_address,
            gateway_port=args.gateway_port,
            durable=True,
            head_silence=args.head_timeout,
            restore=restore,
        )

    info, proc, _ = start(old)
    if old is not None:
        back = getattr(proc, "restored", None) or {}
        print(
            f"Restarted the head of the cluster at {info.head_address} ({info.cluster_id}) from its "
            f"control store: {back.get('nodes', 0)} nodes and {back.get('named_actors', 0)} named actors "
            "are back; nodes and drivers reconnect by themselves."
        )
    else:
        print(
            f"Started a cluster at {info.head_address} with {_offer(resources)}"
            + (" (encrypted with CurveZMQ)." if info.curve_public else ".")
        )
    print(f"  Connection file (holds the key): {info.path}")
    if not cfg.is_loopback(info.head_address.rpartition(":")[0]):
        print("  Other machines:   copy the connection file there as cluster.key, then")
        print(f"                    nbcluster start --address {info.head_address} --token-file cluster.key")
    print(f'  From Python:      import runtime as ray; ray.init(address="{info.head_address}")')
    print("  From a notebook:  %load_ext kernel_ext")
    print(f"                    %cluster connect {info.head_address}")
    print("  Status:           nbcluster status")
    print("  Stop:             nbcluster stop" + ("  (or Ctrl-C here)" if args.block else ""))
    sys.stdout.flush()
    if not args.block:
        return 0
    return _supervise(proc, info, start)


def _supervise(proc, info: cfg.ConnectionInfo, start) -> int:
    """``start --head --block``: stay in the foreground; a head that dies (killed, crashed) is
    started again with the cluster's state, until Ctrl-C or SIGTERM stops the cluster.

    Every head's stdin pipe stays open until the end: this machine's node follows the first
    one (it outlives the heads), so closing them all is what stops the cluster."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    heads = [proc]
    try:
        while not stopping:
            code = proc.poll()
            if code is None:
                time.sleep(0.2)
                continue
            if code == 0:  # it stopped on purpose (`nbcluster stop --all`)
                break
            print(f"The head exited ({_exit_reason(code)}); starting it again with the cluster's state.")
            sys.stdout.flush()
            try:
                info, proc, _ = start(info)
            except ConnectionFailedError as e:
                print(f"nbcluster start: the head could not be started again: {e}", file=sys.stderr)
                break
            heads.append(proc)
            print(f"The head is back at {info.head_address}.")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    for head in heads:
        if head.stdin is not None:
            try:
                head.stdin.close()
            except OSError:
                pass
    launcher.stop_embedded(proc)
    print("Cluster stopped.")
    return 0


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _offer(resources: dict[str, float]) -> str:
    """ "2 CPUs and {'alice': 2.0}": what a node offers, as `start` prints it."""
    extra = {k: v for k, v in resources.items() if k not in ("CPU", "memory")}
    return f"{resources.get('CPU', 0):g} CPUs" + (f" and {extra}" if extra else "")


def cluster_info(address: str | None, token_file: str | None) -> cfg.ConnectionInfo:
    """How to reach the cluster at `address`: its key from `token_file`, or from this machine."""
    if token_file:
        try:
            info = cfg.ConnectionInfo.read(token_file)
        except (OSError, ValueError, TypeError) as e:
            raise ConnectionFailedError(
                f"cannot read the token file {token_file}: {e}. Copy the head's connection file "
                "(`nbcluster start --head` prints where it is)."
            ) from None
        if address:
            info.head_address = address
        return info
    return _find(address)


def _start_node(args: argparse.Namespace, resources: dict[str, float]) -> int:
    import socket

    info = cluster_info(args.address, args.token_file)
    client = _head_client(info)
    try:
        joined = client.request("cluster_info", timeout=10.0)
    except ConnectionFailedError:
        if client.signer.auth_failed:
            raise
        raise ConnectionFailedError(
            f"authentication failed or nothing listens at {info.head_address}: the head did not "
            "answer within 10 s. Check the address, and that --token-file is this cluster's "
            "connection file (a wrong key is dropped without an answer)."
        ) from None
    finally:
        client.close(say_bye=False)
    info.cluster_id = joined["cluster_id"]
    node_ip = args.node_ip_address
    if not node_ip:  # the address this machine uses to reach the head (no packet is sent)
        host, _, port = info.head_address.rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port)))
            node_ip = s.getsockname()[0]
    reply, proc = launcher.start_node(
        info=info,
        resources=resources,
        object_store_memory=args.object_store_memory,
        memory_usage_threshold=args.memory_usage_threshold,
        host=args.host or node_ip,
        node_ip=node_ip,
        block=args.block,
        gateway_port=args.gateway_port,
        head_silence=args.head_timeout,
    )
    print(
        f"Node {reply['node_id']} joined the cluster at {info.head_address} with {_offer(resources)}; "
        f"other nodes reach it at {reply['gateway']}."
    )
    print("  Status:  nbcluster status" + (f" --address {info.head_address}" if args.token_file else ""))
    print("  Leave:   nbcluster stop" + ("  (or Ctrl-C here)" if args.block else ""))
    sys.stdout.flush()
    if not args.block:
        return 0
    return _wait_foreground(proc, "Node stopped.")


def _wait_foreground(proc, message: str) -> int:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping and proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    launcher.stop_embedded(proc)
    print(message)
    return 0


def _head_client(info: cfg.ConnectionInfo):
    from ..client import head_client

    return head_client(info)


def _find(address: str | None) -> cfg.ConnectionInfo:
    info = cfg.find_cluster(address)
    if info is None:
        port = int(address.rpartition(":")[2]) if address and address != "auto" else 0
        headless = cfg.headless_cluster(port)
        if headless is not None:
            raise ConnectionFailedError(
                f"the head of the cluster at {headless.head_address} is not running, but its node "
                "still is and waits for it: start it again with `nbcluster start --head --port "
                f"{headless.head_address.rpartition(':')[2]}` (it comes back with its state), or "
                "stop what is left with `nbcluster stop`."
            )
        where = f"at {address}" if address else "on this machine"
        raise ConnectionFailedError(
            f"no running cluster found {where}. Start one with `nbcluster start --head`."
        )
    return info


def cmd_status(args: argparse.Namespace) -> int:
    from ..snapshot import ClusterSnapshot, format_text

    info = cluster_info(args.address, args.token_file)
    client = _head_client(info)
    try:
        data = client.request("snapshot", timeout=5.0)
    finally:
        client.close(say_bye=False)
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        print(format_text(ClusterSnapshot.from_dict(data)))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    port = int(args.address.rpartition(":")[2]) if args.address else 0
    headless = _stop_headless(port)
    if args.address and headless and cfg.find_cluster(args.address) is None:
        return 0
    if args.address:
        targets = [_find(args.address)]
    else:
        targets = [c for c in cfg.list_clusters() if args.all or not c.embedded]
    if not targets and headless:
        return 0
    if not targets:
        print(
            "No cluster started with `nbcluster start` is running"
            + ("." if args.all else "; --all also stops clusters owned by notebooks and scripts.")
        )
        return 0
    for info in targets:
        if info.role == "node":  # a node that joined a head elsewhere: only it leaves
            os.kill(info.head_pid, signal.SIGTERM)
            _wait_gone(info)
            print(f"This machine's node left the cluster at {info.head_address}.")
            continue
        client = _head_client(info)
        try:
            client.request("shutdown", timeout=5.0)
        except ConnectionFailedError:
            os.kill(info.head_pid, signal.SIGTERM)
        finally:
            client.close(say_bye=False)
        _wait_gone(info)
        print(f"Stopped the cluster at {info.head_address}.")
    return 0


def _stop_headless(port: int = 0) -> list[cfg.ConnectionInfo]:
    """Clusters whose head died while their node waits for it (on `port`, or all): the node
    stops and cleans up."""
    stopped = []
    while (info := cfg.headless_cluster(port)) is not None and info not in stopped:
        try:
            os.kill(info.node_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_gone(cfg.ConnectionInfo(**{**info.__dict__, "head_pid": info.node_pid}))
        print(f"Stopped the node of the cluster at {info.head_address} (its head was gone).")
        stopped.append(info)
    return stopped


def _wait_gone(info: cfg.ConnectionInfo, timeout: float = 15.0) -> None:
    """Give the process `info` names `timeout` seconds to clean up and exit, then kill it."""
    deadline = time.monotonic() + timeout
    while info.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if info.alive():
        os.kill(info.head_pid, signal.SIGKILL)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(tasks=args.tasks, samples=args.samples)
