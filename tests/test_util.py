"""runtime.util with Ray's names and semantics, on real clusters; and Ray's auto-init at the edges."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import wait_for

import runtime
from runtime.snapshot import snapshot
from runtime.util import ActorPool, as_completed, inspect_serializability, list_named_actors, map_unordered
from runtime.util.multiprocessing import Pool
from runtime.util.queue import Empty, Full, Queue


def test_first_remote_without_init_starts_a_local_cluster():
    assert not runtime.is_initialized()

    @runtime.remote
    def add(a, b):
        return a + b

    assert runtime.get(add.remote(1, 2)) == 3  # Ray starts a cluster here; so do we
    assert runtime.is_initialized()
    with pytest.raises(RuntimeError, match="already"):
        runtime.init()
    info = runtime.init(ignore_reinit_error=True)  # attaches to the one running
    assert info["embedded"]
    assert runtime.get(runtime.put("x")) == "x"
    runtime.shutdown()
    assert runtime.get(runtime.put(5)) == 5  # put alone starts one too
    runtime.shutdown()


def test_auto_init_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "0")
    with pytest.raises(runtime.exceptions.NotInitializedError, match="init"):
        runtime.put(1)


def test_runtime_util_is_lazy_and_data_too():
    code = (
        "import sys, runtime; assert 'runtime.util' not in sys.modules; "
        "assert 'pandas' not in sys.modules and 'pyarrow' not in sys.modules; "
        "runtime.util.ActorPool; assert 'pyarrow' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# -- ActorPool ----------------------------------------------------------------


@runtime.remote(num_cpus=0)
class Doubler:
    def double(self, v, delay=0.0):
        time.sleep(delay)
        return 2 * v

    def pid(self):
        return os.getpid()


def test_actor_pool_map_keeps_order_and_map_unordered_returns_all(ray):
    actors = [Doubler.remote() for _ in range(3)]
    pool = ActorPool(actors)
    # Later values finish first: map still returns them in input order.
    out = list(pool.map(lambda a, v: a.double.remote(v, 0.05 * (5 - v)), range(6)))
    assert out == [0, 2, 4, 6, 8, 10]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(10))) == [
        2 * i for i in range(10)
    ]
    pids = set(pool.map(lambda a, v: a.pid.remote(), range(9)))
    assert len(pids) == 3 and os.getpid() not in pids


def test_actor_pool_submit_get_next_push_pop(ray):
    a, b = Doubler.remote(), Doubler.remote()
    pool = ActorPool([a])
    assert pool.has_free() and not pool.has_next()
    pool.submit(lambda actor, v: actor.double.remote(v, 0.3), 1)
    pool.submit(lambda actor, v: actor.double.remote(v), 2)  # waits for the only actor
    assert not pool.has_free()
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.01)
    assert pool.get_next() == 2  # a timeout without ignore_if_timedout keeps the task (Ray's)
    assert pool.get_next() == 4
    pool.push(b)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(b)
    pool.submit(lambda actor, v: actor.double.remote(v), 3)
    assert pool.get_next_unordered() == 6
    pool.submit(lambda actor, v: actor.double.remote(v, 0.5), 4)
    pool.submit(lambda actor, v: actor.double.remote(v), 5)
    assert pool.get_next_unordered() == 10  # the later, faster one
    with pytest.raises(ValueError, match="after get_next_unordered"):
        pool.get_next()
    assert pool.get_next_unordered() == 8
    assert pool.pop_idle() in (a, b)
    assert pool.pop_idle() in (a, b)
    assert pool.pop_idle() is None
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(TypeError, match="ObjectRef"):
        ActorPool([Doubler.remote()]).submit(lambda actor, v: v, 1)
    with pytest.raises(TypeError, match="actor handles"):
        ActorPool([1])


# -- Queue --------------------------------------------------------------------


def test_queue_between_tasks_with_block_timeout_and_batches(ray):
    q = Queue(maxsize=3)
    assert q.empty() and not q.full() and len(q) == 0

    @ray.remote
    def produce(q, n):
        for i in range(n):
            q.put(i)  # blocks while the queue is full
        return "done"

    done = produce.remote(q, 6)
    got = [q.get(timeout=10) for _ in range(6)]
    assert got == list(range(6)) and ray.get(done) == "done"
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    with pytest.raises(Empty):
        q.get_nowait()
    q.put_nowait_batch([1, 2, 3])
    assert q.full() and q.qsize() == 3
    with pytest.raises(Full):
        q.put_nowait(4)
    with pytest.raises(Full):
        q.put(4, timeout=0.05)
    with pytest.raises(Full, match="Cannot add 1 items"):
        q.put_nowait_batch([4])
    with pytest.raises(Empty, match="Cannot get 4 items"):
        q.get_nowait_batch(4)
    assert q.get_nowait_batch(2) == [1, 2]
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(TypeError, match="list"):
        q.put_nowait_batch((1,))

    async def use_async():
        await q.put_async("a")
        return [await q.get_async(), await q.get_async(timeout=1)]

    assert asyncio.run(use_async()) == [3, "a"]
    q.shutdown()
    assert q.actor is None


def test_queue_many_waiting_consumers_do_not_hold_workers(ray):
    q = Queue()

    @ray.remote(num_cpus=0)
    def consume(q):
        return q.get(timeout=30)

    consumers = [consume.remote(q) for _ in range(4)]

    def all_waiting() -> bool:  # four consumers running at once on two CPUs, each inside get()
        return sum(n.running.get("consume", 0) for n in snapshot().nodes) == 4

    wait_for(all_waiting, timeout=30, what="four consumers waiting at once")
    for i in range(4):
        q.put(i)
    assert sorted(ray.get(consumers, timeout=30)) == [0, 1, 2, 3]
    q.shutdown(force=True)


# -- multiprocessing.Pool -------------------------------------------------------


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


_greeting = "unset"


def set_greeting(g):
    global _greeting
    _greeting = g


def greeting(_):
    return _greeting, os.getpid()


def test_pool_map_imap_starmap_apply(ray):
    with Pool() as p:  # sized from the cluster: 2 CPUs
        assert "pool_size=2" in repr(p)
        assert p.map(square, range(100)) == [i * i for i in range(100)]
        assert p.map(lambda x: -x, [1, 2], chunksize=1) == [-1, -2]  # lambdas travel by value
        assert list(p.imap(square, range(20), chunksize=3)) == [i * i for i in range(20)]
        assert sorted(p.imap_unordered(square, range(20))) == [i * i for i in range(20)]
        assert p.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert p.apply(add, (1,), {"b": 5}) == 6
        done = threading.Event()
        seen = []
        res = p.apply_async(square, (7,), callback=lambda v: (seen.append(v), done.set()))
        assert res.get(timeout=30) == 49 and res.successful() and seen == [49]
        r = p.map_async(square, range(5))
        r.wait(30)
        assert r.ready() and r.get() == [0, 1, 4, 9, 16]
        with pytest.raises(ValueError, match="three"):
            p.map(fail_on_three, range(5))
        errors = []
        bad = p.apply_async(fail_on_three, (3,), error_callback=errors.append)
        with pytest.raises(ValueError, match="three"):
            bad.get(30)
        assert not bad.successful() and isinstance(errors[0], ValueError)
        it = p.imap(fail_on_three, [1, 3])
        assert next(it) == 1
        with pytest.raises(ValueError):
            next(it)


def test_pool_initializer_close_join_terminate(ray):
    p = Pool(2, initializer=set_greeting, initargs=("hi",))
    out = p.map(greeting, range(8), chunksize=1)
    assert {g for g, _ in out} == {"hi"}
    assert os.getpid() not in {pid for _, pid in out}
    r = p.map_async(square, range(10))
    p.close()
    with pytest.raises(ValueError, match="not running"):
        p.map(square, [1])
    p.join()
    assert r.get(1) == [i * i for i in range(10)]
    with Pool(4) as p4:  # more processes than the cluster's 2 CPUs: they share them
        pids = {pid for _, pid in p4.map(greeting, range(40), chunksize=1)}
        assert len(pids) == 4
    p2 = Pool(1)
    with pytest.raises(ValueError, match="still running"):
        p2.join()
    p2.terminate()
    with pytest.raises(ValueError, match="at least 1"):
        Pool(0)
    with pytest.raises(TypeError, match="pickled"):
        import pickle

        pickle.dumps(p2)


# -- joblib ---------------------------------------------------------------------


def test_joblib_backends_ray_and_nbcluster(ray):
    import joblib

    from runtime.util.joblib import register_ray

    register_ray()
    with joblib.parallel_backend("ray"):  # the example: n_jobs=4 on a 2-CPU cluster
        out = joblib.Parallel(n_jobs=4)(joblib.delayed(square)(i) for i in range(100))
    assert out == [i * i for i in range(100)]
    with joblib.parallel_backend("nbcluster"):
        pids = joblib.Parallel(n_jobs=-1)(joblib.delayed(os.getpid)() for _ in range(20))
    assert os.getpid() not in pids
    with joblib.parallel_backend("ray"), pytest.raises(ValueError, match="three"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(fail_on_three)(i) for i in range(5))


# -- helpers --------------------------------------------------------------------


def test_connect_from_another_process(ray):
    address = ray.init(ignore_reinit_error=True)["address"]
    code = (
        "import runtime as ray\n"
        "from runtime.util import connect, disconnect\n"
        f"connect('ray://{address}')\n"
        "print(ray.get(ray.remote(lambda: 41 + 1).remote()))\n"
        "disconnect()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    with pytest.raises(RuntimeError, match="already connected"):
        runtime.util.connect(address)


def test_list_named_actors_and_as_completed(ray):
    keep = [Doubler.options(name=n).remote() for n in ("a", "b")]
    other = Doubler.options(name="c", namespace="elsewhere").remote()
    ray.get([h.pid.remote() for h in [*keep, other]])
    assert sorted(list_named_actors()) == ["a", "b"]
    everywhere = list_named_actors(all_namespaces=True)
    assert {"name": "c", "namespace": "elsewhere"} in everywhere and len(everywhere) == 3

    @ray.remote(num_cpus=0)
    def slow(i):
        time.sleep(2 if i == 0 else 0)
        return i

    assert list(as_completed([slow.remote(i) for i in range(2)], chunk_size=1)) == [1, 0]
    refs = list(as_completed([slow.remote(i) for i in (1, 2, 3)], yield_obj_refs=True))
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    with pytest.raises(TimeoutError):
        list(as_completed([slow.remote(0)], timeout=0.01))  # it sleeps 2 s
    assert sorted(map_unordered(square, range(30), backpressure_size=8)) == [i * i for i in range(30)]


def test_inspect_serializability_names_the_culprit(capsys):
    lock = threading.Lock()

    def uses_lock():
        return lock

    ok, failures = inspect_serializability(uses_lock, name="uses_lock")
    assert not ok
    assert [f.name for f in failures] == ["lock"]
    assert "FAIL" in capsys.readouterr().out

    class Holder:
        def __init__(self):
            self.fine = 1
            self.bad = threading.Lock()

    ok, failures = inspect_serializability(Holder())
    assert not ok and [f.name for f in failures] == ["bad"]
    assert inspect_serializability(square)[0]
