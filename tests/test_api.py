"""The public API with Ray's semantics, against a real local cluster."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

import runtime
from runtime import exceptions


def test_tasks_round_trip(ray):
    @ray.remote
    def square(x):
        return x * x

    refs = [square.remote(i) for i in range(400)]
    assert ray.get(refs) == [i * i for i in range(400)]
    assert isinstance(refs[0], ray.ObjectRef)


def test_options_num_returns_and_kwargs(ray):
    @ray.remote(num_returns=2)
    def pair(a, b=10):
        return a, b

    x, y = pair.remote(1, b=2)
    assert ray.get([x, y]) == [1, 2]
    three = pair.options(num_returns=3).remote(1, b=2)  # returns 2 values, not 3
    with pytest.raises(ValueError, match="num_returns=3"):
        ray.get(three[0])


def test_actor_calls_run_in_order(ray):
    @ray.remote(num_cpus=1)
    class Counter:
        def __init__(self, start=0):
            self.i = start

        def incr(self, v):
            self.i += v
            return self.i

    c = Counter.remote(5)
    refs = [c.incr.remote(1) for _ in range(10)]
    assert ray.get(refs) == list(range(6, 16))
    assert isinstance(c, runtime.actor.ActorHandle)


def test_processes_are_named_by_role(ray):
    """`ps` and `top` tell the cluster's processes apart, as Ray's ray::IDLE / ray::Counter."""
    import psutil

    @ray.remote
    class Counter:
        def pid(self):
            return os.getpid()

    @ray.remote
    def pid():
        return os.getpid()

    assert psutil.Process(ray.get(Counter.remote().pid.remote())).name() == "nbc:Counter"
    assert psutil.Process(ray.get(pid.remote())).name() == "nbc-worker"
    names = {p.name() for p in psutil.Process().children(recursive=True)}
    assert {"nbc-head", "nbc-node", "nbc-zygote"} <= names


def test_put_get_numpy_zero_copy(ray):
    arr = np.ones((1000, 1000))
    ref = ray.put(arr)
    out = ray.get(ref)
    assert out.shape == (1000, 1000) and out.sum() == 1e6
    assert not out.flags.writeable  # a read-only view on shared memory, as in Ray
    assert not out.flags.owndata

    @ray.remote
    def total(x):
        return float(x.sum())

    assert ray.get(total.remote(ref)) == 1e6


def test_wait(ray):
    import time

    @ray.remote
    def slow(t):
        time.sleep(t)
        return t

    refs = [slow.remote(0), slow.remote(30)]
    ready, pending = ray.wait(refs, num_returns=1, timeout=10)
    assert ready == [refs[0]] and pending == [refs[1]]
    ready, pending = ray.wait(refs, num_returns=2, timeout=0.2)
    assert len(ready) == 1 and len(pending) == 1
    ray.cancel(refs[1], force=True)


def test_get_timeout(ray):
    import time

    @ray.remote
    def slow():
        time.sleep(30)

    ref = slow.remote()
    with pytest.raises(exceptions.GetTimeoutError) as info:
        ray.get(ref, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    ray.cancel(ref, force=True)


def test_remote_exception_is_both_types(ray):
    class MyError(Exception):
        pass

    @ray.remote
    def boom():
        raise MyError("no way")

    with pytest.raises(MyError) as info:
        ray.get(boom.remote())
    err = info.value
    assert isinstance(err, exceptions.TaskError) and isinstance(err, exceptions.RayTaskError)
    assert "no way" in str(err) and "boom" in str(err)
    assert "raise MyError" in "\n".join(err._render_traceback_())


def test_errors_propagate_through_dependent_tasks(ray):
    @ray.remote
    def boom():
        raise KeyError("upstream")

    @ray.remote
    def plus_one(x):
        return x + 1

    with pytest.raises(KeyError, match="upstream"):
        ray.get(plus_one.remote(plus_one.remote(boom.remote())))


def test_refs_as_arguments_are_resolved(ray):
    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote
    def inner(xs):
        return [type(x).__name__ for x in xs]

    one = ray.put(1)
    assert ray.get(add.remote(one, add.remote(one, 2))) == 4
    assert ray.get(add.remote(*[one, one])) == 2
    assert ray.get(add.remote(a=one, b=one)) == 2
    # refs nested in containers stay refs
    assert ray.get(inner.remote([one])) == ["ObjectRef"]


def test_nested_tasks_and_actors(ray):
    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def fan_out(n):
        return sum(runtime.get([square.remote(i) for i in range(n)]))

    @ray.remote
    class Acc:
        def __init__(self):
            self.total = 0

        def add(self, v):
            self.total += v
            return self.total

    @ray.remote
    def use_actor(acc, n):
        return runtime.get([acc.add.remote(1) for _ in range(n)])[-1]

    @ray.remote
    def make_actor():
        a = Acc.remote()
        return runtime.get(a.add.remote(7))

    # more nested tasks than CPUs: blocked parents lend their CPU
    assert ray.get([fan_out.remote(10) for _ in range(4)]) == [285] * 4
    acc = Acc.remote()
    assert ray.get(use_actor.remote(acc, 5)) == 5
    assert ray.get(acc.add.remote(0)) == 5
    assert ray.get(make_actor.remote()) == 7


def test_staticmethod_remote_inside_class(ray):
    class Tools:
        @staticmethod
        @ray.remote
        def double(x):
            return 2 * x

    assert ray.get(Tools.double.remote(4)) == 8


def test_wrong_arity_fails_at_remote(ray):
    @ray.remote
    def f(a, b):
        return a + b

    @ray.remote
    class A:
        def __init__(self, x):
            self.x = x

        def m(self, y):
            return y

    with pytest.raises(TypeError, match="missing a required argument"):
        f.remote(1)
    with pytest.raises(TypeError):
        f.remote(1, 2, 3)
    with pytest.raises(TypeError):
        A.remote()
    a = A.remote(1)
    with pytest.raises(TypeError):
        a.m.remote()
    assert ray.get(f.remote(1, 2)) == 3


def test_unpicklable_argument_is_a_clear_error(ray):
    import threading

    @ray.remote
    def f(x):
        return 1

    with pytest.raises(exceptions.SerializationError, match="could not serialize"):
        f.remote(threading.Lock())
    assert ray.get(f.remote(1)) == 1  # nothing else disturbed


def test_get_of_a_non_ref(ray):
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get(1)
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get([ray.put(1), "x"])


def test_calling_remote_things_directly_is_an_error(ray):
    @ray.remote
    def f():
        return 1

    @ray.remote
    class A:
        def m(self):
            return 1

    with pytest.raises(TypeError, match=r"f\.remote"):
        f()
    with pytest.raises(TypeError, match=r"A\.remote"):
        A()


def test_invalid_options(ray):
    with pytest.raises(ValueError, match="invalid option"):
        ray.remote(num_cpu=1)(lambda: 1)
    with pytest.raises(ValueError, match="num_cpus"):
        ray.remote(resources={"CPU": 1})(lambda: 1)


def test_cluster_information(ray):
    nodes = ray.nodes()
    assert len(nodes) == 1 and nodes[0]["Alive"]
    assert nodes[0]["Resources"]["CPU"] == 2 and nodes[0]["Resources"]["alice"] == 2
    res = ray.cluster_resources()
    assert res["CPU"] == 2 and res["alice"] == 2
    assert ray.available_resources()["CPU"] <= 2
    ctx = ray.get_runtime_context()
    assert ctx.get_node_id() == nodes[0]["NodeID"] and ctx.get_task_id() is None

    @ray.remote
    def where():
        c = runtime.get_runtime_context()
        return c.get_node_id(), c.get_task_id(), c.get_actor_id()

    @ray.remote
    class Where:
        def ids(self):
            c = runtime.get_runtime_context()
            return c.get_actor_id(), c.get_task_id()

    node_id, task_id, actor_id = ray.get(where.remote())
    assert node_id == nodes[0]["NodeID"] and task_id and actor_id is None
    a = Where.remote()
    actor_id, task_id = ray.get(a.ids.remote())
    assert actor_id and task_id


def test_a_custom_resource_shows_free_once_its_task_ended(no_leaks, monkeypatch):
    """A driver keeps an idle lease of CPUs for its next burst (`LEASE_IDLE`), but one holding
    a custom resource goes back at once: `available_resources()` shows it free after the
    task, as in Ray."""
    from runtime.client import decisions

    monkeypatch.setattr(decisions, "LEASE_IDLE", 3600.0)
    runtime.init(num_cpus=2, resources={"bob": 1})

    @runtime.remote
    def nap(seconds):
        time.sleep(seconds)
        return os.getpid()

    def wait_for(test, what):
        deadline = time.monotonic() + 30
        while not test(runtime.available_resources()):
            assert time.monotonic() < deadline, f"{what}: {runtime.available_resources()}"
            time.sleep(0.05)

    wait_for(lambda a: a.get("CPU") == 2 and a.get("bob") == 1, "the cluster's first report")
    holding = nap.options(resources={"bob": 1}).remote(1.5)
    wait_for(lambda a: "bob" not in a, "the running task holds bob")
    runtime.get(holding, timeout=60)
    wait_for(lambda a: a.get("bob") == 1 and a.get("CPU") == 2, "bob's lease goes back")
    runtime.get(nap.remote(0), timeout=60)
    wait_for(lambda a: a.get("CPU") == 1 and a.get("bob") == 1, "the CPU lease is kept")
    runtime.shutdown()


def test_named_actors(ray):
    @ray.remote
    class Box:
        def __init__(self, v):
            self.v = v

        def get(self):
            return self.v

    b = Box.options(name="box").remote(3)
    assert ray.get(ray.get_actor("box").get.remote()) == 3
    with pytest.raises(ValueError, match="already exists"):
        Box.options(name="box").remote(4)
    same = Box.options(name="box", get_if_exists=True).remote(5)
    assert ray.get(same.get.remote()) == 3
    with pytest.raises(ValueError, match="Failed to look up"):
        ray.get_actor("nope")
    del b, same


def test_kill_actor(ray):
    @ray.remote
    class A:
        def ping(self):
            return "pong"

    a = A.remote()
    assert ray.get(a.ping.remote()) == "pong"
    ray.kill(a)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(a.ping.remote())


def test_actor_constructor_error(ray):
    @ray.remote
    class Bad:
        def __init__(self):
            raise RuntimeError("bad init")

        def m(self):
            return 1

    b = Bad.remote()
    with pytest.raises(exceptions.ActorDiedError, match="bad init"):
        ray.get(b.m.remote())


def test_actor_method_error_keeps_actor_alive(ray):
    @ray.remote
    class A:
        def fail(self):
            raise ValueError("oops")

        def ok(self):
            return 1

    a = A.remote()
    with pytest.raises(ValueError):
        ray.get(a.fail.remote())
    assert ray.get(a.ok.remote()) == 1


def test_async_and_threaded_actors(ray):
    @ray.remote
    class AsyncActor:
        async def slow(self, i):
            await asyncio.sleep(0.2)
            return i

    @ray.remote(max_concurrency=4)
    class Threaded:
        def slow(self, i):
            import time

            time.sleep(0.2)
            return i

    for cls in (AsyncActor, Threaded):
        a = cls.remote()
        assert ray.get([a.slow.remote(i) for i in range(4)]) == [0, 1, 2, 3]


def test_await_ref_and_future(ray):
    @ray.remote
    def f(x):
        return x + 1

    async def main():
        return await f.remote(1)

    assert asyncio.run(main()) == 2
    assert f.remote(2).future().result(timeout=10) == 3


def test_method_num_returns(ray):
    @ray.remote
    class P:
        @runtime.method(num_returns=2)
        def two(self):
            return 1, 2

    p = P.remote()
    a, b = p.two.remote()
    assert ray.get([a, b]) == [1, 2]


def test_cancel_queued_and_running(ray):
    import time

    @ray.remote
    def sleeper(t):
        time.sleep(t)
        return t

    running = [sleeper.remote(30) for _ in range(2)]
    queued = sleeper.remote(30)
    ray.cancel(queued)  # queued here or at a worker, or just started: cancelled either way
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=10)
    ray.cancel(running[0])
    ray.cancel(running[1], force=True)
    for r in running:
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(r, timeout=10)

    @ray.remote
    def ok():
        return 1

    assert ray.get(ok.remote(), timeout=10) == 1


def test_cancel_just_after_submit_stops_the_task(ray):
    # The task reaches its (warm) worker just as the cancel's SIGINT does: the worker must
    # not ignore the interrupt because it had not started the task yet.
    import time

    @ray.remote
    def sleeper(t):
        time.sleep(t)
        return t

    assert ray.get([sleeper.remote(0) for _ in range(4)]) == [0] * 4  # leases are warm
    for _ in range(20):
        ref = sleeper.remote(60)
        ray.cancel(ref)
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(ref, timeout=30)
    assert ray.get(sleeper.remote(0), timeout=30) == 0


def test_only_a_workers_main_thread_takes_sigint(ray):
    # A cancel's SIGINT cuts a blocking call short only in the thread it lands in: the
    # worker's own helper threads (an async actor's loop, a threaded actor's pool) block it.
    import asyncio
    import os
    import signal

    @ray.remote
    class Threaded:
        def where(self):
            return os.getpid()

    @ray.remote
    class Async:
        async def where(self):
            await asyncio.sleep(0)
            return os.getpid()

    def sigint_takers(pid: int) -> list[str]:
        takers = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            status = open(f"/proc/{pid}/task/{tid}/status").read()
            blocked = int(status.split("SigBlk:")[1].split()[0], 16)
            if not blocked & (1 << (signal.SIGINT - 1)):
                takers.append(tid)
        return takers

    threaded = Threaded.options(max_concurrency=4).remote()
    pids = {ray.get(threaded.where.remote()) for _ in range(8)}
    pids.add(ray.get(Async.remote().where.remote()))
    for pid in pids:
        assert len(os.listdir(f"/proc/{pid}/task")) > 1  # helper threads are there
        assert sigint_takers(pid) == [str(pid)]  # the main thread alone


def test_worker_output_reaches_the_driver(ray, capfd):
    @ray.remote
    def talk():
        import sys

        print("hello from a task")
        print("to stderr", file=sys.stderr)
        return os.getpid()

    pid = ray.get(talk.remote())
    out, err = capfd.readouterr()
    assert f"(talk pid={pid}) hello from a task" in out
    assert f"(talk pid={pid}) to stderr" in err


def test_init_twice_and_not_initialized(monkeypatch):
    monkeypatch.setenv("NBCLUSTER_AUTO_INIT", "0")  # with it on, put() starts a cluster (test_util)
    with pytest.raises(exceptions.NotInitializedError, match="init"):
        runtime.put(1)
    runtime.init(num_cpus=1)
    with pytest.raises(RuntimeError, match="already"):
        runtime.init()
    runtime.init(ignore_reinit_error=True)
    assert runtime.is_initialized()
    runtime.shutdown()
    assert not runtime.is_initialized()


def test_public_names():
    assert sorted(runtime.__all__) == runtime.__all__
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None


def test_many_threads_submit_and_get_at_once(ray):
    from concurrent.futures import ThreadPoolExecutor

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    class Acc:
        def __init__(self):
            self.n = 0

        def add(self, v):
            self.n += v
            return self.n

    acc = Acc.remote()

    def work(k):
        got = [ray.get(square.remote(k * 100 + i)) for i in range(50)]
        got += ray.get([square.remote(i) for i in range(50)])
        ray.get([acc.add.remote(1) for _ in range(20)])
        return got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for k, got in enumerate(results):
        assert got == [(k * 100 + i) ** 2 for i in range(50)] + [i * i for i in range(50)]
    assert ray.get(acc.add.remote(0)) == 8 * 20


def test_many_tasks_more_than_the_pipeline(ray):
    import time

    @ray.remote
    def short(i):
        return i

    @ray.remote
    def long():
        time.sleep(1.0)
        return "long"

    # one long task must not hold up the short ones queued behind it on its worker
    slow = long.remote()
    refs = [short.remote(i) for i in range(200)]
    ready, _ = ray.wait(refs, num_returns=200, timeout=30)
    assert len(ready) == 200 and ray.get(refs) == list(range(200))
    assert ray.get(slow) == "long"


def test_floods_in_both_directions_do_not_deadlock(ray):
    # Both ends send faster than the other reads: socket buffers fill on both sides.
    @ray.remote
    class Echo:
        def echo(self, x):
            return x

    e = Echo.remote()
    payload = "x" * 2000
    for _ in range(2):
        out = ray.get([e.echo.remote(payload) for _ in range(20_000)], timeout=120)
        assert len(out) == 20_000 and out[-1] == payload


def test_dropping_the_last_handle_ends_the_actor(ray):
    import os

    @ray.remote
    class A:
        def pid(self):
            return os.getpid()

    a = A.remote()
    pid = ray.get(a.pid.remote())
    del a  # no gc.collect(): the handle must not sit in a reference cycle
    from conftest import wait_for

    from runtime.config import pid_alive

    wait_for(lambda: not pid_alive(pid), timeout=10, what="the actor's process to exit")


def test_get_and_wait_on_the_same_refs_from_two_threads(ray):
    import threading
    import time

    @ray.remote
    def slow(i):
        time.sleep(0.05)
        return i

    refs = [slow.remote(i) for i in range(20)]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            ray.wait(refs, num_returns=len(refs), timeout=0)

    t = threading.Thread(target=poll)
    t.start()
    try:
        assert ray.get(refs, timeout=30) == list(range(20))
    finally:
        stop.set()
        t.join()


def test_results_arriving_while_get_registers(ray):
    # The I/O thread stores results while get() registers what it waits for.
    @ray.remote
    class Echo:
        def echo(self, x):
            return x

    e = Echo.remote()
    for _ in range(8):
        refs = [e.echo.remote(i) for i in range(3000)]
        assert ray.get(refs, timeout=60)[-1] == 2999


def test_a_task_waiting_on_a_result_its_own_worker_holds_back_gets_it(no_leaks):
    """Short tasks' DONEs wait at their worker (runtime/worker/replies.py); a task that then
    blocks in get() on one of them must make the worker send them, not wait forever."""
    runtime.init(num_cpus=1)  # one worker: every task below runs where the results are held

    @runtime.remote
    def f(i):
        return i

    @runtime.remote
    def h(refs):
        return runtime.get(refs[0], timeout=20) if refs else -1

    n = 3000  # long enough for the owner to queue a pipeline's worth at the worker
    runtime.get([h.remote([]) for _ in range(50)])  # h is known short on that worker
    for round_ in range(3):
        before = [f.remote(i) for i in range(n)]
        waits = [h.remote([before[-1 - k]]) for k in range(3)]
        after = [f.remote(i) for i in range(n)]
        assert runtime.get(waits, timeout=60) == [n - 1, n - 2, n - 3], round_
        assert runtime.get(before + after, timeout=60) == list(range(n)) * 2
    runtime.shutdown()


def test_tasks_queued_behind_a_long_one_on_a_full_node_run_on_the_free_worker(no_leaks, monkeypatch):
    """While the node has no room for more workers, a task that runs long gets one more queued
    behind it, not a whole pipeline (short tasks do), and the free worker steals that one
    while the long one runs: the busy worker's watch thread reads the steal within ~20 ms.
    How deep is decided by the burst's own tasks, not by the short ones of the same shape
    that ran just before."""
    from runtime.client import decisions

    monkeypatch.setattr(decisions, "LEASE_IDLE", 3600.0)  # both leases, and the node's "no room", stay
    runtime.init(num_cpus=2)

    @runtime.remote
    def sleep_for(seconds):
        time.sleep(seconds)
        return time.time()

    runtime.get([sleep_for.remote(0) for _ in range(40)], timeout=60)  # short ones, on both workers
    long_one = sleep_for.remote(3.0)
    short = [sleep_for.remote(0.05) for _ in range(5)]
    ended = runtime.get(long_one, timeout=60)
    # One short task is queued behind the long one, the four others go to the other worker,
    # which then steals it. Read only between two tasks, the steal would wait for the long one.
    assert sum(end < ended for end in runtime.get(short, timeout=60)) == 5
    runtime.shutdown()


def test_tasks_stolen_from_a_busy_worker_leave_it_at_its_next_read_not_when_it_reaches_them(
    no_leaks, monkeypatch, tmp_path
):
    """An idle worker steals the later half of a busy one's queue. The busy worker hands them
    all back as soon as it reads (between two tasks), not one by one as it reaches them
    (then the thief would wait for everything queued before them)."""
    from runtime.client import decisions

    monkeypatch.setattr(decisions, "LEASE_IDLE", 3600.0)  # both leases stay
    # Every worker dealt a whole pipeline at once (as tasks under DEEP_BELOW are): the tasks
    # go round robin, so one worker gets every long task and the other every short one.
    monkeypatch.setattr(decisions, "depth_limit", lambda *args, **kwargs: decisions.PIPELINE)
    runtime.init(num_cpus=2)

    gate = tmp_path / "go"

    @runtime.remote
    def sleep_for(seconds, gate=None):
        while gate and not os.path.exists(gate):  # none ends while the burst is dealt
            time.sleep(0.005)
        start = time.time()
        time.sleep(seconds)
        return start, time.time(), os.getpid()

    runtime.get([sleep_for.remote(0) for _ in range(40)], timeout=60)  # both workers leased
    refs = []
    for _ in range(8):
        refs += [sleep_for.remote(0.3, str(gate)), sleep_for.remote(0.05, str(gate))]
    gate.touch()
    runs = runtime.get(refs, timeout=60)
    longs = runs[0::2]
    busy = longs[0][2]
    assert all(pid != busy for _, _, pid in runs[1::2])  # the short ones ran on the other worker
    stolen = [start for start, _, pid in longs if pid != busy]
    assert stolen, longs  # the other worker, idle after ~0.4 s, took some of the long ones
    # It took them while the busy one ran its second long task: it hands them back when that
    # one ends. Before, not until it had run every one queued before them (five).
    ended_before = sum(end <= min(stolen) for _, end, pid in longs if pid == busy)
    assert ended_before <= 3, (ended_before, longs)
    runtime.shutdown()


def test_the_drivers_io_thread_sleeps_until_its_tick_without_a_busy_loop_before_it(no_leaks, monkeypatch):
    """The I/O thread waits for its next tick in a ZeroMQ poll, whose timeout is whole
    milliseconds. Truncated, the last millisecond before each tick became 30-60 empty polls
    in a row, each taking the interpreter from the thread in get() (the node and the head
    loops did the same). Rounded up, it polls about once per tick while nothing happens."""
    from conftest import wait_for

    from runtime import session
    from runtime.client import io_loop
    from runtime.wire import protocol

    assert [protocol.poll_ms(s) for s in (0.0003, 0.0, 0.0123, 1.0, None, -1.0)] == [1, 0, 13, 1000, -1, -1]
    runtime.init(num_cpus=1)
    client = session.client()
    counts = {"poll": 0, "tick": 0}
    real_poll, real_tick = io_loop.poll, client.tick

    def poll(*args):
        counts["poll"] += 1
        return real_poll(*args)

    def tick():
        counts["tick"] += 1
        real_tick()

    monkeypatch.setattr(io_loop, "poll", poll)
    monkeypatch.setattr(client, "tick", tick)
    wait_for(lambda: counts["tick"] >= 8, timeout=30, what="8 ticks of the I/O thread")
    polls, ticks = counts["poll"], counts["tick"]
    assert polls <= 2 * ticks + 4, (polls, ticks)
    runtime.shutdown()


def test_a_worker_on_its_last_task_takes_half_of_what_waits_at_another_before_it_is_idle(
    no_leaks, monkeypatch, tmp_path
):
    """The owner has nothing left to send; one worker runs its last task while another has
    four queued behind a long one. The first takes the later two at once, not when its task
    ends: they are on its lease (queued behind its task) while both tasks still run. Asked
    only once idle, it would wait for the long task's worker to read, then a round trip
    (the tail of a burst of short tasks: one worker idle while the other runs what it could
    have had). The stolen tasks then run there, once each."""
    from conftest import wait_for

    from runtime import session
    from runtime.client import decisions

    monkeypatch.setattr(decisions, "LEASE_IDLE", 3600.0)  # both leases stay
    # A whole pipeline dealt to each worker at once, round robin (as in the tests above).
    monkeypatch.setattr(decisions, "depth_limit", lambda *args, **kwargs: decisions.PIPELINE)
    runtime.init(num_cpus=2)
    gates = {name: tmp_path / name for name in ("deal", "long", "last")}

    @runtime.remote
    def task(i, gate=None, then=None):
        deadline = time.monotonic() + 60
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        while then and not os.path.exists(then) and time.monotonic() < deadline:
            time.sleep(0.005)
        return i, os.getpid()

    runtime.get([task.remote(-1) for _ in range(40)], timeout=60)  # both workers leased
    deal, long_gate, last_gate = (str(g) for g in gates.values())
    # Round robin: the long one and a, b, c, d to one worker; four short ones and then
    # the last one (it waits for its own gate) to the other.
    refs = [task.remote(0, deal, long_gate)]
    for i in range(1, 5):
        refs += [task.remote(10 + i, deal), task.remote(i, deal)]
    refs.append(task.remote(9, deal, last_gate))
    long_one, shorts, queued, last = refs[0], refs[1:9:2], refs[2:9:2], refs[9]
    gates["deal"].touch()
    runtime.get(shorts, timeout=60)  # the other worker now runs only its last task

    leases = session.client().leases
    on_last = lambda: next(  # noqa: E731 - the lease running the last task, and its tasks
        (list(x.inflight) for xs in leases.leases.values() for x in xs if last.task_id() in x.inflight), []
    )
    stolen = [r.task_id() for r in queued[2:]]
    wait_for(lambda: set(stolen) <= set(on_last()), timeout=30, interval=0.01, what="the steal")
    assert on_last() == [last.task_id(), *stolen], on_last()
    gates["last"].touch()  # they run there, behind it, while the long one still runs
    thief = runtime.get([last, *queued[2:]], timeout=60)
    assert [i for i, _ in thief] == [9, 3, 4] and len({pid for _, pid in thief}) == 1, thief
    gates["long"].touch()
    victim = runtime.get([long_one, *queued[:2]], timeout=60)  # (the idle thief may take one)
    assert [i for i, _ in victim] == [0, 1, 2] and victim[0][1] != thief[0][1], victim
    runtime.shutdown()


def test_tasks_stolen_from_a_worker_whose_task_then_blocks_in_get_run_once_and_finish(
    no_leaks, monkeypatch, tmp_path
):
    """A worker answers a steal (REJECTED) for tasks queued behind its running one, and that
    task then blocks in get(), which hands back what is still queued. The stolen tasks must
    not be handed back a second time: that took them from the worker they had gone to, and
    one sent back here was dropped as stolen, so its owner waited forever."""
    from runtime.client import decisions

    monkeypatch.setattr(decisions, "LEASE_IDLE", 3600.0)  # both leases stay
    # A whole pipeline dealt to each worker at once, round robin: one worker gets every
    # blocking task, the other every short one (as in the test above).
    monkeypatch.setattr(decisions, "depth_limit", lambda *args, **kwargs: decisions.PIPELINE)
    runtime.init(num_cpus=2)
    gate = tmp_path / "go"
    runs = tmp_path / "runs"
    runs.mkdir()

    def until(condition, timeout=30.0):
        """Inside a task: wait for `condition` (a file to appear, say), at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        return condition()

    @runtime.remote
    def inner():
        return 1

    def blocking_elsewhere():
        """A blocking task started in another process: the other worker stole from us."""
        me = str(os.getpid())
        return any(blocks == "1" and pid != me for _, blocks, pid in (f.split("_") for f in os.listdir(runs)))

    @runtime.remote
    def task(i, blocks, gate=None):
        if gate:
            until(lambda: os.path.exists(gate))  # none ends while the burst is dealt
        (runs / f"{i}_{int(blocks)}_{os.getpid()}").touch()  # each start, to count them
        if blocks:
            until(blocking_elsewhere, timeout=10)  # block in get() only after the steal
            return runtime.get(inner.remote(), timeout=60) + i
        return i

    runtime.get([task.remote(-1, False) for _ in range(40)], timeout=60)  # both workers leased
    for f in runs.iterdir():
        f.unlink()
    refs = []
    for i in range(0, 16, 2):
        refs += [task.remote(i, True, str(gate)), task.remote(i + 1, False, str(gate))]
    gate.touch()
    results = runtime.get(refs, timeout=60)
    assert results == [i + 1 if i % 2 == 0 else i for i in range(16)]
    started = [f.name.split("_") for f in runs.iterdir()]
    assert sorted(int(i) for i, _, _ in started) == list(range(16)), started  # each ran once
    assert len({pid for _, blocks, pid in started if blocks == "1"}) >= 2, started  # a steal
    runtime.shutdown()


