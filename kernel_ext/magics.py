"""``%cluster`` and ``%%remote``."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from runtime.cli import json_resources as _json_resources

from . import engines, notice, remote_cell
from .cluster_view import ClusterView
from .progress import ProgressView
from .status_view import StatusView


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # never sys.exit() inside a kernel
        raise UsageError(f"{self.prog}: {message}\n\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> None:
        raise UsageError(message or "")


def cluster_parser() -> _Parser:
    p = _Parser(prog="%cluster", description="Start, connect to, inspect and stop a cluster.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    start = sub.add_parser("start", help="start a local cluster owned by this kernel")
    start.add_argument("-n", "--num-cpus", type=float, default=None, help="CPUs (default: all cores)")
    start.add_argument("--num-gpus", type=float, default=None, help="GPUs (default: detected)")
    start.add_argument(
        "--resources",
        type=_json_resources,
        default=None,
        help="custom resources as JSON, e.g. '{\"alice\": 2}'",
    )
    start.add_argument("--object-store-memory", type=int, default=None, help="bytes of shared memory")
    start.add_argument("--engine", choices=engines.NAMES, default="runtime", help="runtime (default) or ray")
    connect = sub.add_parser("connect", help="attach to a running cluster (host:port)")
    connect.add_argument("address", help="host:port of the head, 'auto', or ray://host:port (Ray Client)")
    connect.add_argument(
        "--engine", choices=engines.NAMES, default=None, help="runtime (default) or ray (implied by ray://)"
    )
    connect.add_argument(
        "--token", default=None, help="the cluster key (if its connection file is elsewhere)"
    )
    connect.add_argument(
        "--token-file",
        default=None,
        help="the head's connection file copied here (or a file holding the key)",
    )
    sub.add_parser("status", help="live view of nodes, resources, tasks and actors")
    sub.add_parser("stop", help="stop the cluster this kernel started (or disconnect)")
    sub.add_parser("disconnect", help="disconnect, leaving a cluster started elsewhere running")
    return p


def remote_parser() -> _Parser:
    p = _Parser(prog="%%remote", description="Run this cell on the cluster.")
    p.add_argument("--num-cpus", type=float, default=None)
    p.add_argument("--num-gpus", type=float, default=None)
    p.add_argument("--resources", type=_json_resources, default=None)
    p.add_argument("--actor", default=None, help="run in a persistent namespace held by this named actor")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="return an ObjectRef of the cell's value at once; assigned names arrive when it finishes",
    )
    return p


@magics_class
class ClusterMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.namespaces: dict[str, Any] = {}  # --actor handles, kept alive with the kernel

    # -------------------------------------------------------------- %cluster
    @line_magic
    def cluster(self, line: str) -> Any:
        """%cluster start [-n N] [--num-gpus G] [--resources JSON] [--object-store-memory BYTES] [--engine ray]
        %cluster connect host:port | auto | ray://host:port [--engine ray] [--token T | --token-file F]
        %cluster status | stop | disconnect
        """
        parser = cluster_parser()
        try:
            args = parser.parse_args(shlex.split(line))
        except UsageError as e:
            print(str(e).strip())
            return None
        if args.command is None:
            print(parser.format_help())
            return None
        try:
            return getattr(self, f"_cluster_{args.command}")(args)
        except engines.EngineError as e:  # one sentence with what to do; the cell fails, nothing else changes
            raise IPythonUsageError(f"%cluster {args.command}: {e}") from None

    def _in_use(self) -> engines.Engine | None:
        """The engine whose cluster this kernel uses; a cluster that went away is dropped
        first (kernel_ext.notice told the user), so start and connect just work."""
        engine = engines.current()
        if not engine.is_initialized():
            return None
        if engine.gone():
            self._disconnect()
            return None
        return engine

    def _cluster_start(self, args: argparse.Namespace) -> Any:
        engine = self._in_use()
        if engine is not None:
            how = "%cluster stop" if engine.owned else "%cluster disconnect"
            print(f"A cluster is already in use at {engine.address}; run {how} first to start a new one.")
            return None
        engine = engines.get(args.engine)
        engine.start(
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            resources=args.resources,
            object_store_memory=args.object_store_memory,
        )
        engines.use(args.engine)
        display(ClusterView(engine.snapshot(), owned=True))
        return None

    def _cluster_connect(self, args: argparse.Namespace) -> Any:
        if self._in_use() is not None:
            print("Already connected to a cluster; run %cluster disconnect (or stop) first.")
            return None
        name = args.engine or ("ray" if args.address.startswith("ray://") else "runtime")
        engine = engines.get(name)
        engine.connect(args.address, token=args.token, token_file=args.token_file)
        engines.use(name)
        display(ClusterView(engine.snapshot(), owned=False))
        return None

    def _cluster_status(self, args: argparse.Namespace) -> Any:
        if self._in_use() is None:
            found = engines.current().clusters_here()
            hint = f" Clusters on this machine: {', '.join(found)}." if found else ""
            print(f"Not connected: run %cluster start or %cluster connect host:port.{hint}")
            return None
        StatusView()
        return None

    def _cluster_stop(self, args: argparse.Namespace) -> Any:
        return self._leave(
            "Cluster stopped.", "Disconnected (the cluster was started elsewhere and keeps running)."
        )

    def _cluster_disconnect(self, args: argparse.Namespace) -> Any:
        return self._leave(
            "Disconnected; the cluster this kernel started was stopped with it.", "Disconnected."
        )

    def _leave(self, if_owned: str, if_not: str) -> None:
        """Disconnect; a cluster this kernel started stops with it (it cannot outlive its owner)."""
        engine = engines.current()
        if engine.is_initialized() and engine.gone():
            address = engine.address
            self._disconnect()
            print(f"The cluster at {address} was already gone; this kernel let go of it.")
            return None
        engine = self._in_use()
        if engine is None:
            print("No cluster in use.")
            return None
        owned = engine.owned
        self._disconnect()
        print(if_owned if owned else if_not)
        return None

    def _disconnect(self) -> None:
        if StatusView.current is not None:
            StatusView.current.stop()
        ProgressView.stop_all()
        ClusterView.forget()
        notice.forget()
        self.namespaces.clear()
        engines.current().shutdown()

    # -------------------------------------------------------------- %%remote
    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """%%remote [--num-cpus N] [--num-gpus G] [--resources JSON] [--actor NAME] [--no-wait]

        Run the cell on the cluster: the names it reads come from the notebook,
        the names it assigns and its last value come back.
        """
        try:
            args = remote_parser().parse_args(shlex.split(line))
        except UsageError as e:
            print(str(e).strip())
            return None
        engine = self._in_use()
        if engine is None:
            print("Not connected: run %cluster start or %cluster connect host:port first.")
            return None
        try:
            reads, writes, has_last = remote_cell.analyze(cell)
        except SyntaxError:
            self.shell.showsyntaxerror()
            return None
        user_ns = self.shell.user_ns
        ns, skipped = remote_cell.shippable(user_ns, reads)
        if skipped:
            print(
                f"%%remote: not sent (cannot be pickled): {', '.join(skipped)}. Create such values "
                "inside the cell, or keep them remote with --actor NAME."
            )
        # The cell is cached as IPython caches cells, so a remote traceback names it
        # "Cell In[N]" with its source lines; the magic's own line stays line 1.
        running = getattr(self.shell.displayhook, "exec_result", None)  # this cell's In[N]
        number = getattr(running, "execution_count", None) or self.shell.execution_count
        filename = self.shell.compile.cache(f"%%remote {line}\n{cell}", number)
        cell = "\n" + cell
        opts = {
            k: v
            for k, v in (
                ("num_cpus", args.num_cpus),
                ("num_gpus", args.num_gpus),
                ("resources", args.resources),
            )
            if v is not None
        }
        if args.actor:
            actor = self.namespaces.get(args.actor)
            if actor is None:
                actor = (
                    engine.remote(remote_cell.CellNamespace, num_cpus=0)
                    .options(name=args.actor, get_if_exists=True, **opts)
                    .remote()
                )
                self.namespaces[args.actor] = actor
            call = actor.run.options(num_returns=3)
        else:
            call = engine.remote(remote_cell.run_cell).options(**opts, num_returns=3)
        out_ref, value_ref, not_back_ref = call.remote(cell, ns, writes, has_last, filename)
        if args.no_wait:
            # The names the cell assigns land in the notebook when it finishes (before its
            # value is ready: they travel first); the cell's value is the ObjectRef's.
            def land(fut) -> None:
                if fut.exception() is None:
                    user_ns.update(fut.result())

            engine.future(out_ref).add_done_callback(land)
            return value_ref
        out, value, not_back = engine.get([out_ref, value_ref, not_back_ref])
        user_ns.update(out)
        if not_back:
            print(f"%%remote: stayed remote (cannot be pickled): {', '.join(not_back)}")
        return value if has_last else None
