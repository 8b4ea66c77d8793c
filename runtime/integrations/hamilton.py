"""Hamilton dataflows on the cluster: the counterparts of Hamilton's ``h_ray`` plug-in.

``GraphAdapter`` (``h_ray.RayGraphAdapter``) makes every node of the graph a
task, its inputs the refs of the nodes it depends on; ``TaskExecutor``
(``h_ray.RayTaskExecutor``) runs the tasks of Hamilton's dynamic execution
(``Parallelizable``/``Collect``). Tags set with ``@ray_remote_options(...)``
become the options of a node's task, as Hamilton does for Ray.

Example::

    >>> from hamilton import base, driver
    >>> from runtime.integrations.hamilton import GraphAdapter
    >>> adapter = GraphAdapter(result_builder=base.PandasDataFrameResult())
    >>> dr = driver.Driver({}, my_functions, adapter=adapter)
    >>> df = dr.execute(["spend", "signups", "avg_3wk_spend", "spend_per_signup"])
"""

from __future__ import annotations

import abc
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

try:
    from hamilton import base, htypes, lifecycle, node
    from hamilton.execution import executors
    from hamilton.execution.executors import TaskFuture
    from hamilton.execution.grouping import TaskImplementation
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("runtime.integrations.hamilton needs Hamilton: pip install apache-hamilton") from e

from .. import ObjectRef, get, init, is_initialized, remote, shutdown

try:
    from hamilton.function_modifiers.metadata import RAY_REMOTE_TAG_NAMESPACE
except ImportError:  # pragma: no cover - older Hamilton
    RAY_REMOTE_TAG_NAMESPACE = "ray_remote"

__all__ = ["GraphAdapter", "TaskExecutor", "remote_options_from_tags"]

logger = logging.getLogger(__name__)


def _plain(fn: Callable) -> Callable:
    """A partial as a plain function (a task needs a function; Hamilton does the same for Ray)."""
    if isinstance(fn, functools.partial):

        def call(*args, **kwargs):
            return fn(*args, **kwargs)

        return call
    return fn


def remote_options_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """The task options of a node: its ``ray_remote.*`` tags, JSON-decoded (``@ray_remote_options``).

    Example::

        >>> remote_options_from_tags({"ray_remote.num_cpus": "2", "owner": "me"})
        {'num_cpus': 2}
    """
    prefix = f"{RAY_REMOTE_TAG_NAMESPACE}."
    return {name[len(prefix) :]: json.loads(value) for name, value in tags.items() if name.startswith(prefix)}


class GraphAdapter(
    lifecycle.base.BaseDoRemoteExecute,
    lifecycle.base.BaseDoBuildResult,
    lifecycle.base.BaseDoValidateInput,
    lifecycle.base.BaseDoCheckEdgeTypesMatch,
    lifecycle.base.BasePostGraphExecute,
    abc.ABC,
):
    """Hamilton's ``RayGraphAdapter`` on our runtime, with the same parameters.

    :param result_builder: how the outputs are combined (e.g. ``base.PandasDataFrameResult()``).
    :param ray_init_config: passed to ``runtime.init`` (None: the cluster already running,
        or one started on first use).
    :param shutdown_ray_on_completion: shut the cluster down after the graph ran.
    """

    def __init__(
        self,
        result_builder: base.ResultMixin,
        ray_init_config: dict[str, Any] | None = None,
        shutdown_ray_on_completion: bool = False,
    ) -> None:
        self.result_builder = result_builder
        if not self.result_builder:
            raise ValueError("Error: ResultMixin object required. Please pass one in for `result_builder`.")
        self.shutdown_ray_on_completion = shutdown_ray_on_completion
        if ray_init_config is not None:
            init(**ray_init_config)

    @staticmethod
    def do_validate_input(node_type: type, input_value: Any) -> bool:
        if isinstance(input_value, ObjectRef):  # its type is known once computed
            return True
        return htypes.check_input_type(node_type, input_value)

    @staticmethod
    def do_check_edge_types_match(type_from: type, type_to: type) -> bool:
        return type_from == type_to

    def do_remote_execute(
        self, *, execute_lifecycle_for_node: Callable, node: node.Node, **kwargs: Any
    ) -> ObjectRef:
        """One task per node; its keyword arguments (refs of other nodes) resolve before it runs."""
        options = remote_options_from_tags(node.tags)
        fn = remote(_plain(execute_lifecycle_for_node))
        return (fn.options(**options) if options else fn).remote(**kwargs)

    def do_build_result(self, outputs: dict[str, Any]) -> Any:
        """Combine the outputs in a task, and bring the result here."""
        return get(remote(self.result_builder.build_result).remote(**outputs))

    def post_graph_execute(self, *args: Any, **kwargs: Any) -> None:
        if self.shutdown_ray_on_completion:
            shutdown()


class TaskExecutor(executors.TaskExecutor):
    """Hamilton's ``RayTaskExecutor`` on our runtime: each task of dynamic execution is a task here.

    :param num_cpus: CPUs of the local cluster `init` starts (default: all cores).
    :param ray_init_config: more arguments for ``runtime.init``.
    :param skip_init: use the cluster already running; do not shut it down afterwards.
    """

    def __init__(
        self,
        num_cpus: int | None = None,
        ray_init_config: dict[str, Any] | None = None,
        skip_init: bool = False,
    ) -> None:
        self.num_cpus = num_cpus
        self.ray_init_config = ray_init_config or {}
        self.skip_init = skip_init

    def init(self) -> None:
        if self.skip_init:
            return
        init(num_cpus=self.num_cpus, ignore_reinit_error=is_initialized(), **self.ray_init_config)

    def finalize(self) -> None:
        if self.skip_init:
            return
        shutdown()

    def submit_task(self, task: TaskImplementation) -> TaskFuture:
        return executors.TaskFutureWrappingPythonFuture(
            remote(executors.base_execute_task).remote(task=task).future()
        )

    def can_submit_task(self) -> bool:
        return True
