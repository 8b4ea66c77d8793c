"""Shared memory, reference counting and spilling, checked on /dev/shm itself."""

from __future__ import annotations

import gc
import os

import numpy as np
from conftest import segments, spares, wait_for

import runtime


def test_last_ref_frees_the_segment():
    runtime.init(num_cpus=1)
    before = set(segments())
    ref = runtime.put(np.zeros(1_000_000))
    new = set(segments()) - before
    assert len(new) == 1
    del ref
    gc.collect()
    wait_for(lambda: not (set(segments()) & new), what="the segment to be freed")


def test_values_returned_by_tasks_and_large_arguments():
    runtime.init(num_cpus=2)

    @runtime.remote
    def make(n):
        return np.arange(n, dtype=np.float64)

    @runtime.remote
    def total(a):
        return float(a.sum())

    big = make.remote(2_000_000)  # 16 MB result: written once to shared memory
    arr = runtime.get(big)
    assert arr[-1] == 1_999_999 and not arr.flags.writeable
    assert runtime.get(total.remote(big)) == float(np.arange(2_000_000).sum())
    # a large array passed by value goes through shared memory too
    assert runtime.get(total.remote(np.ones(3_000_000))) == 3_000_000.0
    del big, arr
    gc.collect()
    wait_for(lambda: not segments(), what="segments to be freed")


def test_spilling_past_the_cap_and_back():
    runtime.init(num_cpus=1, object_store_memory=50 * 2**20)
    arrays = [np.full(2_500_000, i, dtype=np.float64) for i in range(6)]  # 6 x 20 MB
    refs = [runtime.put(a) for a in arrays]

    @runtime.remote
    def first(a):
        return float(a[0])

    from runtime.snapshot import snapshot

    wait_for(lambda: snapshot().nodes[0].object_store_spilled > 0, what="spilling to disk")
    snap = snapshot().nodes[0]
    assert snap.object_store_used <= 50 * 2**20
    for i, ref in enumerate(refs):
        assert runtime.get(ref)[0] == i
    assert runtime.get([first.remote(r) for r in refs]) == [float(i) for i in range(6)]


def test_nested_refs_keep_objects_alive():
    runtime.init(num_cpus=1)

    @runtime.remote
    def wrap():
        return [runtime.put(np.ones(200_000))]

    @runtime.remote
    def read(box):
        return float(runtime.get(box[0]).sum())

    box = runtime.get(wrap.remote())
    gc.collect()
    assert float(runtime.get(box[0]).sum()) == 200_000.0
    assert runtime.get(read.remote(box)) == 200_000.0


def test_a_retried_task_replaces_the_segment_its_dead_attempt_left(tmp_path):
    # The chaos soak found it: a worker killed between writing its result and its owner hearing
    # of it left the segment; the retry (same object id, same path) failed with FileExistsError.
    runtime.init(num_cpus=1)
    marker = tmp_path / "first-attempt"

    @runtime.remote(max_retries=2)
    def make(marker):
        import os
        import signal
        from pathlib import Path

        import numpy as np

        from runtime import worker
        from runtime.api import _client
        from runtime.wire import serialization
        from runtime.wire.protocol import object_id_for

        value = np.full(1_000_000, 3.0)
        if not Path(marker).exists():  # first attempt: write the result's segment, then die
            Path(marker).write_text("x")
            path = _client().segment(object_id_for(worker.current_task().task_id, 0))
            wire, _, _ = serialization.serialize(value, path)
            assert wire == path and os.path.exists(path)
            os.kill(os.getpid(), signal.SIGKILL)
        return value

    out = runtime.get(make.remote(str(marker)), timeout=60)
    assert marker.exists() and out.shape == (1_000_000,) and float(out[0]) == 3.0
    del out
    gc.collect()
    wait_for(lambda: not segments(), what="segments to be freed")


