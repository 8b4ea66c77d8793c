"""A writer's own large files (runtime/wire/arena.py): real files in this test's shared-memory
folder, the node's real quarantine (runtime/node/spares.py), real mappings in this process and
in another one."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.node.spares import Spares
from runtime.wire import arena, segments
from runtime.wire.arena import ARENA

MB = 2**20
MAP_AND_WAIT = """
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
print(m[-1], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def store():
    folder = Path(os.environ["NBCLUSTER_SHM_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    ARENA.clear()
    spares = Spares(f"{folder}/nbc-test-node-", capacity=1 << 30)
    yield spares
    ARENA.clear()
    spares.clear()
    for path in folder.glob("nbc-test-node-*"):  # the objects the tests wrote (a node frees them)
        path.unlink()


def write(path: str, size: int, fill: bytes) -> int:
    """Write a segment of one `size`-byte buffer; its inode."""
    segments.write_segment(path, b"", [memoryview(fill * size)])
    return os.stat(path).st_ino


def read(path: str) -> bytes:
    data, (buf,) = segments.read_segment(path)
    out = bytes(buf)
    del data, buf
    return out


def test_the_writer_writes_its_next_value_into_the_file_of_its_freed_one(store):
    a = write(store.prefix + "a", 2 * MB, b"\x01")
    assert store.offer(store.prefix + "a", 2 * MB)  # the node frees it
    assert list(store.quarantined) == ["q-a"] and not store.published  # its writer holds it
    b = write(store.prefix + "b", 2 * MB - 4096, b"\x02")
    assert b == a and read(store.prefix + "b") == b"\x02" * (2 * MB - 4096)
    assert os.stat(store.prefix + "b").st_size < 2 * MB  # cut to the new value's size
    store.tick()  # the node's quarantined name is gone: nothing to publish
    assert not store.published and not os.listdir(store.dir)
    c = write(store.prefix + "c", 2 * MB - 4096, b"\x03")  # b is alive: not its file
    assert c != a and read(store.prefix + "b") == b"\x02" * (2 * MB - 4096)


def test_a_file_someone_still_maps_is_not_written_until_they_let_go(store):
    a = write(store.prefix + "a", 2 * MB, b"\x01")
    with open(store.prefix + "a", "rb") as f:  # a zero-copy array from get(), here
        view = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    other = subprocess.Popen(  # and in another process
        [sys.executable, "-c", MAP_AND_WAIT, store.prefix + "a"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout.readline().strip() == "1"
    store.offer(store.prefix + "a", 2 * MB)
    try:
        assert write(store.prefix + "b", 2 * MB, b"\x02") != a
        assert view[-1] == 1 and os.path.exists(os.path.join(store.dir, "q-a"))  # untouched, back
        view.close()
        assert write(store.prefix + "c", 2 * MB, b"\x03") != a  # the other process maps it still
    finally:
        view.close()
        other.communicate("")
    assert write(store.prefix + "d", 2 * MB, b"\x04") == a
    assert read(store.prefix + "d") == b"\x04" * (2 * MB)


def test_a_file_the_writer_does_not_reuse_goes_back_to_the_node(store, monkeypatch):
    a = write(store.prefix + "a", 2 * MB, b"\x01")
    store.offer(store.prefix + "a", 2 * MB)
    store.tick()
    assert not store.published  # our descriptor: the node's lease check fails
    ARENA.sweep()
    assert len(ARENA.kept) == 1  # freed just now: kept for a value to come
    monkeypatch.setattr(arena, "KEEP_TTL", 0.0)
    ARENA.sweep()
    assert not ARENA.kept
    store.tick()
    (name,) = store.published  # an ordinary spare, any writer's
    assert os.stat(os.path.join(store.dir, name)).st_ino == a


def test_a_file_the_node_unlinks_is_let_go_at_the_next_sweep(store):
    write(store.prefix + "a", 2 * MB, b"\x01")
    (kept,) = ARENA.kept.values()
    fd = kept.fd
    store.offer(store.prefix + "a", 2 * MB)
    assert store.drop()  # memory is short: quarantined files go too
    assert not os.listdir(store.dir)
    ARENA.sweep()
    assert not ARENA.kept
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: its memory is the kernel's again


def test_at_most_keep_max_files_are_kept_the_oldest_goes_first(store):
    paths = [store.prefix + f"{i}" for i in range(arena.KEEP_MAX + 2)]
    for path in paths:
        write(path, MB, b"\x01")
    assert [e.path for e in ARENA.kept.values()] == paths[2:]
    small = store.prefix + "small"
    segments.write_segment(small, b"x" * 100, [])
    assert len(ARENA.kept) == arena.KEEP_MAX  # small values are written and closed as before


def test_a_forked_child_does_not_write_into_its_parents_files(store):
    write(store.prefix + "a", 2 * MB, b"\x01")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write_fd, str(len(ARENA.kept)).encode())
        os._exit(0)
    os.close(write_fd)
    assert os.read(read_fd, 16) == b"0"
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert len(ARENA.kept) == 1


def test_a_big_value_copied_in_two_halves_on_two_threads_lands_whole(store):
    # numpy is loaded (the split copy is numpy's, and only when the process has it already)
    values = np.random.default_rng(0).integers(0, 255, arena.SPLIT_MIN * 2 + 12345, dtype=np.uint8)
    a = write(store.prefix + "a", arena.SPLIT_MIN * 2 + 12345, b"\x01")
    store.offer(store.prefix + "a", arena.SPLIT_MIN * 2 + 12345)
    segments.write_segment(store.prefix + "b", b"head", [memoryview(values)])
    assert os.stat(store.prefix + "b").st_ino == a  # through our mapping
    data, (buf,) = segments.read_segment(store.prefix + "b")
    assert bytes(data) == b"head" and (np.frombuffer(buf, np.uint8) == values).all()
    del data, buf


def test_another_file_under_the_freed_name_is_not_written(store):
    """Our file was unlinked (its object spilled to disk, say), another was written under that
    name (a task run again makes the same object id) and freed: that file is not ours to write
    through our mapping of the old one."""
    write(store.prefix + "a", 2 * MB, b"\x01")
    os.unlink(store.prefix + "a")  # spilled
    with open(store.prefix + "a", "wb") as f:  # another file under its name
        f.write(b"\x05" * 2 * MB)
    restored = os.stat(store.prefix + "a").st_ino
    with open(store.prefix + "a", "rb") as f:  # someone reads it: it stays in quarantine
        view = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    try:
        store.offer(store.prefix + "a", 2 * MB)
        b = write(store.prefix + "b", 2 * MB, b"\x02")
        assert b != restored and read(store.prefix + "b") == b"\x02" * (2 * MB)
        assert os.stat(os.path.join(store.dir, "q-a")).st_ino == restored  # back, untouched
        assert view[:1] == b"\x05"
    finally:
        view.close()
