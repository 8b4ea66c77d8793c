"""Placement groups: resources reserved in bundles across nodes (Ray's ``ray.util.placement_group``).

::

    placement_group(bundles, strategy) ─▶ the driver picks a node per bundle (PACK, SPREAD,
        STRICT_PACK, STRICT_SPREAD) from the cluster's snapshot
      ─▶ one holder actor per bundle, pinned to its node, holds the bundle's resources
         and adds them back to that node renamed: {"CPU": 2} -> CPU_group_<i>_<pg>: 2,
         CPU_group_<pg>: 2, bundle_group_<i>_<pg>, bundle_group_<pg>
      ─▶ tasks with PlacementGroupSchedulingStrategy ask for the renamed resources
    remove_placement_group ─▶ holders take the renamed resources away, then exit

A bundle no node can take keeps its holder pending, so ``pg.ready()`` does not
resolve: Ray's "pending placement group".
"""

from __future__ import annotations

import os
from typing import Any

from .. import ObjectRef, get, get_actor, kill, remote, wait
from .scheduling_strategies import AFFINITY

__all__ = [
    "PlacementGroup",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
NOWHERE = "node:none-fits-this-bundle"  # a resource no node has: the holder stays pending


class PlacementGroupID:
    """The id of a placement group (``pg.id.hex()``)."""

    def __init__(self, raw: bytes) -> None:
        self.binary = raw

    def hex(self) -> str:
        return self.binary.hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroupID) and other.binary == self.binary

    def __hash__(self) -> int:
        return hash(self.binary)

    def __repr__(self) -> str:
        return f"PlacementGroupID({self.hex()})"


def _renamed(bundle: dict[str, float], index: int, pg: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in bundle.items():
        out[f"{k}_group_{index}_{pg}"] = v
        out[f"{k}_group_{pg}"] = v
    out[f"bundle_group_{index}_{pg}"] = 1000.0
    out[f"bundle_group_{pg}"] = 1000.0
    return out


class _BundleHolder:
    """Holds one bundle's resources on its node and offers them, renamed, to the group's tasks."""

    def __init__(self, extra: dict[str, float], info: dict) -> None:
        self.extra, self.info, self.added = extra, info, False
        self.group: list = []
        self._node("add_resources")
        self.added = True

    def remember(self, holders: list) -> None:
        self.group = holders  # the first holder of a named group: how get_placement_group finds it

    def _node(self, op: str) -> None:
        from ..client import NODE
        from ..session import client

        client().request(op, self.extra, dest=NODE)

    def ready(self) -> str:
        from .. import get_runtime_context

        return get_runtime_context().get_node_id()

    def describe(self) -> tuple[dict, list]:
        return self.info, self.group

    def release(self) -> None:
        if self.added:
            self._node("remove_resources")
            self.added = False


@remote(num_cpus=0)
def _all_ready(*node_ids: str) -> bool:
    return True


class PlacementGroup:
    """A reservation of resources in bundles; schedule into it with PlacementGroupSchedulingStrategy.

    Example::

        >>> pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
        >>> ray.get(pg.ready(), timeout=10)
        True
        >>> remove_placement_group(pg)
    """

    def __init__(self, pg_id: PlacementGroupID, bundles: list[dict], strategy: str, holders: list) -> None:
        self.id = pg_id
        self.bundle_specs = bundles
        self.strategy = strategy
        self._holders = holders
        self._ready: ObjectRef | None = None

    def __reduce__(self):
        return (PlacementGroup, (self.id, self.bundle_specs, self.strategy, self._holders))

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self) -> ObjectRef:
        """A ref that resolves (to True) once every bundle is reserved."""
        if self._ready is None:
            self._ready = _all_ready.remote(*[h.ready.remote() for h in self._holders])
        return self._ready

    def wait(self, timeout_seconds: float = 30) -> bool:
        """True once every bundle is reserved; False after `timeout_seconds`."""
        ready, _ = wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def bundle_nodes(self) -> list[str]:
        """The node of each bundle (waits until all are reserved)."""
        return get([h.ready.remote() for h in self._holders])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()}, bundles={self.bundle_specs}, strategy={self.strategy})"


def _check_bundles(bundles: Any) -> list[dict[str, float]]:
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("bundles must be a non-empty list of dicts like [{'CPU': 1}, {'CPU': 1, 'GPU': 1}]")
    out = []
    for b in bundles:
        if not isinstance(b, dict) or not b:
            raise ValueError(f"each bundle must be a non-empty dict of resources, got {b!r}")
        for k, v in b.items():
            if not isinstance(k, str) or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"bundle {b!r}: resource amounts must be non-negative numbers")
        if all(v == 0 for v in b.values()):
            raise ValueError(f"bundle {b!r} reserves nothing; give at least one resource a positive amount")
        out.append({k: float(v) for k, v in b.items()})
    return out


def _fits(bundle: dict[str, float], pool: dict[str, float]) -> bool:
    return all(pool.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())


def _take(bundle: dict[str, float], pool: dict[str, float]) -> None:
    for k, v in bundle.items():
        pool[k] = pool.get(k, 0.0) - v