def test_each_leased_workers_first_task_of_a_burst_goes_out_from_the_calling_thread(no_leaks):
    """A burst of .remote() calls with two workers leased and idle: the calling thread sends
    each worker its first task itself, and the lease requests for the rest only after those.
    The second worker's first task used to wait for the I/O thread, woken beside the workers,
    behind the lease requests that woke the node first: it started 2-3 ms after the first
    worker's on average (8 Monte Carlo chunks), now ~1 ms (benchmarks/README)."""
    import threading

    from runtime import session
    from runtime.wire import transport
    from runtime.wire.protocol import Kind

    runtime.init(num_cpus=2)

    @runtime.remote
    def f(i, seconds=0.0):
        time.sleep(seconds)
        return i

    # Long enough that the node lends both workers; kept idle for the next burst (LEASE_IDLE).
    assert runtime.get([f.remote(i, 0.05) for i in range(4)]) == list(range(4))
    client = session.client()
    (leases,) = client.leases.leases.values()
    assert len(leases) == 2 and not any(lease.inflight for lease in leases)
    workers = {lease.link for lease in leases}
    sends: list[tuple[str, object, list]] = []
    send = transport.Link.send

    def spy(link, batch):  # records who sends what, then sends it
        sends.append((threading.current_thread().name, link, [msg[0] for msg in batch]))
        send(link, batch)

    transport.Link.send = spy
    try:
        refs = [f.remote(i) for i in range(8)]
        assert runtime.get(refs, timeout=60) == list(range(8))
    finally:
        transport.Link.send = send
    firsts = {}
    for n, (thread, link, kinds) in enumerate(sends):
        if link in workers and Kind.EXECUTE in kinds:
            firsts.setdefault(link, (n, thread))
    assert set(firsts) == workers, sends
    assert all(thread == "MainThread" for _, thread in firsts.values()), sends
    asked = [
        n for n, (_, link, kinds) in enumerate(sends) if link is client.link and Kind.LEASE_REQUEST in kinds
    ]
    assert all(n > max(i for i, _ in firsts.values()) for n in asked), sends
    runtime.shutdown()


