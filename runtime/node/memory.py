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


class Reader:
    """The figures `usage` returns, from files opened once and re-read with `pread`.

    A check runs every 250 ms in the node's loop: resolving the cgroup's
    folder, opening its files and asking psutil twice cost ~1.5 ms of the
    node's CPU per check in a busy node (py-spy: 40 % of its own time while
    two workers computed), taken from the workers. Which cgroup counts is
    decided once; its limit is re-read each time (it can be changed live).
    """

    def __init__(
        self, proc_cgroup: str = "/proc/self/cgroup", root: Path = CGROUP_ROOT, meminfo: str = "/proc/meminfo"
    ) -> None:
        self.fds: list[int] = []
        self.meminfo = self._open(meminfo)
        try:
            self.machine_total = _meminfo_field(self._read(self.meminfo), b"MemTotal:")
        except ValueError:  # no /proc/meminfo: psutil's figures, and no cgroup limit below them
            self.machine_total = 0
        # (limit fd, usage fd, memory.stat fd, the inactive page cache's key there), or None
        self.cgroup: tuple[int, int, int, bytes] | None = self._find_cgroup(proc_cgroup, root)

    def usage(self) -> tuple[int, int]:
        """(used, total) bytes: the cgroup when it has a limit below the machine's memory,
        else the machine (total - available, as Ray measures it)."""
        found = self.cgroup_usage()
        if found is not None:
            return found
        if self.machine_total:
            try:
                available = _meminfo_field(self._read(self.meminfo), b"MemAvailable:")
                return self.machine_total - available, self.machine_total
            except ValueError:
                pass
        import psutil

        vm = psutil.virtual_memory()
        return vm.total - vm.available, vm.total

    def cgroup_usage(self) -> tuple[int, int] | None:
        """(used, limit) of the cgroup, page cache that can be dropped not counted; None
        without a limit of its own."""
        if self.cgroup is None:
            return None
        limit_fd, usage_fd, stat_fd, inactive = self.cgroup
        try:
            limit_text = self._read(limit_fd).strip()
            if limit_text == b"max":
                return None
            limit = int(limit_text)
            used = int(self._read(usage_fd))
        except (OSError, ValueError):
            return None
        if not self.machine_total or limit >= self.machine_total:  # v1 says "none" with a huge number
            return None
        if stat_fd >= 0:
            for line in self._read(stat_fd).splitlines():
                key, _, value = line.partition(b" ")
                if key == inactive:
                    try:
                        used -= int(value)
                    except ValueError:
                        pass
                    break
        return max(used, 0), limit

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def _open(self, path: Path | str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1
        self.fds.append(fd)
        return fd

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.pread(fd, 1 << 16, 0)
        except OSError:
            return b""

    def _find_cgroup(self, proc_cgroup: str, root: Path) -> tuple[int, int, int, bytes] | None:
        try:
            lines = Path(proc_cgroup).read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # cgroup v2
                mount, files = root, ("memory.max", "memory.current", b"inactive_file")
            elif "memory" in controllers.split(","):
                mount = root / "memory"
                files = ("memory.limit_in_bytes", "memory.usage_in_bytes", b"total_inactive_file")
            else:
                continue
            folder = mount / path.lstrip("/")
            if not (folder / files[1]).exists():
                folder = mount  # a container sees its own cgroup as the mount's root
            limit_fd, usage_fd = self._open(folder / files[0]), self._open(folder / files[1])
            if limit_fd >= 0 and usage_fd >= 0:
                return limit_fd, usage_fd, self._open(folder / "memory.stat"), files[2]
        return None


def _meminfo_field(text: bytes, key: bytes) -> int:
    """A /proc/meminfo figure in bytes (ValueError if it is not there)."""
    start = text.find(key)
    if start < 0:
        raise ValueError(key)
    end = text.find(b"\n", start)
    return int(text[start + len(key) : end if end >= 0 else None].split()[0]) * 1024


def usage() -> tuple[int, int]:
    """(used, total) bytes, read once (the node's monitor keeps a `Reader`)."""
    reader = Reader()
    try:
        return reader.usage()
    finally:
        reader.close()


def cgroup_usage(proc_cgroup: str = "/proc/self/cgroup", root: Path = CGROUP_ROOT) -> tuple[int, int] | None:
    """(used, limit) of this process's memory cgroup, read once; None without a limit below
    the machine's memory."""
    reader = Reader(proc_cgroup, root)
    try:
        return reader.cgroup_usage()
    finally:
        reader.close()