def _assign(bundles: list[dict], strategy: str, nodes: list[tuple[str, dict, dict]]) -> list[str | None]:
    """A node for each bundle (None: no node can take it), from (id, available, total) per node."""
    avail = {nid: dict(a) for nid, a, _ in nodes}
    total = {nid: dict(t) for nid, _, t in nodes}  # less what this group takes, as we go
    order = [nid for nid, _, _ in sorted(nodes, key=lambda n: -n[1].get("CPU", 0.0))]
    if strategy in ("PACK", "STRICT_PACK"):
        for pool in (avail, total):
            for nid in order:
                trial = dict(pool[nid])
                if all(_fits(b, trial) and not _take(b, trial) for b in bundles):
                    return [nid] * len(bundles)
        if strategy == "STRICT_PACK":
            return [None] * len(bundles)
    out: list[str | None] = []
    used: list[str] = []
    for b in bundles:
        if strategy == "PACK":
            prefer = used + [n for n in order if n not in used]
        else:  # spread: the nodes used least so far first
            prefer = sorted(order, key=lambda n: used.count(n))
            if strategy == "STRICT_SPREAD":
                prefer = [n for n in order if n not in used]
        pick = next((n for n in prefer if _fits(b, avail[n])), None)
        if pick is None:
            pick = next((n for n in prefer if _fits(b, total[n])), None)
        if pick is not None:
            _take(b, avail[pick])
            _take(b, total[pick])
            used.append(pick)
        out.append(pick)
    return out


def _cluster_nodes() -> list[tuple[str, dict, dict]]:
    from ..snapshot import snapshot

    return [(n.node_id, dict(n.resources_available), dict(n.resources_total)) for n in snapshot().alive_nodes]


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    _soft_target_node_id: str | None = None,
    bundle_label_selector: Any = None,
) -> PlacementGroup:
    """Reserve `bundles` of resources, placed by `strategy`; returns at once (``pg.ready()`` waits).

    PACK: as few nodes as possible; SPREAD: as many as possible; STRICT_PACK: one
    node or nothing; STRICT_SPREAD: one node per bundle or nothing.

    Example::

        >>> from runtime.util.placement_group import placement_group, remove_placement_group
        >>> pg = placement_group([{"CPU": 1}], strategy="PACK")
        >>> ray.get(pg.ready())
        True
        >>> remove_placement_group(pg)
    """
    bundles = _check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    pg_id = PlacementGroupID(os.urandom(14))
    pg = pg_id.hex()
    nodes = _assign(bundles, strategy, _cluster_nodes())
    info = {"id": pg, "bundles": bundles, "strategy": strategy, "name": name}
    holders = []
    for i, (bundle, node) in enumerate(zip(bundles, nodes, strict=True)):
        res = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
        res[f"node:{node}" if node else NOWHERE] = AFFINITY
        opts: dict[str, Any] = {
            "num_cpus": bundle.get("CPU", 0.0),
            "num_gpus": bundle.get("GPU", 0.0),
            "resources": res,
            "lifetime": lifetime,
        }
        if bundle.get("memory"):
            opts["memory"] = bundle["memory"]
        if name and i == 0:
            opts["name"] = f"_placement_group:{name}"
        holders.append(remote(_BundleHolder).options(**opts).remote(_renamed(bundle, i, pg), info))
    if name:
        holders[0].remember.remote(holders)
    return PlacementGroup(pg_id, bundles, strategy, holders)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Give the reservation back: the group's renamed resources go, its holders exit."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(
            f"remove_placement_group() takes a PlacementGroup, got {type(placement_group).__name__}"
        )
    holders, placement_group._holders = placement_group._holders, []
    if not holders:
        return
    by_ref = {h.ready.remote(): h for h in holders}
    placed, _ = wait(list(by_ref), num_returns=len(by_ref), timeout=0.5)
    releases = [by_ref[r].release.remote() for r in placed]  # pending ones added nothing
    if releases:
        wait(releases, num_returns=len(releases), timeout=10)
    for h in holders:
        kill(h)


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The placement group created with ``name=placement_group_name`` (by any driver of the cluster)."""
    holder = get_actor(f"_placement_group:{placement_group_name}")
    info, holders = get(holder.describe.remote())
    return PlacementGroup(
        PlacementGroupID(bytes.fromhex(info["id"])), info["bundles"], info["strategy"], holders
    )


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict:
    """State of a placement group: id, bundles, strategy, and its bundles' nodes once reserved."""
    if placement_group is None:
        raise ValueError("placement_group_table() needs the PlacementGroup to describe")
    ready, _ = wait([placement_group.ready()], timeout=1)
    return {
        "placement_group_id": placement_group.id.hex(),
        "bundles": dict(enumerate(placement_group.bundle_specs)),
        "strategy": placement_group.strategy,
        "state": "CREATED" if ready else "PENDING",
        "bundles_to_node_id": dict(enumerate(placement_group.bundle_nodes())) if ready else {},
    }
