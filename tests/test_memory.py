"""The node's memory monitor: a task that eats memory loses its worker, not the machine.

The threshold is set just above the memory this machine uses now, so the
hungry task crosses it after a few hundred MB; it would stop at 3 GB even
if the monitor did nothing, far from exhausting the machine.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import ours, wait_for
from kernel_harness import Kernel

from runtime import exceptions
from runtime.node import memory

MARGIN = 600 * 2**20  # above today's use: the hungry task crosses it, nothing else does
HOG_GB = 3


def threshold_just_above_now() -> str:
    used, total = memory.usage()
    return f"{(used + MARGIN) / total:.4f}"


def eat_memory(limit_gb: float = HOG_GB) -> int:
    """Grow a list of 100 MB blocks (pages touched) up to `limit_gb`, slowly enough to be seen."""
    import time

    blocks = []
    while len(blocks) * 0.1 < limit_gb:
        blocks.append(np.ones(100 * 2**20 // 8))
        time.sleep(0.03)
    return len(blocks)


# ------------------------------------------------------------------ decisions


def test_the_newest_task_dies_first_and_actors_last():
    old = memory.Candidate(pid=1, kind="task", since=10.0, rss=5 * 2**30)
    new = memory.Candidate(pid=2, kind="task", since=20.0, rss=2**20)
    actor = memory.Candidate(pid=3, kind="actor", since=30.0, rss=8 * 2**30)
    assert memory.pick([old, new, actor]) == new
    assert memory.pick([actor]) == actor
    assert memory.pick([]) is None
    assert memory.above(95, 100, 0.95) and not memory.above(94, 100, 0.95)


def test_the_error_says_the_figures_and_what_to_do():
    victim = memory.Candidate(pid=42, kind="task", since=1.0, rss=3 * 2**30)
    text = memory.describe(victim, used=23 * 2**30, total=24 * 2**30, threshold=0.95, node_id="n1")
    assert "pid 42" in text and "3.00 GiB" in text and "23.00 GiB of 24.00 GiB" in text
    assert ".options(memory=" in text and "--memory-usage-threshold" in text


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_cgroup_limit_is_what_counts(tmp_path, version):
    proc = tmp_path / "cgroup"
    if version == "v2":
        folder = tmp_path / "kubepods" / "pod1"
        folder.mkdir(parents=True)
        (folder / "memory.max").write_text(f"{2 * 2**30}\n")
        (folder / "memory.current").write_text(f"{2**30 + 100}\n")
        (folder / "memory.stat").write_text("anon 1000\ninactive_file 100\n")
        proc.write_text("0::/kubepods/pod1\n")
    else:
        folder = tmp_path / "memory" / "docker" / "c1"
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(f"{2 * 2**30}\n")
        (folder / "memory.usage_in_bytes").write_text(f"{2**30 + 100}\n")
        (folder / "memory.stat").write_text("cache 5\ntotal_inactive_file 100\n")
        proc.write_text("4:memory:/docker/c1\n3:cpu:/\n")
    assert memory.cgroup_usage(str(proc), tmp_path) == (2**30, 2 * 2**30)
    # The monitor's reader opens the files once and sees them change (a limit set live).
    reader = memory.Reader(str(proc), tmp_path)
    try:
        (folder / ("memory.current" if version == "v2" else "memory.usage_in_bytes")).write_text(
            f"{2**30 + 5000}\n"
        )
        assert reader.usage() == (2**30 + 4900, 2 * 2**30)
        unlimited = "max" if version == "v2" else str(2**63 - 4096)
        (folder / ("memory.max" if version == "v2" else "memory.limit_in_bytes")).write_text(unlimited)
        assert memory.cgroup_usage(str(proc), tmp_path) is None  # then the machine's memory counts
        assert reader.cgroup_usage() is None
        used, total = reader.usage()
        assert total == psutil.virtual_memory().total and 0 < used < total
    finally:
        reader.close()


def test_a_bad_threshold_is_refused_with_what_to_write():
    with pytest.raises(ValueError, match="fraction in"):
        memory.settings({"memory_usage_threshold": 1.5})
    assert memory.settings({"memory_usage_threshold": 0.5})[0] == 0.5


# ------------------------------------------------------------------ a real cluster


@pytest.fixture
def hungry_cluster(no_leaks, monkeypatch):
    import runtime

    monkeypatch.setenv("NBCLUSTER_MEMORY_USAGE_THRESHOLD", threshold_just_above_now())
    runtime.init(num_cpus=2)
    yield runtime
    runtime.shutdown()


def test_a_task_eating_memory_raises_out_of_memory_and_the_cluster_carries_on(hungry_cluster):
    ray = hungry_cluster

    @ray.remote(max_retries=0)
    def hungry():
        return eat_memory()

    @ray.remote
    def fine(x):
        return x + 1

    steady = ray.put(np.arange(1000))  # a value stored before: not lost
    with pytest.raises(exceptions.OutOfMemoryError) as err:
        ray.get(hungry.remote(), timeout=120)
    assert isinstance(err.value, MemoryError)
    text = str(err.value)
    assert "hungry() ran out of memory" in text and "memory monitor" in text, text
    assert "GiB" in text and ".options(memory=" in text, text
    assert ray.get([fine.remote(i) for i in range(10)], timeout=60) == list(range(1, 11))
    assert int(ray.get(steady).sum()) == 499500


def test_a_task_killed_for_memory_is_retried_after_memory_falls(hungry_cluster, tmp_path):
    ray = hungry_cluster
    marker = tmp_path / "first-attempt"

    @ray.remote(max_retries=2)
    def hungry_once(path):
        if not os.path.exists(path):  # the first attempt eats memory and is killed
            Path(path).write_text(str(os.getpid()))
            return eat_memory()
        return "done on retry", os.getpid()

    said, pid = ray.get(hungry_once.remote(str(marker)), timeout=120)
    assert said == "done on retry"
    assert pid != int(marker.read_text())  # another worker: the first was killed
    assert not psutil.pid_exists(int(marker.read_text()))


def test_an_actor_eating_memory_dies_with_the_reason(hungry_cluster):
    ray = hungry_cluster

    @ray.remote
    class Hoarder:
        def eat(self):
            self.kept = eat_memory()
            return self.kept

    h = Hoarder.remote()
    with pytest.raises(exceptions.ActorDiedError, match="memory monitor"):
        ray.get(h.eat.remote(), timeout=120)


def test_the_notebook_cell_shows_the_error_and_the_kernel_lives(tmp_path):
    marker = str(tmp_path / "kernel")
    env = dict(os.environ, NBCLUSTER_DIR=marker, NBCLUSTER_MEMORY_USAGE_THRESHOLD=threshold_just_above_now())
    k = Kernel(env)
    try:
        k.execute("%load_ext kernel_ext")
        k.execute("%cluster start -n 1")
        k.execute(
            textwrap.dedent(f"""
            import numpy as np, runtime, time

            @runtime.remote(max_retries=0)
            def hungry():
                blocks = []
                while len(blocks) < {HOG_GB * 10}:
                    blocks.append(np.ones(100 * 2**20 // 8))
                    time.sleep(0.03)
                return len(blocks)
            """)
        )
        cell = k.execute("runtime.get(hungry.remote())")
        (error,) = k.errors(cell)
        assert error["ename"] == "OutOfMemoryError", error
        assert "hungry() ran out of memory" in error["evalue"]
        assert k.value("runtime.get(runtime.remote(lambda: 41 + 1).remote())") == "42"
        k.execute("%cluster stop")
    finally:
        k.shutdown()
    wait_for(lambda: not ours(marker), timeout=30, what="the kernel and its cluster to exit")