def test_a_long_task_is_not_woken_every_20_ms_by_its_workers_watch_thread(no_leaks):
    """Once a task has run 20 ms its worker's watch thread reads what came, then sleeps until
    more comes: it used to wake every 20 ms, each time taking the interpreter from the task."""
    runtime.init(num_cpus=1)

    @runtime.remote
    def spin(seconds):
        import threading

        watch = next(t for t in threading.enumerate() if t.name == "watch")

        def wakes():
            with open(f"/proc/self/task/{watch.native_id}/status") as f:
                return int(f.read().split("\nvoluntary_ctxt_switches:")[1].split()[0])

        end = time.monotonic() + seconds
        before = wakes()
        while time.monotonic() < end:  # pure Python: it holds the interpreter
            pass
        return wakes() - before

    runtime.get(spin.remote(0.1))
    woke = runtime.get(spin.remote(1.0), timeout=60)
    assert woke < 25, woke  # now 4-5; with a look every 20 ms, over 100
    runtime.shutdown()


def test_replies_held_after_a_long_task_go_out_while_the_next_task_runs_long(no_leaks, tmp_path):
    """A long task, with a pipeline of short ones queued behind it: its worker's watch thread
    reads them at 20 ms, then sleeps until the sockets have something, and nothing more comes
    (the owner tops up a pipeline only once half of it is done). The short ones then run with
    their replies held, and the next one blocks: the main thread nudges the watch thread,
    which sends them after ~20 ms; without the nudge they waited for its own look, 5 s."""
    from runtime.client.decisions import PIPELINE

    runtime.init(num_cpus=1)
    go = tmp_path / "go"

    @runtime.remote
    def g(i, path=None, spin=0.0, patience=0.0):
        end = time.monotonic() + spin
        while time.monotonic() < end:
            pass
        deadline = time.monotonic() + patience
        while path and not os.path.exists(path):
            if time.monotonic() > deadline:
                return "gave up"
            time.sleep(0.01)
        return i

    runtime.get([g.remote(-1) for _ in range(50)])  # g is known short: a whole pipeline per worker
    for round_ in range(3):
        long_one = g.remote(-3, spin=0.3)
        short = [g.remote(i) for i in range(5)]
        blocked = g.remote(-2, str(go), patience=2.5)  # the watch thread's own look: after 5 s
        behind = [g.remote(i) for i in range(PIPELINE - 7)]  # queued behind it: holding goes on
        assert runtime.get([long_one, *short], timeout=60) == [-3, *range(5)], round_
        go.touch()
        assert runtime.get(blocked, timeout=60) == -2, round_  # not "gave up": they came meanwhile
        assert runtime.get(behind, timeout=60) == list(range(PIPELINE - 7))
        go.unlink()
    runtime.shutdown()


