"""Who is in the cluster, apart from I/O: the head's decisions about its nodes' lives.

::

    NODE_HELLO ─▶ Head.nodes[id]: alive, last_seen = now
    NODE_REPORT (every second) ─▶ last_seen = now; from a node declared dead: must_exit() ─▶ EXIT
    every check_interval(timeout) s: silent(nodes, now, timeout) ─▶ [NodeDead(id, reason)]
        ─▶ Head.node_dead: alive = False; NODE_DEAD to told(...) (the other live nodes);
           the next CLUSTER_VIEW shows it dead. Each node then decides what the death takes
           with it (runtime.node.placement.node_death), each client what to run again
           (runtime.client.decisions.retry, void_requests).
    every CLUSTER_VIEW: forgotten(nodes, now) ─▶ dropped (dead for FORGET seconds)

Nothing here sends or reads the clock: `control.Head` passes `now` in and
executes what comes back. The node records are the head's dicts (``alive``,
``last_seen``, ``node_id``). `tests/test_decisions.py` drives them with plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NODE_TIMEOUT = 5.0  # seconds without a report before a node is declared dead
FORGET = 600.0  # seconds a dead node stays listed (status shows it as DEAD) before it is dropped

Node = Mapping[str, Any]  # the head's record of a node


@dataclass(frozen=True)
class NodeDead:
    """Declare this node dead, for this reason."""

    node_id: str
    reason: str


def check_interval(timeout: float) -> float:
    """How often to look for silent nodes: often enough to notice within ~timeout."""
    return min(1.0, timeout / 4)


def silent(nodes: Iterable[Node], now: float, timeout: float) -> list[NodeDead]:
    """Live nodes not heard from for over `timeout` seconds: they are dead."""
    return [
        NodeDead(node["node_id"], f"no heartbeat for {now - node['last_seen']:.1f} s")
        for node in nodes
        if node["alive"] and now - node["last_seen"] > timeout
    ]


def told(dead: str, members: Iterable[str], nodes: Mapping[str, Node]) -> list[str]:
    """Who hears of `dead`'s death (NODE_DEAD): every other member still alive."""
    return [other for other in members if other != dead and nodes[other]["alive"]]


def must_exit(node: Node | None) -> bool:
    """A report from a node declared dead: its work ran elsewhere, it must not come back as is."""
    return node is not None and not node["alive"]


def forgotten(nodes: Mapping[str, Node], now: float, keep: float = FORGET) -> list[str]:
    """Nodes dead and silent for over `keep` seconds: out of every view."""
    return [k for k, n in nodes.items() if not n["alive"] and now - n["last_seen"] > keep]
