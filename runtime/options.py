"""Options of `@remote` and `.options()`: validation and resource shapes."""

from __future__ import annotations

import warnings
from typing import Any

TASK_OPTIONS = {
    "num_cpus",
    "num_gpus",
    "resources",
    "memory",
    "max_retries",
    "retry_exceptions",
    "num_returns",
    "name",
    "scheduling_strategy",
    "runtime_env",
    "accelerator_type",
    "max_calls",
}
ACTOR_OPTIONS = {
    "num_cpus",
    "num_gpus",
    "resources",
    "memory",
    "max_restarts",
    "max_task_retries",
    "max_concurrency",
    "name",
    "namespace",
    "lifetime",
    "get_if_exists",
    "scheduling_strategy",
    "runtime_env",
    "accelerator_type",
    "max_pending_calls",
}
# Accepted for compatibility; they change nothing on this runtime.
_INERT = {"accelerator_type", "max_calls", "max_pending_calls"}


def validate(opts: dict[str, Any], actor: bool) -> dict[str, Any]:
    allowed = ACTOR_OPTIONS if actor else TASK_OPTIONS
    unknown = set(opts) - allowed
    what = "actor" if actor else "remote function"
    if unknown:
        raise ValueError(
            f"invalid option(s) for a {what}: {', '.join(sorted(unknown))}. "
            f"Valid options are: {', '.join(sorted(allowed))}"
        )
    for key in ("num_cpus", "num_gpus", "memory"):
        v = opts.get(key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
            raise ValueError(f"{key} must be a non-negative number, got {v!r}")
    res = opts.get("resources")
    if res is not None:
        if not isinstance(res, dict):
            raise TypeError(f"resources must be a dict like {{'alice': 1}}, got {type(res).__name__}")
        for name, amount in res.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"use num_{name.lower()}s=... instead of resources={{'{name}': ...}}")
            if not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"resource {name!r} must be a non-negative number, got {amount!r}")
    nr = opts.get("num_returns")
    if nr is not None and (not isinstance(nr, int) or nr < 0):
        raise ValueError(f"num_returns must be a non-negative int, got {nr!r}")
    for key in ("max_retries", "max_restarts", "max_task_retries"):
        v = opts.get(key)
        if v is not None and (not isinstance(v, int) or v < -1):
            raise ValueError(f"{key} must be an int >= -1 (-1 means forever), got {v!r}")
    mc = opts.get("max_concurrency")
    if mc is not None and (not isinstance(mc, int) or mc < 1):
        raise ValueError(f"max_concurrency must be an int >= 1, got {mc!r}")
    lifetime = opts.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"lifetime must be 'detached' or None, got {lifetime!r}")
    strategy = opts.get("scheduling_strategy")
    if strategy is not None and strategy not in ("DEFAULT", "SPREAD") and not hasattr(strategy, "_apply"):
        raise ValueError(
            f"scheduling_strategy must be 'DEFAULT', 'SPREAD', or one of runtime.util."
            f"scheduling_strategies (PlacementGroupSchedulingStrategy, NodeAffinitySchedulingStrategy), "
            f"got {strategy!r}"
        )
    if opts.get("runtime_env"):
        warnings.warn(
            "runtime_env is not supported: tasks run in the cluster's own Python environment",
            stacklevel=3,
        )
    return opts


def shape(opts: dict[str, Any], default_cpus: float) -> tuple:
    """The sorted ((resource, amount), ...) demand of a task or actor."""
    demand: dict[str, float] = {}
    cpus = opts.get("num_cpus")
    demand["CPU"] = float(default_cpus if cpus is None else cpus)
    if opts.get("num_gpus"):
        demand["GPU"] = float(opts["num_gpus"])
    if opts.get("memory"):
        demand["memory"] = float(opts["memory"])
    for name, amount in (opts.get("resources") or {}).items():
        demand[name] = float(amount)
    return tuple(sorted((k, v) for k, v in demand.items() if v))


def place(shape: tuple, strategy: Any) -> tuple:
    """The demand of one task or actor under its ``scheduling_strategy`` (see runtime.util)."""
    if strategy is None or strategy == "DEFAULT":
        return shape
    if strategy == "SPREAD":
        from .util.scheduling_strategies import spread

        return spread(shape)
    return strategy._apply(shape)
