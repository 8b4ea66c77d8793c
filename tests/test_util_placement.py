"""Placement groups and scheduling strategies, on one node and across three (real node daemons)."""

from __future__ import annotations

import pytest
from conftest import wait_for
from test_multinode import Cluster

import runtime
from runtime.util import placement_group, placement_group_table, remove_placement_group
from runtime.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)


@runtime.remote
def node_of():
    return runtime.get_runtime_context().get_node_id()


@runtime.remote(num_cpus=0)
class Where:
    def node(self):
        return runtime.get_runtime_context().get_node_id()


def _renamed(pg) -> list[str]:
    return [k for k in runtime.cluster_resources() if k.endswith(pg.id.hex())]


def test_a_placement_group_reserves_and_gives_back(ray):
    pg = placement_group([{"CPU": 1, "alice": 1}], strategy="PACK")
    assert ray.get(pg.ready(), timeout=30) is True and pg.wait(5)
    wait_for(lambda: len(_renamed(pg)) == 6, what="the bundle's resources in the cluster's view")
    wait_for(lambda: ray.available_resources().get("alice") == 1, what="alice reserved")
    strategy = PlacementGroupSchedulingStrategy(pg, 0)
    assert ray.get(node_of.options(scheduling_strategy=strategy).remote(), timeout=30)
    any_bundle = PlacementGroupSchedulingStrategy(pg)
    assert ray.get([node_of.options(scheduling_strategy=any_bundle).remote() for _ in range(3)], timeout=30)
    table = placement_group_table(pg)
    assert table["state"] == "CREATED" and table["strategy"] == "PACK"
    remove_placement_group(pg)
    wait_for(lambda: not _renamed(pg), what="the bundle's resources to go")
    wait_for(lambda: ray.available_resources().get("alice") == 2, what="alice given back")


def test_a_group_no_node_can_take_stays_pending(ray):
    pg = placement_group([{"CPU": 2}, {"CPU": 2}], strategy="STRICT_PACK")  # 4 CPUs on a 2-CPU node
    assert not pg.wait(0.5)
    assert placement_group_table(pg)["state"] == "PENDING"
    remove_placement_group(pg)
    ok = placement_group([{"CPU": 2}], strategy="STRICT_PACK")  # the pending one held nothing
    assert ok.wait(30)
    remove_placement_group(ok)


def test_bad_arguments_say_what_to_do(ray):
    with pytest.raises(ValueError, match="strategy must be one of"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="non-empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="reserves nothing"):
        placement_group([{"CPU": 0}])
    pg = placement_group([{"CPU": 1}])
    with pytest.raises(ValueError, match="between 0 and 0"):
        PlacementGroupSchedulingStrategy(pg, 1)
    with pytest.raises(TypeError, match="PlacementGroup"):
        PlacementGroupSchedulingStrategy("pg")
    with pytest.raises(ValueError, match="scheduling_strategy must be"):
        node_of.options(scheduling_strategy="EVERYWHERE")
    remove_placement_group(pg)


@pytest.fixture
def three_small_nodes(no_leaks):
    """Three nodes of one CPU each: the head's, and two joined over TCP."""
    cluster = Cluster(1, {})
    try:
        cluster.add_node("b", 1, {})
        cluster.add_node("c", 1, {})
        runtime.init(address=cluster.address)
        cluster.nodes["head"] = runtime.get_runtime_context().get_node_id()
        wait_for(lambda: len(runtime.nodes()) == 3, what="three nodes")
        yield cluster
    finally:
        cluster.stop()


def test_strategies_are_honoured_across_nodes(three_small_nodes):
    nodes = sorted(three_small_nodes.nodes.values())
    for nid in nodes:  # node affinity, for tasks and actors
        pinned = NodeAffinitySchedulingStrategy(nid, soft=False)
        assert runtime.get(node_of.options(scheduling_strategy=pinned).remote(), timeout=60) == nid
        actor = Where.options(scheduling_strategy=pinned).remote()
        assert runtime.get(actor.node.remote(), timeout=60) == nid
    gone = NodeAffinitySchedulingStrategy("0" * 8, soft=True)  # soft: a missing node means anywhere
    assert runtime.get(node_of.options(scheduling_strategy=gone).remote(), timeout=60) in nodes
    spread = [node_of.options(scheduling_strategy="SPREAD").remote() for _ in range(3)]
    assert sorted(runtime.get(spread, timeout=60)) == nodes

    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert pg.wait(60)
    placed = pg.bundle_nodes()
    assert sorted(placed) == nodes  # one bundle per node
    wait_for(lambda: len(_renamed(pg)) == 8, what="bundles in the view")  # 3+1 CPU, 3+1 bundle
    for i, nid in enumerate(placed):
        strategy = PlacementGroupSchedulingStrategy(pg, i)
        assert runtime.get(node_of.options(scheduling_strategy=strategy).remote(), timeout=60) == nid
    too_many = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    assert not too_many.wait(0.5)
    remove_placement_group(too_many)
    remove_placement_group(pg)

    packed = placement_group([{"CPU": 1}] * 2, strategy="PACK")  # no node has 2 CPUs: best effort
    assert packed.wait(60) and len(set(packed.bundle_nodes())) == 2
    remove_placement_group(packed)
