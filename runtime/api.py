"""The public API, Ray's on purpose: ``import runtime as ray`` and go."""

from __future__ import annotations

import atexit
import inspect
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from . import config as cfg
from . import launcher, session
from .actor import ActorClass, ActorHandle
from .client import HEAD, NODE, Client
from .exceptions import (
    ConnectionFailedError,
)
from .object_ref import ObjectRef, value_of
from .remote_function import RemoteFunction
from .wire import serialization
from .wire.protocol import Kind, ids

_state = session.state
_lock = session.lock
_client = session.client
_client_or_none = session.client_or_none


class ClusterInfo(dict):
    """What `init()` returns: the addresses (``address_info``), usable as a context manager."""

    @property
    def address_info(self) -> dict:
        return self

    def __enter__(self) -> ClusterInfo:
        return self

    def __exit__(self, *exc) -> None:
        shutdown()


_INERT_INIT = {
    "ignore_reinit_error",
    "log_to_driver",
    "logging_level",
    "include_dashboard",
    "dashboard_host",
    "dashboard_port",
    "configure_logging",
    "runtime_env",
    "local_mode",
    "_temp_dir",
    "num_returns",
    "object_spilling_directory",
    "_system_config",
}


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    token: str | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    **kwargs: Any,
) -> ClusterInfo:
    """Start a local cluster owned by this process, or attach to a running one.

    With no address, starts a head, a node daemon and one pre-started worker
    per core; they exit with this process. ``address="host:port"`` or
    ``"auto"`` (the newest cluster started with ``nbcluster start`` on this
    machine) attaches instead; the key comes from the cluster's connection
    file, or `token` when the file is not on this machine.

    Example::

        >>> import runtime as ray
        >>> ray.init(num_cpus=2, resources={"alice": 2})
        >>> ray.shutdown()
    """
    unknown = set(kwargs) - _INERT_INIT
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    with _lock:
        if _state.client is not None and _state.client.dead_reason and not _state.worker:
            shutdown()  # the cluster went away: init() starts or joins one again, as its error says
        if _state.client is not None:
            if _state.worker or ignore_reinit_error:
                return ClusterInfo(_address_info())
            raise RuntimeError(
                "init() was already called in this process; call shutdown() first, or pass "
                "ignore_reinit_error=True"
            )
        if address is None:
            address = os.environ.get("RAY_ADDRESS") or os.environ.get("NBCLUSTER_ADDRESS")
        if address in (None, "", "local"):
            res = launcher.default_resources(num_cpus, num_gpus, resources)
            info, proc, node_pid = launcher.start_cluster(
                resources=res, object_store_memory=object_store_memory
            )
            _state.head_proc = proc
            _connect(info, node_address=info.node_address, node_pid=node_pid, namespace=namespace)
        else:
            if num_cpus is not None or num_gpus is not None or resources or object_store_memory:
                raise ValueError(
                    "num_cpus, num_gpus, resources and object_store_memory describe a new "
                    "cluster; they cannot be given when connecting to an existing one at "
                    f"{address!r}. Set them with `nbcluster start --head` instead."
                )
            info = cfg.find_cluster(address)
            if token is not None and os.path.isfile(token):  # a copy of the connection file
                info = cfg.ConnectionInfo.read(token)
                if address != "auto":
                    info.head_address = address
            elif info is None:
                port = address.rpartition(":")[2]
                headless = cfg.headless_cluster(int(port) if port.isdigit() else 0)
                if headless is not None and (address == "auto" or port.isdigit()):
                    raise ConnectionFailedError(
                        f"the head of the cluster at {headless.head_address} is down (its node still "
                        "runs and waits for it); retry once it is back. If it was killed, `nbcluster "
                        f"start --head --port {headless.head_address.rpartition(':')[2]}` restores it."
                    )
                if address == "auto" or token is None:
                    raise ConnectionFailedError(
                        f"no running cluster found at {address!r} on this machine. Start one with "
                        "`nbcluster start --head`, or pass the cluster key with token=... "
                        "(from its connection file) to connect to another machine's head"
                    )
                info = cfg.ConnectionInfo(cluster_id="", head_address=address, key=token)
            elif token is not None:
                info.key = token
            _connect(info, node_address=info.node_address or None, node_pid=0, namespace=namespace)
        return ClusterInfo(_address_info())


