"""Where a task or actor runs: Ray's ``ray.util.scheduling_strategies``.

Pass one as ``scheduling_strategy=`` to ``@remote``/``.options()``; the strings
``"DEFAULT"`` and ``"SPREAD"`` work too. Each strategy rewrites the demand
(the resources a task asks for) and the nodes' schedulers do the rest:

    NodeAffinitySchedulingStrategy(node_id)    + {"node:<id>": 0.0001}  (every node has 1)
    PlacementGroupSchedulingStrategy(pg, i)    {"CPU": 1} -> {"CPU_group_<i>_<pg>": 1, "bundle_group_<i>_<pg>": 0.001}
    "SPREAD"                                   node affinity to the next node, round robin
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .placement_group import PlacementGroup

__all__ = [
    "DEFAULT_SCHEDULING_STRATEGY",
    "SPREAD_SCHEDULING_STRATEGY",
    "NodeAffinitySchedulingStrategy",
    "PlacementGroupSchedulingStrategy",
]

DEFAULT_SCHEDULING_STRATEGY = "DEFAULT"
SPREAD_SCHEDULING_STRATEGY = "SPREAD"
AFFINITY = 0.0001  # of the node's "node:<id>" resource (1.0): pins without limiting


def _sorted(demand: dict[str, float]) -> tuple:
    return tuple(sorted((k, v) for k, v in demand.items() if v))


class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id` (from ``ray.get_runtime_context().get_node_id()`` or ``ray.nodes()``).

    With ``soft=True`` a node that is gone (or unknown) means "anywhere"; with
    ``soft=False`` the task waits for that node (pending, shown in status).

    Example::

        >>> node = ray.nodes()[0]["NodeID"]
        >>> f.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
    """

    def __init__(
        self,
        node_id: str,
        soft: bool,
        _spill_on_unavailable: bool = False,
        _fail_on_unavailable: bool = False,
    ) -> None:
        if not isinstance(node_id, str) or not node_id:
            raise TypeError(f"node_id must be a node id string (see ray.nodes()), got {node_id!r}")
        self.node_id = node_id
        self.soft = soft

    def _apply(self, shape: tuple) -> tuple:
        if self.soft and self.node_id not in _alive_nodes(refresh=False):
            return shape
        demand = dict(shape)
        demand[f"node:{self.node_id}"] = AFFINITY
        return _sorted(demand)

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    """Run in a bundle of placement group `placement_group` (any bundle with index -1).

    The task's resources come out of the bundle's reservation, on the bundle's node.

    Example::

        >>> pg = placement_group([{"CPU": 1}] * 2, strategy="SPREAD")
        >>> ray.get(pg.ready())
        >>> f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    """

    def __init__(
        self,
        placement_group: PlacementGroup,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ) -> None:
        from .placement_group import PlacementGroup

        if not isinstance(placement_group, PlacementGroup):
            raise TypeError(
                f"placement_group must be a PlacementGroup (from placement_group(...)), got "
                f"{type(placement_group).__name__}"
            )
        n = placement_group.bundle_count
        if not isinstance(placement_group_bundle_index, int) or not -1 <= placement_group_bundle_index < n:
            raise ValueError(
                f"placement_group_bundle_index must be -1 (any bundle) or between 0 and {n - 1}, got "
                f"{placement_group_bundle_index!r}"
            )
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def _apply(self, shape: tuple) -> tuple:
        pg = self.placement_group.id.hex()
        i = self.placement_group_bundle_index
        tag = f"group_{pg}" if i < 0 else f"group_{i}_{pg}"
        demand = {f"{k}_{tag}": v for k, v in shape}
        demand[f"bundle_{tag}"] = 0.001
        return _sorted(demand)

    def __repr__(self) -> str:
        return (
            f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
            f"bundle_index={self.placement_group_bundle_index})"
        )


# -- SPREAD: round robin over the live nodes that can ever fit the demand --------

_nodes: dict[str, Any] = {"at": 0.0, "nodes": []}
_next = [0]
_lock = threading.Lock()


def _alive_nodes(refresh: bool = True) -> dict[str, dict[str, float]]:
    """Live nodes -> total resources, read at most once a second."""
    from .. import nodes

    with _lock:
        if refresh or not _nodes["nodes"] or time.monotonic() - _nodes["at"] > 1.0:
            _nodes["nodes"] = [(n["NodeID"], n["Resources"]) for n in nodes() if n["Alive"]]
            _nodes["at"] = time.monotonic()
        return dict(_nodes["nodes"])


def spread(shape: tuple) -> tuple:
    """The demand pinned to the next node (round robin) whose totals fit it; unchanged if none."""
    with _lock:
        fresh = time.monotonic() - _nodes["at"] <= 1.0 and _nodes["nodes"]
    alive = _alive_nodes(refresh=not fresh)
    fits = [nid for nid, total in sorted(alive.items()) if all(total.get(k, 0) >= v for k, v in shape)]
    if not fits:
        return shape
    with _lock:
        node = fits[_next[0] % len(fits)]
        _next[0] += 1
    demand = dict(shape)
    demand[f"node:{node}"] = AFFINITY
    return _sorted(demand)
