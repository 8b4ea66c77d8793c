"""Spare segments (runtime/node/spares.py): the decisions with plain data, the files with
real files in this test's shared-memory folder and real mappings."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from runtime.node import spares
from runtime.node.spares import Spares
from runtime.wire import segments
from runtime.wire.arena import ARENA

MB = 2**20


def test_spares_go_after_their_time_and_the_oldest_beyond_the_limit():
    published = {"a": 0.0, "b": 8.0, "c": 9.0, "d": 9.5}
    sizes = {"a": 1, "b": 4, "c": 4, "d": 4}
    now = spares.SPARE_TTL + 1.0  # "a" waited too long
    assert spares.to_unlink(published, sizes, now, limit=100) == ["a"]
    assert spares.to_unlink(published, sizes, now, limit=8) == ["a", "b"]  # then the oldest
    assert spares.to_unlink(published, sizes, now, limit=0) == ["a", "b", "c", "d"]


def write(path: str, size: int, fill: bytes) -> None:
    """A segment written by a process that then lets go of it (the node's side alone; the
    writer that keeps its file is tested in test_arena.py)."""
    segments.write_segment(path, b"", [memoryview(fill * size)])
    ARENA.clear()


def test_a_spare_is_published_once_unmapped_and_taken_by_the_next_writer():
    folder = Path(os.environ["NBCLUSTER_SHM_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{folder}/nbc-test-node-"
    store = Spares(prefix, capacity=1 << 30)
    first = prefix + "first"
    write(first, 2 * MB, b"\x01")
    with open(first, "rb") as f:  # a reader's zero-copy view
        view = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    try:
        assert store.offer(first, 2 * MB) and not os.path.exists(first)
        assert list(store.quarantined) and not store.published  # mapped: not yet
        assert segments.take_spare(prefix + "second", 2 * MB) is None
        store.tick()
        assert list(store.quarantined)
    finally:
        view.close()
    store.tick()
    assert not store.quarantined and len(store.published) == 1
    (name,) = store.published
    inode = os.stat(os.path.join(store.dir, name)).st_ino
    assert segments.take_spare(prefix + "small", MB // 4) is None  # it waits for a bigger value
    write(prefix + "second", 2 * MB - 4096, b"\x02")  # about its size: written into it
    assert os.stat(prefix + "second").st_ino == inode and not os.listdir(store.dir)
    data, (buf,) = segments.read_segment(prefix + "second")
    assert buf.nbytes == 2 * MB - 4096 and set(bytes(buf)) == {2}
    del data, buf
    store.tick()  # it notices the spare was taken
    assert not store.published
    os.unlink(prefix + "second")
    assert not store.offer(prefix + "tiny", segments.RECYCLE_MIN - 1)  # small: unlinked as before
    store.clear()
    assert not os.path.exists(store.dir)


def test_short_memory_drops_the_spares():
    folder = Path(os.environ["NBCLUSTER_SHM_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{folder}/nbc-test-node-"
    store = Spares(prefix, capacity=1 << 30)
    write(prefix + "a", 2 * MB, b"\x01")
    assert store.offer(prefix + "a", 2 * MB) and len(store.published) == 1  # nobody maps it
    assert store.drop() and not os.listdir(store.dir) and not store.drop()
    store.clear()