def _connect(
    info: cfg.ConnectionInfo, node_address: str | None, node_pid: int, namespace: str | None
) -> None:
    key = bytes.fromhex(info.key)

    def fail() -> ConnectionFailedError:
        if _state.head_proc is not None:
            launcher.stop_embedded(_state.head_proc)
            _state.head_proc = None
        return ConnectionFailedError(
            f"could not reach the cluster at {info.head_address}: no answer within 10 s. Either "
            "nothing listens there, or the key is wrong (authentication failed: messages signed "
            "with another key are dropped). Check the address and the key/connection file; a "
            "head that listens beyond loopback encrypts, so pass its connection file "
            "(token='cluster.key'), not only the key."
        )

    client = Client(
        cluster_id=info.cluster_id,
        key=key,
        node_address=node_address,
        head_address=info.head_address,
        node_id="",
        node_pid=node_pid,
        curve_public=info.curve_public,
    )
    try:
        hello = client.request("hello", socket.gethostname(), cfg.local_addresses(), timeout=10.0)
    except ConnectionFailedError as e:
        client.close(say_bye=False)
        if client.signer.auth_failed:
            raise e from None
        raise fail() from None
    node = hello["node"]
    remote = node is None  # no node on this machine: use one through its gateway (TCP)
    if remote:
        alive = [n for n in hello["nodes"] if n["alive"]]
        if not alive:
            client.close()
            raise ConnectionFailedError(f"the cluster at {info.head_address} has no live node")
        node = alive[0]  # the head's node: the first to join
    if remote or node_address != node["address"]:
        client.close()
        client = Client(
            cluster_id=hello["cluster_id"],
            key=key,
            node_address=None if remote else node["address"],
            head_address=info.head_address,
            node_id="",
            node_pid=0 if remote else node["pid"],
            curve_public=info.curve_public,
            gateway=node["gateway"] if remote else "",
        )
    client.cluster_id = hello["cluster_id"]
    client.node_id = node["node_id"]
    ids.set_home(node["node_id"])
    client.job_id = hello["job_id"]
    client.node_pid = 0 if remote else (node_pid or node["pid"])
    for hook in list(_state.client_hooks):
        hook(client)
    _state.client = client
    _state.info = info
    _state.job_id = hello["job_id"]
    _state.node = node
    _state.namespace = namespace or f"_job{hello['job_id']}_{ids.next().hex()[:8]}"
    _state.worker = False


def _address_info() -> dict:
    info = _state.info
    node = _state.node or {}
    if info is None and _state.conf is not None:
        return {"address": _state.conf.get("head_address"), "node_id": _state.conf.get("node_id")}
    return {
        "address": info.head_address if info else None,
        "cluster_id": info.cluster_id if info else None,
        "node_id": node.get("node_id"),
        "node_ip_address": node.get("ip"),
        "connection_file": str(info.path) if info and info.cluster_id else None,
        "embedded": _state.head_proc is not None,
    }


def shutdown() -> None:
    """Disconnect; a cluster that `init()` started is stopped and cleaned up."""
    with _lock:
        client = _state.client
        if client is None or _state.worker:
            return
        _state.client = None
        _state.info = None
        _state.node = None
        try:
            client.close()
        finally:
            proc = _state.head_proc
            _state.head_proc = None
            if proc is not None:
                launcher.stop_embedded(proc)


atexit.register(shutdown)


def _auto_init() -> None:
    """Ray's edge: the first `.remote()`, `get` or `put` before `init()` calls `init()`.

    It starts a local cluster (or attaches to ``RAY_ADDRESS``/``NBCLUSTER_ADDRESS``);
    ``NBCLUSTER_AUTO_INIT=0`` (or Ray's ``RAY_ENABLE_AUTO_CONNECT=0``) turns it off.
    """
    for var in ("NBCLUSTER_AUTO_INIT", "RAY_ENABLE_AUTO_CONNECT"):
        if os.environ.get(var, "1").lower() in ("0", "false", "no"):
            return
    if sys.is_finalizing():
        return
    with _lock:
        if _state.client is None:
            init()


session.state.auto_init = _auto_init


def is_initialized() -> bool:
    """True after `init()` (and always inside tasks and actors)."""
    return _state.client is not None


