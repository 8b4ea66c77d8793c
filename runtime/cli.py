"""``nbcluster``: start, inspect and stop clusters from a terminal.

::

    nbcluster start --head [--host 127.0.0.1] [--port 6380] [--num-cpus N] [--num-gpus G]
                    [--resources JSON] [--object-store-memory BYTES] [--block]
    nbcluster status [--address HOST:PORT]
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

from . import config as cfg
from . import launcher
from .exceptions import ConnectionFailedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nbcluster",
        description="Start, inspect and stop nbcluster clusters on this machine.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start a cluster head on this machine")
    start.add_argument(
        "--head", action="store_true", required=True, help="start a head (and this machine's node daemon)"
    )
    start.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)"
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
        "--block", action="store_true", help="stay in the foreground; stop the cluster on Ctrl-C or SIGTERM"
    )

    status = sub.add_parser("status", help="nodes, resources, workers, tasks and actors")
    status.add_argument("--address", default=None, help="HOST:PORT of the head (default: newest cluster)")
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


def cmd_start(args: argparse.Namespace) -> int:
    resources = launcher.default_resources(args.num_cpus, args.num_gpus, args.resources)
    info, proc, _ = launcher.start_cluster(
        resources=resources,
        object_store_memory=args.object_store_memory,
        host=args.host,
        port=args.port,
        embedded=args.block,
    )
    cpus = resources.get("CPU", 0)
    extra = {k: v for k, v in resources.items() if k not in ("CPU", "memory")}
    print(
        f"Started a cluster at {info.head_address} with {cpus:g} CPUs"
        + (f" and {extra}" if extra else "")
        + "."
    )
    print(f"  Connection file (holds the key): {info.path}")
    print(f'  From Python:      import runtime as ray; ray.init(address="{info.head_address}")')
    print("  From a notebook:  %load_ext kernel_ext")
    print(f"                    %cluster connect {info.head_address}")
    print("  Status:           nbcluster status")
    print("  Stop:             nbcluster stop" + ("  (or Ctrl-C here)" if args.block else ""))
    sys.stdout.flush()
    if not args.block:
        return 0
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping and proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    launcher.stop_embedded(proc)
    print("Cluster stopped.")
    return 0


def _head_client(info: cfg.ConnectionInfo):
    from .client import Client

    return Client(
        cluster_id=info.cluster_id,
        key=bytes.fromhex(info.key),
        node_address=None,
        head_address=info.head_address,
        node_id="",
    )


def _find(address: str | None) -> cfg.ConnectionInfo:
    info = cfg.find_cluster(address)
    if info is None:
        where = f"at {address}" if address else "on this machine"
        raise ConnectionFailedError(
            f"no running cluster found {where}. Start one with `nbcluster start --head`."
        )
    return info


def cmd_status(args: argparse.Namespace) -> int:
    from .snapshot import ClusterSnapshot, format_text

    info = _find(args.address)
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
    if args.address:
        targets = [_find(args.address)]
    else:
        targets = [c for c in cfg.list_clusters() if args.all or not c.embedded]
    if not targets:
        print(
            "No cluster started with `nbcluster start` is running"
            + ("." if args.all else "; --all also stops clusters owned by notebooks and scripts.")
        )
        return 0
    for info in targets:
        client = _head_client(info)
        try:
            client.request("shutdown", timeout=5.0)
        except ConnectionFailedError:
            os.kill(info.head_pid, signal.SIGTERM)
        finally:
            client.close(say_bye=False)
        deadline = time.monotonic() + 15
        while info.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if info.alive():
            os.kill(info.head_pid, signal.SIGKILL)
        print(f"Stopped the cluster at {info.head_address}.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(tasks=args.tasks, samples=args.samples)


if __name__ == "__main__":
    sys.exit(main())
