"""The engines the notebook layer drives: our `runtime` (the default) and Ray.

Everything the notebook shows (magics, output routing, progress bars, the
status view, ``%%remote``'s analysis of names) is written once, above this
interface. An engine supplies only what differs::

    start / connect / shutdown      a cluster owned by the kernel, or one started elsewhere
    attach_output(router)           tag submissions with their cell; feed worker output to `router`
    snapshot()                      the `ClusterSnapshot` every status view reads
    task_events(since)              finished tasks of every node, for the task stream
    gone()                          why the cluster went away ("" while it is there); the
                                    engine calls `cluster_gone` the moment it notices
    remote(obj, **options)          a task or actor class (progress actors, %%remote cells)
    get / wait / future             reading results

``import ray`` happens only when the Ray engine is chosen.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from runtime.snapshot import ClusterSnapshot

NAMES = ("runtime", "ray")
INSTALL = {"ray": 'pip install "nbcluster[ray]"'}


class EngineError(Exception):
    """A cluster could not be started or reached; the message says what to do."""


class Engine(abc.ABC):
    """What `kernel_ext` needs from a cluster engine (see the module docstring); each engine
    implements every abstract method."""

    name = ""
    refresh = 1.0  # seconds between status snapshots the views may take

    @abc.abstractmethod
    def is_initialized(self) -> bool: ...

    @property
    @abc.abstractmethod
    def owned(self) -> bool:
        """True when this kernel started the cluster (it stops with the kernel)."""
        ...

    @property
    @abc.abstractmethod
    def address(self) -> str: ...

    @abc.abstractmethod
    def start(
        self,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        resources: dict | None = None,
        object_store_memory: int | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def connect(self, address: str, token: str | None = None, token_file: str | None = None) -> None: ...

    @abc.abstractmethod
    def shutdown(self) -> None: ...

    @abc.abstractmethod
    def attach_output(self, router: Any) -> None: ...

    @abc.abstractmethod
    def detach_output(self) -> None: ...

    @abc.abstractmethod
    def snapshot(self, timeout: float = 30.0) -> ClusterSnapshot:
        """The cluster as one record; `timeout`: how long a silent cluster is waited for."""
        ...

    @abc.abstractmethod
    def task_events(self, since: float) -> list[dict[str, Any]]:
        """Tasks of every node that finished after `since` (seconds since the epoch), oldest
        first, as `runtime.timeline.task_events` gives them."""
        ...

    @abc.abstractmethod
    def remote(self, obj: Any, **options: Any) -> Any: ...

    @abc.abstractmethod
    def get(self, refs: Any, timeout: float | None = None) -> Any: ...

    @abc.abstractmethod
    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]: ...

    def future(self, ref: Any) -> Any:
        return ref.future()

    def clusters_here(self) -> list[str]:
        """Addresses of clusters running on this machine (for hints)."""
        return []

    def gone(self) -> str:
        """Why the cluster in use went away (stopped or crashed); "" while it is there."""
        return ""


_engines: dict[str, Engine] = {}
_current = {"name": "runtime"}
_router: dict[str, Any] = {"router": None}
_gone_listener: dict[str, Callable[[Engine, str, str], None] | None] = {"listener": None}


def get(name: str) -> Engine:
    """The engine called `name`, created on first use; a clear error if it is not installed."""
    if name not in NAMES:
        raise EngineError(f"unknown engine {name!r}: choose one of {', '.join(NAMES)}")
    engine = _engines.get(name)
    if engine is None:
        if name == "ray":
            try:
                import ray  # noqa: F401
            except ImportError as e:
                raise EngineError(
                    f"the Ray engine needs Ray, which is not installed here ({e}): "
                    f"run {INSTALL['ray']} and restart the kernel"
                ) from e
            from .ray_engine import RayEngine

            engine = RayEngine()
        else:
            from .runtime_engine import RuntimeEngine

            engine = RuntimeEngine()
        _engines[name] = engine
        if _router["router"] is not None:
            engine.attach_output(_router["router"])
    return engine


def current() -> Engine:
    """The engine in use (the last one started or connected; `runtime` before that)."""
    return get(_current["name"])


def use(name: str) -> Engine:
    engine = get(name)
    _current["name"] = name
    return engine


def attach_output(router: Any) -> None:
    """Route the output of every engine created so far, and of those created later, to `router`."""
    _router["router"] = router
    for engine in _engines.values():
        engine.attach_output(router)


def detach_output() -> None:
    _router["router"] = None
    for engine in _engines.values():
        engine.detach_output()


def on_gone(listener: Callable[[Engine, str, str], None] | None) -> None:
    """Call `listener(engine, address, reason)` when an engine's cluster goes away (None: stop)."""
    _gone_listener["listener"] = listener


def cluster_gone(engine: Engine, address: str, reason: str) -> None:
    """An engine noticed its cluster went away (called on the engine's own thread)."""
    listener = _gone_listener["listener"]
    if listener is not None:
        listener(engine, address, reason)