def remote(*args, **options):
    """Make a function a task (`RemoteFunction`) or a class an actor (`ActorClass`).

    Use bare (``@remote``) or with options (``@remote(num_cpus=2,
    resources={"alice": 1}, max_retries=1)``).
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("use @remote or @remote(option=value, ...)")
    return lambda obj: _make_remote(obj, options)


def _make_remote(obj: Any, options: dict) -> Any:
    if inspect.isclass(obj):
        return ActorClass(obj, options)
    if callable(obj):
        return RemoteFunction(obj, options)
    raise TypeError(f"@remote applies to functions and classes, not {type(obj).__name__}")


def put(value: Any) -> ObjectRef:
    """Store `value` in the cluster; large values go to shared memory once.

    Example::

        >>> ref = ray.put(numpy.ones((1000, 1000)))
        >>> ray.get(ref).shape
        (1000, 1000)
    """
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself to tasks")
    client = _client()
    object_id = ids.next() + b"P"
    wire, size, contained = serialization.serialize(value, client.segment(object_id))
    ref = ObjectRef(object_id, client, announce=False)
    client.store_local(object_id, False, wire)
    client.send(NODE, (Kind.PUT, object_id, False, wire, size, contained))
    return ref


def get(object_refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None) -> Any:
    """The value(s) of one ref or a list of refs, waiting until they are ready.

    A task's exception is raised here as an instance of both `TaskError`
    and its own class. ``timeout`` (seconds) raises `GetTimeoutError`.
    """
    client = _client()
    if isinstance(object_refs, ObjectRef):
        client.fetch([object_refs._id], timeout)
        return value_of(client, object_refs)
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(
            f"get() expects an ObjectRef or a list of ObjectRefs, got {type(object_refs).__name__}. "
            "Call it on the value .remote() returned."
        )
    for r in object_refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(
                f"get() expects a list of ObjectRefs, but it contains {type(r).__name__} {r!r:.60}"
            )
    client.fetch([r._id for r in object_refs], timeout)
    return [value_of(client, r) for r in object_refs]


def wait(
    object_refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Split refs into (ready, not ready) once `num_returns` are ready or `timeout` passes.

    Both lists keep the order of `object_refs`.
    """
    client = _client()
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expects a list of ObjectRefs, got {type(object_refs).__name__}")
    for r in object_refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"wait() expects ObjectRefs, got {type(r).__name__}")
    if len(set(object_refs)) != len(object_refs):
        raise ValueError("wait() got the same ObjectRef twice; pass each ref once")
    if num_returns < 0 or num_returns > len(object_refs):
        raise ValueError(
            f"num_returns={num_returns} must be between 0 and the number of refs ({len(object_refs)})"
        )
    ready_ids = set(client.fetch([r._id for r in object_refs], timeout, num=num_returns))
    ready, not_ready = [], []
    for r in object_refs:
        (ready if r._id in ready_ids and len(ready) < num_returns else not_ready).append(r)
    return ready, not_ready


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes `object_ref`: `get` then raises `TaskCancelledError`.

    A queued task never runs; a running one gets KeyboardInterrupt, or its
    worker is killed with ``force=True``.
    """
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}")
    if object_ref._id.endswith(b"P"):
        raise ValueError("cancel() applies to task results, not to put() objects")
    _client().cancel(object_ref.task_id(), force)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's process now; its pending calls fail with `ActorDiedError`."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() expects an actor handle, got {type(actor).__name__}")
    _client().kill_actor(actor._actor_id, no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the named actor (created with ``.options(name=...)``)."""
    client = _client()
    actor_id, meta = client.request("lookup_name", name, namespace or _state.namespace)
    return ActorHandle(actor_id, meta, client)


def _ray_node(n: dict) -> dict:
    return {
        "NodeID": n["node_id"],
        "Alive": n["alive"],
        "alive": n["alive"],
        "NodeManagerAddress": n["ip"],
        "NodeManagerHostname": n["hostname"],
        "NodeName": n["ip"],
        "Address": n["address"],
        "Resources": dict(n["resources_total"], **{f"node:{n['ip']}": 1.0}),
    }


def nodes() -> list[dict]:
    """The cluster's nodes, shaped like Ray's: NodeID, Alive, NodeManagerAddress, Resources."""
    return [_ray_node(n) for n in _client().request("nodes")]


def cluster_resources() -> dict[str, float]:
    """Total resources of the live nodes."""
    total: dict[str, float] = {}
    for n in _client().request("nodes"):
        if n["alive"]:
            for k, v in _ray_node(n)["Resources"].items():
                total[k] = total.get(k, 0.0) + v
    return total


def available_resources() -> dict[str, float]:
    """Resources not in use right now (a node reports a change within ~0.1 s; a driver gives
    back an idle lease of CPUs after 1 s, of other resources at once)."""
    total: dict[str, float] = {}
    for n in _client().request("nodes"):
        if n["alive"]:
            for k, v in n["resources_available"].items():
                if v > 0:
                    total[k] = total.get(k, 0.0) + v
    return total


def get_gpu_ids() -> list[int]:
    """GPU ids given to the current task or actor (from ``CUDA_VISIBLE_DEVICES``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(x) for x in visible.split(",") if x.strip().isdigit()]


class RuntimeContext:
    """Where the caller runs: node, job, task and actor ids (Ray's runtime context)."""

    def get_node_id(self) -> str:
        if _state.worker:
            return _state.conf["node_id"]
        return (_state.node or {}).get("node_id", "")

    def get_job_id(self) -> str:
        return f"{_state.job_id:08x}"

    def get_task_id(self) -> str | None:
        if not _state.worker:
            return None
        from .worker import current_task

        cur = current_task()
        return cur.task_id.hex() if cur else None

    def get_actor_id(self) -> str | None:
        if not _state.worker:
            return None
        from .worker import current_task

        cur = current_task()
        return cur.actor_id.hex() if cur and cur.actor_id else None

    def get_namespace(self) -> str:
        return _state.namespace

    node_id = property(get_node_id)
    job_id = property(get_job_id)
    task_id = property(get_task_id)
    actor_id = property(get_actor_id)
    namespace = property(get_namespace)

    def get(self) -> dict:
        return {
            "node_id": self.node_id,
            "job_id": self.job_id,
            "task_id": self.task_id,
            "actor_id": self.actor_id,
            "namespace": self.namespace,
        }


def get_runtime_context() -> RuntimeContext:
    _client()
    return RuntimeContext()


def _head_request(op: str, *args) -> Any:
    return _client().request(op, *args, dest=HEAD)


def _warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=3)
