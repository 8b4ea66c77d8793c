"""What a head that comes back decides about what it stored, and about nodes it hears from.

Decisions only (plain data in, plain data out; no socket, no file): the head
(`control.py`) executes them. `tests/test_head_restart.py` drives them with
plain data and the wiring with real processes.

- `trusted_nodes`: after a restart, which stored nodes are listed, and how
  long each has to report before it is declared dead (its old connection is
  gone; its DEALER reconnects to the same address by itself).
- `on_report`: a NODE_REPORT arrived; accept it, take the sender's new
  connection, tell a node declared dead to stop, or ask a node the head does
  not know to say NODE_HELLO again.
"""

from __future__ import annotations

from typing import Any

from . import membership

# Seconds a restored node has to report before the head declares it dead: a
# DEALER reconnects within half a second (protocol.tune), and reports come every second.
RESTORE_GRACE = 10.0

ACCEPT, ADOPT, EXIT, REJOIN = "accept", "adopt", "exit", "rejoin"


def trusted_nodes(
    stored: list[dict[str, Any]],
    now: float,
    wall_now: float,
    node_timeout: float,
    forget: float,
    grace: float = RESTORE_GRACE,
) -> dict[str, dict[str, Any]]:
    """The head's `nodes` table rebuilt from the store, at monotonic time `now`.

    A node alive when the head died is listed alive, with no report and no
    connection yet, as if last heard from so that it has `max(grace,
    node_timeout)` seconds to report. A node declared dead stays dead (its work
    was re-run elsewhere: if it reports, it is told to stop), until `forget`
    seconds after its death.
    """
    nodes = {}
    wait = max(grace, node_timeout)
    for row in stored:
        if not row["alive"] and wall_now - row.get("dead_at", 0.0) > forget:
            continue
        node = {k: v for k, v in row.items() if k != "dead_at"}
        node["resources_available"] = dict(node.get("resources_total") or {})
        node["report"] = None
        if node["alive"]:
            node["last_seen"] = now + wait - node_timeout
        else:  # forgotten `forget` s after its death, as if the head had never stopped
            node["last_seen"] = now - (wall_now - row.get("dead_at", wall_now))
        nodes[node["node_id"]] = node
    return nodes


def on_report(node: dict[str, Any] | None, known_ident: bytes | None, ident: bytes) -> str:
    """What to do with a NODE_REPORT from connection `ident` about `node` (None: unknown).

    ``ACCEPT`` it; ``ADOPT`` the connection first (the head restarted, or the
    node's DEALER reconnected: ZeroMQ gave it a new routing id), then accept;
    ``EXIT``: the node was declared dead and must not come back as is;
    ``REJOIN``: the head does not know it (its HELLO went to a head that died
    before storing it) and asks it to say NODE_HELLO again.
    """
    if node is None:
        return REJOIN
    if membership.must_exit(node):
        return EXIT
    if known_ident != ident:
        return ADOPT
    return ACCEPT
