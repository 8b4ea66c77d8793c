"""Spilling under faults: a spilled value deleted behind the runtime's back, a full disk."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for

from runtime import exceptions
from runtime.wire import serialization


def store_full() -> bool:
    """Whether a node of the test's cluster says it is over capacity and cannot spill."""
    return bool(list(Path(os.environ["NBCLUSTER_SHM_DIR"]).glob("nbc-*-full")))


def spill_files(root: str) -> list[Path]:
    return [p for p in Path(root).glob("*/spill/*/*") if p.is_file()]


def test_a_deleted_spill_file_raises_object_lost_and_nothing_else_breaks(no_leaks):
    import runtime as ray

    ray.init(num_cpus=1, object_store_memory=50_000_000)
    first = ray.put(np.ones(4_000_000))  # 32 MB
    second = ray.put(np.full(4_000_000, 2.0))  # over the limit: the older one spills
    deadline = time.monotonic() + 30
    while not spill_files(no_leaks) and time.monotonic() < deadline:
        time.sleep(0.1)
    (victim,) = spill_files(no_leaks)
    assert first.hex() in victim.name
    victim.unlink()

    @ray.remote
    def total(a):
        return float(a.sum())

    with pytest.raises(exceptions.ObjectLostError, match="is gone"):
        ray.get(total.remote(first), timeout=60)
    with pytest.raises(exceptions.ObjectLostError, match="compute or put it again"):
        ray.get(first, timeout=60)
    assert ray.get(total.remote(second), timeout=60) == 8_000_000.0
    assert ray.get(total.remote(ray.put(np.ones(10))), timeout=60) == 10.0


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 1 MB tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_gives_a_clear_error_and_leaves_no_partial_file(tiny_disk):
    with pytest.raises(exceptions.ObjectStoreFullError, match="no room for a .*-byte value") as info:
        serialization.serialize(np.ones(1_000_000), str(tiny_disk / "segment"), [])
    assert "del them" in str(info.value)
    assert os.listdir(tiny_disk) == []
    # Small values need no room there: they travel inline.
    wire, size, _ = serialization.serialize(np.ones(10), str(tiny_disk / "small"), [])
    assert isinstance(wire, bytes) and size == len(wire)


def test_a_full_spill_disk_refuses_new_large_values_with_the_reason_and_recovers(
    tiny_disk, no_leaks, monkeypatch
):
    import runtime as ray

    monkeypatch.setenv("NBCLUSTER_SPILL_DIR", str(tiny_disk))  # 1 MB: no 32 MB value fits
    ray.init(num_cpus=1, object_store_memory=50_000_000)

    @ray.remote
    def make(n):
        return np.ones(n)

    @ray.remote
    def total(a):
        return float(a.sum())

    first = ray.put(np.ones(4_000_000))  # 32 MB
    second = ray.put(np.full(4_000_000, 2.0))  # 64 MB held: over 50 MB, and spilling fails
    wait_for(store_full, timeout=30, what="the node to find it cannot spill")
    with pytest.raises(exceptions.ObjectStoreFullError, match="spilling to .* failed") as info:
        ray.put(np.ones(1_000_000))
    assert "No space left on device" in str(info.value) and "NBCLUSTER_SPILL_DIR" in str(info.value)
    with pytest.raises(exceptions.ObjectStoreFullError, match="spilling to .* failed"):
        ray.get(make.remote(1_000_000), timeout=60)  # a task's large result: the same error
    assert [p for p in tiny_disk.rglob("*") if p.is_file()] == []  # no partial copy left
    # Nothing else is disturbed: values held stay readable, small values still travel.
    assert ray.get(total.remote(first), timeout=60) == 4_000_000.0
    assert ray.get(ray.put(np.ones(10))).sum() == 10.0
    # Letting go of a value brings the store under capacity: large values are taken again.
    del second
    wait_for(lambda: not store_full(), timeout=30, what="the node to take large values again")
    assert ray.get(total.remote(ray.put(np.ones(1_000_000))), timeout=60) == 1_000_000.0