def test_a_freed_large_objects_file_is_reused_but_never_under_a_live_view():
    """The file of a freed large object is written again by the next large value of about its
    size: its writer kept it open and mapped (runtime/wire/arena.py), so that is one memcpy
    into pages that exist. But only once no process maps it: a zero-copy array from get()
    outlives its ref, and writing the next value into its file would change it."""
    from runtime import session
    from runtime.client import NODE

    runtime.init(num_cpus=1)
    client = session.client()
    n = 4 * 2**20 // 8  # 4 MiB of float64

    def quarantined():
        return [s for s in spares() if os.path.basename(s).startswith("q-")]

    ref = runtime.put(np.full(n, 1.0))
    (path,) = segments()
    viewed = os.stat(path).st_ino
    view = runtime.get(ref)  # maps the segment, and outlives the ref
    del ref
    gc.collect()
    wait_for(quarantined, what="the freed file to wait until nobody maps it")
    written = set()
    for value in (2.0, 3.0, 4.0):  # values of the same size, each freed and reused in turn
        ref = runtime.put(np.full(n, value))
        (path,) = segments()
        written.add(os.stat(path).st_ino)
        assert float(runtime.get(ref).sum()) == value * n
        del ref
        gc.collect()
        client.request("report", dest=NODE)  # the node has freed it: its RELEASE came first
    assert viewed not in written and len(written) == 1  # one new file, then the same one again
    assert (view == 1.0).all() and len(quarantined()) == 2

    del view
    gc.collect()
    ref = runtime.put(np.full(n, 5.0))
    (path,) = segments()
    assert os.stat(path).st_ino in written | {viewed}  # written into a freed file, not a new one
    assert float(runtime.get(ref).sum()) == 5.0 * n
    runtime.shutdown()
    assert not spares()


def test_a_large_object_never_passed_on_is_freed_when_its_last_ref_goes():
    """A ref that never left its process (not pickled into a value, not received from one):
    no other process can hold it, so its node frees the object on its RELEASE instead of
    after the grace that covers a HOLD still on its way. Its file is the next put's at once."""
    from runtime import session
    from runtime.client import NODE

    runtime.init(num_cpus=1)
    client = session.client()
    n = 4 * 2**20 // 8  # 4 MiB of float64
    ref = runtime.put(np.full(n, 1.0))
    (path,) = segments()
    inode = os.stat(path).st_ino
    del ref
    gc.collect()
    client.request("report", dest=NODE)  # the node has read the RELEASE: it came first
    ref = runtime.put(np.full(n, 2.0))
    (path,) = segments()
    assert os.stat(path).st_ino == inode  # written into the freed file, now a spare
    assert float(runtime.get(ref).sum()) == 2.0 * n
    runtime.shutdown()


def test_a_ref_pickled_or_unpickled_is_shared_and_its_release_waits_the_grace():
    """Passed on inside a value (or arrived in one), a ref may be held elsewhere, with that
    process's HOLD still on its way: its release is not private."""
    import pickle

    from runtime import session

    runtime.init(num_cpus=1)
    shared = session.client().objects.shared
    kept = runtime.put(1)
    assert kept.binary() not in shared
    passed = runtime.put(2)
    pickle.dumps([passed])
    assert passed.binary() in shared
    back = pickle.loads(pickle.dumps(runtime.put(3)))
    assert back.binary() in shared
    ids = [passed.binary(), back.binary()]
    del passed, back
    gc.collect()
    assert not set(ids) & shared  # forgotten with the last ref
    runtime.shutdown()


def test_a_private_release_frees_at_once_only_what_nobody_else_references(tmp_path):
    """The table's side: another holder, or an actor (its last handle ends it), keeps the
    grace; the last private release of a plain object frees it there and then."""
    from runtime.node.object_store import ObjectTable

    table = ObjectTable(2**30, tmp_path, tmp_path / "spill")
    obj, actor = b"o" * 20, b"a" * 20
    table.hold(obj, b"driver")
    table.set_ready(obj, False, b"value", 5, ())
    table.hold(obj, b"worker")
    table.release(obj, b"driver", at_once=True)
    assert obj in table.entries and obj not in table.doomed  # the worker holds it
    table.release(obj, b"worker", at_once=True)
    assert obj not in table.entries
    table.mark_actor(actor, b"driver")
    table.release(actor, b"driver", at_once=True)
    assert actor in table.entries and actor in table.doomed  # ended after the grace
