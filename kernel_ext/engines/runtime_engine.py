"""The default engine: our own runtime (``import runtime as ray``)."""

from __future__ import annotations

from typing import Any

import runtime
from runtime import config as cfg
from runtime import session
from runtime.snapshot import ClusterSnapshot, snapshot
from runtime.timeline import task_events

from . import Engine, cluster_gone


class RuntimeEngine(Engine):
    name = "runtime"

    def __init__(self) -> None:
        self.router: Any = None
        self._remote: dict[Any, Any] = {}
        if self._watch not in session.state.client_hooks:
            session.state.client_hooks.append(self._watch)
        if session.state.client is not None and not session.state.worker:
            self._watch(session.state.client)

    def _watch(self, client: Any) -> None:
        """Tell the notebook layer when this driver's cluster goes away (its I/O thread notices
        the node's socket closing at once; see runtime/client/io_loop.py)."""
        address = client.head_address or "?"
        client.on_dead.append(lambda reason: cluster_gone(self, address, reason))

    def gone(self) -> str:
        client = session.state.client
        return client.dead_reason if client is not None else ""

    def is_initialized(self) -> bool:
        return runtime.is_initialized()

    @property
    def owned(self) -> bool:
        return session.state.head_proc is not None

    @property
    def address(self) -> str:
        info = session.state.info
        return info.head_address if info else "?"

    def start(self, num_cpus=None, num_gpus=None, resources=None, object_store_memory=None) -> None:
        runtime.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=resources,
            object_store_memory=object_store_memory,
        )

    def connect(self, address: str, token: str | None = None, token_file: str | None = None) -> None:
        if token_file:  # the head's connection file (with its encryption key), or a bare key
            with open(token_file) as f:
                text = f.read().strip()
            token = token_file if text.startswith("{") else text
        runtime.init(address=address, token=token)

    def shutdown(self) -> None:
        runtime.shutdown()

    # -- output: the runtime carries each task's cell (ctx) itself -----------------------
    def attach_output(self, router: Any) -> None:
        self.router = router
        session.state.ctx_provider = router.current_ctx
        if router.install not in session.state.client_hooks:
            session.state.client_hooks.append(router.install)
        if session.state.client is not None:
            router.install(session.state.client)

    def detach_output(self) -> None:
        router, self.router = self.router, None
        if router is None:
            return
        if router.install in session.state.client_hooks:
            session.state.client_hooks.remove(router.install)
        session.state.ctx_provider = None
        if session.state.client is not None:
            from runtime.client import print_log

            session.state.client.log_handler = print_log

    def snapshot(self, timeout: float = 30.0) -> ClusterSnapshot:
        return snapshot(timeout=timeout)

    def task_events(self, since: float) -> list[dict[str, Any]]:
        client = session.client_or_none()
        if client is None:
            return []
        info = session.state.info
        cluster_id = info.cluster_id if info is not None else client.cluster_id
        return task_events(cluster_id, since, head=client)

    def remote(self, obj: Any, **options: Any) -> Any:
        key = (obj, tuple(sorted(options.items())))
        made = self._remote.get(key)
        if made is None:
            made = self._remote[key] = runtime.remote(**options)(obj) if options else runtime.remote(obj)
        return made

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return runtime.get(refs, timeout=timeout)

    def wait(self, refs: list, num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        return runtime.wait(refs, num_returns=num_returns, timeout=timeout)

    def clusters_here(self) -> list[str]:
        return [c.head_address for c in cfg.list_clusters()]
