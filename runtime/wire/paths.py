"""Values that live in another node's shared memory: which a batch names, and the batch with
local copies in their place.

A large value travels as the path of its segment. A process can map only
its own node's segments, so whoever receives a batch from another node
first has its node pull the others (`runtime.node.transfer`): the
gateway for the nodes' relay, the receiving process for a direct link
(`runtime.client.arrivals`). Both use these two functions.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from .. import config as cfg
from ..exceptions import ObjectLostError
from .protocol import PROTOCOL, SPEC_ARGS, Kind


def segment_node(path: str) -> str:
    """The node id in a segment's name (``nbc-<cluster>-<node>-<object>``), or ""."""
    name = os.path.basename(path)
    parts = name.split("-", 3)
    return parts[2] if len(parts) == 4 and name.startswith(cfg.SHM_PREFIX) else ""


def foreign_paths(batch: list, node_id: str) -> list[tuple[str, bool]]:
    """Segments named in `batch` that live on a node other than `node_id`: (path, move?).

    Move: a task's result, whose only copy then lives here (its owner's node);
    the rest are arguments and values, copied and cached."""
    out: list[tuple[str, bool]] = []

    def check(value: Any, move: bool) -> None:
        if isinstance(value, str) and segment_node(value) not in ("", node_id):
            out.append((value, move))

    for msg in batch:
        kind = msg[0]
        if kind == Kind.EXECUTE:  # the task's fields as a plain tuple (protocol.spec_of)
            check(msg[1][SPEC_ARGS], False)
            for _, value in msg[2].values():
                check(value, False)
        elif kind == Kind.SUBMIT:
            check(msg[1].args, False)
        elif kind == Kind.DONE:
            for result in msg[2]:
                check(result[2], True)
        elif kind == Kind.RESULT:
            check(msg[3], False)
    return out


def rewrite(batch: list, mapping: dict[str, str | None]) -> list:
    """`batch` with each path in `mapping` replaced by its local copy (None: lost with its node)."""
    lost = pickle.dumps(
        ObjectLostError(
            "its value could not be copied from the node that holds it (that node is gone, "
            "or sent nothing for NBCLUSTER_PULL_STALL_S seconds; the receiving node's log says which)"
        ),
        PROTOCOL,
    )

    def swap(is_error: bool, value: Any) -> tuple[bool, Any]:
        if isinstance(value, str) and value in mapping:
            local = mapping[value]
            return (True, lost) if local is None else (is_error, local)
        return is_error, value

    out = []
    for msg in batch:
        kind = msg[0]
        if kind == Kind.EXECUTE:
            fields = msg[1]
            args = fields[SPEC_ARGS]
            if isinstance(args, str) and mapping.get(args):
                fields = (*fields[:SPEC_ARGS], mapping[args], *fields[SPEC_ARGS + 1 :])
            resolved = {dep: swap(*v) for dep, v in msg[2].items()}
            msg = (kind, fields, resolved, *msg[3:])
        elif kind == Kind.SUBMIT:
            spec = msg[1]
            if isinstance(spec.args, str) and mapping.get(spec.args):
                msg = (kind, spec._replace(args=mapping[spec.args]), *msg[2:])
        elif kind == Kind.DONE:
            results = []
            lost_any = False
            for object_id, is_error, value, size, contained in msg[2]:
                lost_any |= isinstance(value, str) and value in mapping and mapping[value] is None
                is_error, value = swap(is_error, value)
                results.append((object_id, is_error, value, size, contained))
            # A result lost with its node on the way here: its owner re-runs the task (lineage).
            msg = (kind, msg[1], results, True if lost_any else msg[3], *msg[4:])
        elif kind == Kind.RESULT:
            is_error, value = swap(msg[2], msg[3])
            msg = (kind, msg[1], is_error, value, *msg[4:])
        out.append(msg)
    return out
