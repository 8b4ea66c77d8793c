"""Ray's ``ray.util`` on our runtime: pools, queues, joblib, ``multiprocessing`` and helpers.

Example::

    >>> import runtime as ray
    >>> from runtime.util import ActorPool
    >>> @ray.remote
    ... class Doubler:
    ...     def double(self, v):
    ...         return 2 * v
    >>> pool = ActorPool([Doubler.remote() for _ in range(2)])
    >>> list(pool.map(lambda a, v: a.double.remote(v), range(4)))
    [0, 2, 4, 6]

Submodules: `queue` (Queue, Empty, Full), `multiprocessing` (Pool),
`joblib` (register_ray), `scheduling_strategies`, `placement_group`.
"""

from .actor_pool import ActorPool
from .completion import as_completed, map_unordered
from .connection import connect, disconnect
from .names import list_named_actors
from .placement_group import (
    PlacementGroup,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from .serializability import inspect_serializability

__all__ = [
    "ActorPool",
    "PlacementGroup",
    "as_completed",
    "connect",
    "disconnect",
    "get_placement_group",
    "inspect_serializability",
    "list_named_actors",
    "map_unordered",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
