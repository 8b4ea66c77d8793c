"""The node's memory monitor: when memory use passes the threshold, one worker dies, not the machine.

::

    daemon loop ── every `refresh` s ──▶ MemoryMonitor.check(now)
        usage(): the node's cgroup when it has a limit (v2, v1), else the machine
        (total - available, as Ray measures it)
        └─ above `threshold`, no kill pending ──▶ pick(candidates): the newest task
           worker first, actors last ──▶ the daemon tells the lease owner why
           (LEASE_KILLED) or keeps the actor's cause, flushes, then SIGKILLs
        a kill pending: nothing more until that process is gone (its memory is
        freed), so one hungry task costs one worker, not every worker

`pick` and `describe` decide; `usage` reads the kernel's figures; the
daemon does the sending and the killing (`Node.check_memory`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

THRESHOLD = 0.95  # as Ray's memory_usage_threshold
REFRESH = 0.25  # seconds between checks (Ray: memory_monitor_refresh_ms=250)
CGROUP_ROOT = Path("/sys/fs/cgroup")
GiB = 1024**3


def settings(conf: dict) -> tuple[float, float]:
    """(threshold, refresh seconds) from the node's settings, else the environment, else the
    defaults. A refresh of 0 turns the monitor off."""
    threshold = conf.get("memory_usage_threshold") or os.environ.get("NBCLUSTER_MEMORY_USAGE_THRESHOLD")
    refresh_ms = os.environ.get("NBCLUSTER_MEMORY_MONITOR_REFRESH_MS")
    threshold = float(threshold) if threshold else THRESHOLD
    if not 0 < threshold <= 1:
        raise ValueError(
            f"memory usage threshold {threshold} must be a fraction in (0, 1], e.g. 0.95 "
            "(--memory-usage-threshold or NBCLUSTER_MEMORY_USAGE_THRESHOLD)"
        )
    refresh = float(refresh_ms) / 1000 if refresh_ms not in (None, "") else REFRESH
    return threshold, max(refresh, 0.0)


@dataclass(frozen=True)
class Candidate:
    """A worker the monitor may kill: `kind` is "task" (leased) or "actor"."""

    pid: int
    kind: str
    since: float  # when it took this work (monotonic)
    rss: int = 0


def pick(candidates: list[Candidate]) -> Candidate | None:
    """The worker to kill: the one that most recently took a task (a task is retried, an
    actor's state is lost), actors only when no task runs; the bigger first among equals."""
    tasks = [c for c in candidates if c.kind == "task"]
    pool = tasks or [c for c in candidates if c.kind == "actor"]
    if not pool:
        return None
    return max(pool, key=lambda c: (c.since, c.rss))


def above(used: int, total: int, threshold: float) -> bool:
    return total > 0 and used / total >= threshold


def describe(victim: Candidate, used: int, total: int, threshold: float, node_id: str) -> str:
    """What the owner's error says: the figures, and what to do."""
    return (
        f"the memory monitor of node {node_id} killed its worker (pid {victim.pid}, using "
        f"{victim.rss / GiB:.2f} GiB) when the node's memory use reached {used / GiB:.2f} GiB of "
        f"{total / GiB:.2f} GiB ({used / total:.0%}, threshold {threshold:.0%}). Ask for the memory "
        "it needs with .options(memory=<bytes>) so fewer run at once, give it smaller inputs, or "
        "add memory; the threshold is --memory-usage-threshold (NBCLUSTER_MEMORY_USAGE_THRESHOLD)."
    )


# ------------------------------------------------------------------ reading


def usage() -> tuple[int, int]:
    """(used, total) bytes: the node's cgroup when it has a memory limit, else the machine."""
    found = cgroup_usage()
    if found is not None:
        return found
    import psutil

    vm = psutil.virtual_memory()
    return vm.total - vm.available, vm.total


def cgroup_usage(proc_cgroup: str = "/proc/self/cgroup", root: Path = CGROUP_ROOT) -> tuple[int, int] | None:
    """(used, limit) of this process's memory cgroup, page cache that can be dropped not
    counted; None when there is no cgroup limit below the machine's memory."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            found = _read(root / path.lstrip("/"), root, "memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            found = _read(
                root / "memory" / path.lstrip("/"),
                root / "memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            )
        else:
            continue
        if found is not None:
            return found
    return None


def _read(
    folder: Path, mount: Path, limit_file: str, usage_file: str, inactive: str
) -> tuple[int, int] | None:
    if not (folder / usage_file).exists():
        folder = mount  # a container sees its own cgroup as the mount's root
    try:
        limit_text = (folder / limit_file).read_text().strip()
        used = int((folder / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    if limit_text == "max":
        return None
    import psutil

    limit = int(limit_text)
    if limit >= psutil.virtual_memory().total:  # no limit of its own (v1 says so with a huge number)
        return None
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive:
                used -= int(value)
                break
    except (OSError, ValueError):
        pass
    return max(used, 0), limit