def test_results_held_back_go_out_while_a_task_expected_short_runs_long(no_leaks, tmp_path):
    """The worker held the DONEs of short tasks and started one more of the same function,
    which blocks: its watch thread sends them anyway; they do not wait for that task."""
    runtime.init(num_cpus=1)
    go = tmp_path / "go"

    @runtime.remote
    def g(i, path=None):
        while path and not os.path.exists(path):
            time.sleep(0.01)
        return i

    n = 3000  # a pipeline's worth queued at the worker, as in the test above
    runtime.get([g.remote(-1) for _ in range(50)])  # g is known short there
    for round_ in range(3):
        before = [g.remote(i) for i in range(n)]
        blocked = g.remote(-2, str(go))
        after = [g.remote(i) for i in range(10)]
        assert runtime.get(before, timeout=60) == list(range(n)), round_  # while `blocked` runs
        go.touch()
        assert runtime.get([blocked, *after], timeout=60) == [-2, *range(10)]
        go.unlink()
    runtime.shutdown()


def test_a_worker_drops_an_execute_that_does_not_carry_a_tasks_fields(no_leaks, capsys):
    """An EXECUTE carries the task as a plain tuple of TaskSpec's fields (`protocol.spec_of`):
    one of another shape, even signed with the cluster key, is dropped with a warning (on the
    worker's stderr, which reaches the owner of its last task), and the worker goes on
    running the tasks it is sent."""
    from runtime import session
    from runtime.wire import transport
    from runtime.wire.protocol import Kind

    runtime.init(num_cpus=1)

    @runtime.remote
    def where():
        return os.getpid(), session.client().io.listener.getsockname()

    pid, path = runtime.get(where.remote())
    link = transport.Link(path, session.client().signer)
    try:
        link.send(
            [
                (Kind.EXECUTE, ("too", "short"), {}, ()),
                (Kind.EXECUTE, "not a tuple", {}, ()),
                (Kind.EXECUTE, tuple(range(15))),  # the right fields, but no resolved values
            ]
        )
        seen = ""
        deadline = time.monotonic() + 30
        while seen.count("dropped an EXECUTE") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen += capsys.readouterr().err
        assert seen.count("dropped an EXECUTE whose task is not a TaskSpec's fields") == 3, seen
        assert runtime.get(where.remote(), timeout=30)[0] == pid  # the same worker, still serving
    finally:
        link.close()
    runtime.shutdown()
