"""``list_named_actors``: the named actors alive in the cluster."""

from __future__ import annotations

from .. import get_runtime_context
from ..snapshot import snapshot

__all__ = ["list_named_actors"]


def list_named_actors(all_namespaces: bool = False) -> list[str] | list[dict[str, str]]:
    """Names of the live named actors of this job's namespace.

    With ``all_namespaces=True``: dicts ``{"name": ..., "namespace": ...}`` for every namespace.

    Example::

        >>> ray.remote(Counter).options(name="c").remote()
        >>> ray.util.list_named_actors()
        ['c']
    """
    namespace = get_runtime_context().namespace
    out = []
    for entry in snapshot().named_actors:
        if entry.get("state") == "dead":
            continue
        if all_namespaces:
            out.append({"name": entry["name"], "namespace": entry["namespace"]})
        elif entry["namespace"] == namespace:
            out.append(entry["name"])
    return out
