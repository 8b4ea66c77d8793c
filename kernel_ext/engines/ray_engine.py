"""The Ray engine: the notebook layer on a real Ray cluster (``%cluster start|connect --engine ray``).

::

    %cluster start --engine ray ─▶ RayHead (own processes, reaper) ─▶ ray.init(address)
    %cluster connect host:port  ─▶ probe (seconds, not minutes) ─▶ ray.init(address)
    %cluster connect ray://…    ─▶ ray.init("ray://…") (Ray Client: formatted text only)

    submissions in cell N ─▶ ray_tags: task names "f|cell=N" (workers: nested tasks,
                             actor methods, via the setup hook shipped by value)
    Ray's log thread ─▶ LogRouter.handle (instead of Ray's printer) ─▶ cell N

Imported only when the Ray engine is chosen.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from typing import Any

import ray

from . import INSTALL, Engine, EngineError, ray_status, ray_tags
from .ray_bars import TqdmBars
from .ray_head import RayHead, start_head
from .ray_logs import HANDLER, LogRouter

CONNECT_TRIES = "3"  # GCS connection attempts (about a second each) before giving up
CLIENT_INIT_TRIES = 2  # Ray Client: the head starts a server per client, which can fail once
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_gcs_server_port_wait_time_s")


def probe(address: str, timeout: float = 3.0) -> None:
    """Fail fast, saying what to do, when nothing answers at `address` (host:port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise EngineError(
            f"{address!r} is not a Ray address: give the head's GCS address host:port "
            "(as `ray start --head` prints, e.g. 10.0.0.5:6379), ray://host:10001, or auto"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise EngineError(
            f"no Ray cluster answers at {address} ({e.strerror or e}): check the address "
            "`ray start --head` printed, that the head is running, and that this machine can reach it"
        ) from None


def find_auto() -> str:
    """The address ``ray.init("auto")`` would use (``RAY_ADDRESS``, else the address file the
    newest ``ray start --head`` of this machine wrote), checked: no file, or a stale one left by a
    killed cluster, fails in seconds with what to do instead of Ray's minute-long wait."""
    from ray._common.utils import get_ray_address_file

    found = os.environ.get("RAY_ADDRESS", "").strip()
    where = "RAY_ADDRESS"
    if not found:
        where = get_ray_address_file(None)
        try:
            with open(where) as f:
                found = f.read().strip()
        except OSError:
            found = ""
    if not found:
        raise EngineError(
            f"no Ray cluster is running on this machine ({where} is missing): start one with "
            "`ray start --head`, or give its address: %cluster connect host:port --engine ray"
        )
    if found.startswith("ray://"):
        probe(found.removeprefix("ray://"))
        return found
    try:
        probe(found)
    except EngineError as e:
        raise EngineError(f"{where} names {found}, but {e}") from None
    return found


def reason(e: BaseException) -> str:
    """The line of `e` that says what went wrong. Ray Client's "Initialization failure from
    server:" carries the server's whole traceback after its first line: the last line is the
    reason."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    if lines[0].startswith("Initialization failure from server") and len(lines) > 1:
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


def server_side_start_failure(e: BaseException) -> bool:
    """Whether Ray Client's head failed to start this client's own server (a process per client,
    which a busy head can fail to bring up in time): worth one more try, unlike a refused token."""
    text = str(e)
    return "Initialization failure from server" in text and not re.search(
        r"auth|token|Version mismatch", text, re.IGNORECASE
    )


def mismatch_advice(message: str) -> str | None:
    """One sentence for Ray's "Version mismatch" error, saying what to install; None if not one."""
    found = re.findall(r"Ray: (\S+)\s+Python: (\S+)", message)
    if "Version mismatch" not in message or len(found) < 2:
        return None
    (cluster_ray, cluster_py), (my_ray, my_py) = found[0], found[1]
    py = ".".join(cluster_py.split(".")[:2])
    return (
        f"The Ray cluster runs Ray {cluster_ray} on Python {cluster_py}, this kernel has Ray {my_ray} "
        f"on Python {my_py}: run this notebook in a Python {py} environment with "
        f'`pip install "ray[default]=={cluster_ray}"`.'
    )


class RayEngine(Engine):
    name = "ray"
    refresh = ray_status.REFRESH

    def __init__(self) -> None:
        self.head: RayHead | None = None
        self.router: Any = None
        self.logs: LogRouter | None = None
        self._address = ""
        self._dashboard = ""
        self._token: str | None = None
        self._started_at = 0.0
        self._saved_env: dict[str, str | None] = {}
        self._client = False
        self._remote: dict[Any, Any] = {}
        self._snap: tuple[float, Any] = (0.0, None)
        self._events: tuple[float, list[dict[str, Any]]] = (0.0, [])

    # -- lifecycle -----------------------------------------------------------------
    def is_initialized(self) -> bool:
        return ray.is_initialized()

    @property
    def owned(self) -> bool:
        return self.head is not None

    @property
    def address(self) -> str:
        return self._address or "?"

    def start(self, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None) -> None:
        self.head = start_head(num_cpus, num_gpus, resources, object_store_memory)
        try:
            self._init(self.head.address, token=self.head.token, hook_in_env=True)
        except BaseException:
            self.head.stop()
            self.head = None
            raise

    def connect(self, address: str, token: str | None = None, token_file: str | None = None) -> None:
        if address == "auto":
            address = find_auto()
        else:
            probe(address.removeprefix("ray://"))
        if token_file and not os.path.isfile(token_file):
            raise EngineError(f"--token-file {token_file}: no such file (it holds the cluster's Ray token)")
        self._init(address, token=token, token_file=token_file)

    def _init(
        self, address: str, token: str | None = None, token_file: str | None = None, hook_in_env: bool = False
    ) -> None:
        """Join `address`; `hook_in_env`: its workers run our setup hook already (a head we started)."""
        env = {"RAY_gcs_server_port_wait_time_s": CONNECT_TRIES}
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        elif token_file:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=os.path.abspath(token_file))
        self._set_env(env)
        ray.cloudpickle.register_pickle_by_value(ray_tags)
        self._client = address.startswith("ray://")
        # Ray Client cannot ship a callable hook (its runtime_env is JSON), and naming ours by
        # module would need nbcluster on the cluster: over ray:// only the driver tags.
        # A cluster we join gets the hook in the job's runtime_env, which costs a worker start now
        # and then (Ray keeps workers per environment); one we started has it in its workers' env.
        hook = {} if self._client or hook_in_env else {"worker_process_setup_hook": ray_tags.setup_worker}
        for attempt in range(CLIENT_INIT_TRIES if self._client else 1):
            try:
                ctx = ray.init(
                    address=address,
                    runtime_env=hook,
                    logging_level=logging.WARNING,
                    log_to_driver=True,
                )
                break
            except Exception as e:  # noqa: BLE001 - said in one sentence with what to do
                if attempt + 1 < CLIENT_INIT_TRIES and server_side_start_failure(e):
                    ray.shutdown()
                    continue
                self._restore_env()
                raise self._explain(address, e) from None
        os.environ.pop("RAY_gcs_server_port_wait_time_s", None)
        self._address = address
        self._dashboard = getattr(ctx, "dashboard_url", "") or ""
        self._token = token or (
            open(token_file).read().strip() if token_file else os.environ.get("RAY_AUTH_TOKEN")
        )
        self._started_at = time.time()
        self._snap = (0.0, None)
        self._events = (0.0, [])
        self._route_logs()

    def _explain(self, address: str, e: Exception) -> EngineError:
        chain, cause = [], e
        while cause is not None and len(chain) < 5:  # Ray wraps the reason in a ConnectionError
            chain.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__ or cause.__context__
        text = "\n".join(chain)
        advice = mismatch_advice(text)
        if advice:
            return EngineError(advice)
        if "InvalidAuthToken" in text or "AuthenticationError" in text:
            return EngineError(
                f"the Ray cluster at {address} wants its authentication token: pass --token TOKEN or "
                "--token-file FILE (the head's ~/.ray/auth_token, or `ray get-auth-token`)"
            )
        if "ray[client]" in text or "grpc" in text.lower() and self._client:
            return EngineError(
                f"Ray Client needs ray[client]: run {INSTALL['ray']}. ({text.splitlines()[0]})"
            )
        first = reason(e)
        return EngineError(
            f"could not connect to the Ray cluster at {address}: {first} — check that the head is "
            "running and reachable (for another network use ray://host:10001)"
        )

    def shutdown(self) -> None:
        self._unroute_logs()
        try:
            ray.shutdown()
        finally:
            self._restore_env()
            head, self.head = self.head, None
            if head is not None:
                head.stop()
            self._address = ""
            self._remote.clear()

    def _set_env(self, env: dict[str, str]) -> None:
        self._saved_env = {k: os.environ.get(k) for k in _AUTH_VARS}
        for k in _AUTH_VARS:
            if k in env:
                os.environ[k] = env[k]
        self._reset_token_cache()

    def _restore_env(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}
        self._reset_token_cache()

    @staticmethod
    def _reset_token_cache() -> None:
        """Make Ray re-read RAY_AUTH_* (it caches its config and the token; private, as Ray does it)."""
        try:
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        except Exception:
            pass

    # -- output --------------------------------------------------------------------
    def attach_output(self, router: Any) -> None:
        self.router = router
        self.logs = LogRouter(router)
        self.logs.bars = TqdmBars(router)
        ray_tags.install(self._tag, self._created)
        if ray.is_initialized():
            self._route_logs()

    def detach_output(self) -> None:
        self._unroute_logs()
        ray_tags.uninstall()
        self.router = self.logs = None

    def _tag(self) -> str | None:
        router, logs = self.router, self.logs
        if router is None or logs is None:
            return None
        tag = router.current_tag()
        if tag is not None:
            logs.submitted(router.ctx_of_tag(tag))
        return tag

    def _created(self, class_name: str) -> None:
        if self.router is not None and self.logs is not None:
            self.logs.created_actor(class_name, self.router.current_ctx())

    def _route_logs(self) -> None:
        if self.logs is None:
            return
        if self._client:
            from ray.util.client import logsclient

            logs = self.logs
            logsclient.LogstreamClient.stdstream = lambda _self, level, msg: logs.handle_text(
                2 if level == -2 else 1, msg
            )
            return
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler(HANDLER, self.logs.handle)

    def _unroute_logs(self) -> None:
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

            dispatcher.remove_handler(HANDLER)
        except Exception:
            pass

    # -- status, tasks ------------------------------------------------------------------
    def snapshot(self, timeout: float = 30.0):
        taken, snap = self._snap
        if snap is not None and time.monotonic() - taken < self.refresh:
            return snap  # views poll at their own rate; the cluster is asked at most every `refresh` s
        snap = ray_status.snapshot(self._address, self._dashboard, self._token, self._started_at)
        self._snap = (time.monotonic(), snap)
        return snap

    def task_events(self, since: float) -> list[dict[str, Any]]:
        taken, events = self._events
        if not taken or time.monotonic() - taken >= self.refresh:  # as snapshot(): once per `refresh` s
            events = ray_status.task_events(self._address, self._dashboard, 0.0) or []
            self._events = (time.monotonic(), events)
        return [e for e in events if e["end"] > since]

    def remote(self, obj: Any, **options: Any) -> Any:
        key = (obj, tuple(sorted(options.items())))
        made = self._remote.get(key)
        if made is None:
            made = self._remote[key] = ray.remote(**options)(obj) if options else ray.remote(obj)
        return made

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return ray.get(refs, timeout=timeout)

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return ray.wait(refs, num_returns=num_returns, timeout=timeout)

    def future(self, ref: Any) -> Any:
        return ref.future()

    def clusters_here(self) -> list[str]:
        try:
            from ray._private.utils import read_ray_address

            found = read_ray_address()
            return [found] if found else []
        except Exception:
            return []
