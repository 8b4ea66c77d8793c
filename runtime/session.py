"""This process's place in a cluster: its client, job, namespace and context.

Kept apart from `api` so the modules that submit work (`remote_function`,
`actor`, `object_ref`) can reach the client without importing the API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import ClusterGoneError, NotInitializedError

if TYPE_CHECKING:
    from .client import Client
    from .config import ConnectionInfo


class State:
    client: Client | None = None
    info: ConnectionInfo | None = None
    head_proc = None  # the cluster this process started (init() with no address)
    job_id: int = 0
    namespace: str = ""
    node: dict | None = None
    worker: bool = False  # this process is a worker
    conf: dict | None = None
    # The notebook layer's hook: the output context new tasks carry (their cell).
    ctx_provider: Callable[[], Any] | None = None
    current_task: Callable[[], Any] | None = None  # workers: the running task
    # Called with each new driver client (the notebook layer routes its output).
    client_hooks: list[Callable[[Client], None]] = []
    # What the first API call before init() runs (Ray's auto-init): set by `api`.
    auto_init: Callable[[], Any] | None = None


state = State()
lock = threading.RLock()


def client() -> Client:
    c = state.client
    if c is None and state.auto_init is not None and not state.worker:
        state.auto_init()  # as Ray: the first .remote(), get or put starts a local cluster
        c = state.client
    if c is None:
        raise NotInitializedError(
            "the runtime is not initialized: call runtime.init() first (or %cluster start in a notebook)"
        )
    if c.dead_reason and not state.worker:  # say it at .remote(), not at a later get()
        raise ClusterGoneError(c.dead_reason)
    return c


def client_or_none() -> Client | None:
    return state.client


def current_ctx() -> Any:
    """The output context a task submitted now inherits."""
    if state.worker:
        cur = state.current_task()
        return cur.ctx if cur is not None else None
    provider = state.ctx_provider
    return provider() if provider is not None else None


def attach_worker(c: Client, conf: dict, current_task: Callable[[], Any]) -> None:
    """Make `c` this worker process's connection."""
    state.client = c
    state.worker = True
    state.conf = conf
    state.current_task = current_task
