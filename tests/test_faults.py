"""Failure semantics with real processes killed for real (DESIGN §6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ours, segments, wait_for

import runtime
from runtime import exceptions


def test_worker_killed_mid_task_is_retried(ray, tmp_path):
    marker = tmp_path / "attempts"

    @ray.remote(max_retries=3)
    def fragile(path):
        import os

        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        if len(open(path).read().split()) == 1:
            time.sleep(60)  # the first attempt is killed here
        return "done"

    ref = fragile.remote(str(marker))
    wait_for(lambda: marker.exists() and marker.read_text().strip(), what="the first attempt")
    os.kill(int(marker.read_text().split()[0]), signal.SIGKILL)
    assert ray.get(ref, timeout=30) == "done"
    assert len(marker.read_text().split()) == 2


def test_retries_exhausted_raise_worker_crashed(ray):
    @ray.remote(max_retries=2)
    def suicide():
        import os

        os.kill(os.getpid(), 9)

    with pytest.raises(exceptions.WorkerCrashedError, match="max_retries=2"):
        ray.get(suicide.remote(), timeout=30)

    @ray.remote
    def fine():
        return 1

    assert ray.get(fine.remote()) == 1


def test_actor_process_killed_raises_actor_died(ray):
    @ray.remote
    class A:
        def pid(self):
            import os

            return os.getpid()

    a = A.remote()
    pid = ray.get(a.pid.remote())
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(exceptions.ActorDiedError, match="died"):
        wait_for(lambda: ray.get(a.pid.remote(), timeout=10) != pid, timeout=10, what="death")
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(a.pid.remote())


def test_actor_restarts_with_max_restarts(ray):
    @ray.remote(max_restarts=1)
    class A:
        def __init__(self):
            self.calls = 0

        def pid(self):
            import os

            self.calls += 1
            return os.getpid(), self.calls

    a = A.remote()
    pid, calls = ray.get(a.pid.remote())
    os.kill(pid, signal.SIGKILL)

    def restarted():
        try:
            return ray.get(a.pid.remote(), timeout=10)[0] != pid
        except exceptions.ActorDiedError:
            return False  # calls in flight at the crash fail; later ones reach the new process

    wait_for(restarted, timeout=20, what="the restarted actor")
    new_pid, _ = ray.get(a.pid.remote())
    os.kill(new_pid, signal.SIGKILL)  # no restarts left
    with pytest.raises(exceptions.ActorDiedError):
        wait_for(lambda: ray.get(a.pid.remote(), timeout=10) and False, timeout=20, what="death")


def test_actor_calls_in_flight_are_retried_with_max_task_retries(ray, tmp_path):
    # Found by the chaos soak: with max_restarts and max_task_retries (Ray's names), a call
    # running when the actor's process died failed instead of running again on the new one.
    @ray.remote(max_restarts=1, max_task_retries=1)
    class A:
        def __init__(self):
            self.calls = 0

        def step(self, marker, i):
            import os
            from pathlib import Path

            self.calls += 1
            if i == 1 and not Path(marker).exists():
                Path(marker).write_text("died once")
                os.kill(os.getpid(), signal.SIGKILL)
            return i, os.getpid(), self.calls

    a = A.remote()
    marker = tmp_path / "died"
    refs = [a.step.remote(str(marker), i) for i in range(4)]
    results = ray.get(refs, timeout=60)
    assert [r[0] for r in results] == [0, 1, 2, 3] and marker.exists()
    first_pid = results[0][1]
    assert {r[1] for r in results[1:]} == {results[1][1]} != {first_pid}  # ran again, in order
    assert [r[2] for r in results[1:]] == [1, 2, 3]  # on the restarted actor's fresh state

    @ray.remote(max_restarts=1)  # max_task_retries=0: the call in flight fails, as in Ray
    class B:
        def die(self):
            import os

            os.kill(os.getpid(), signal.SIGKILL)

        def ok(self):
            return "ok"

    b = B.remote()
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(b.die.remote(), timeout=60)
    assert wait_for(lambda: _ok_after_restart(ray, b), timeout=30, what="the restarted actor") == "ok"


def _ok_after_restart(ray, handle):
    try:
        return ray.get(handle.ok.remote(), timeout=10)
    except exceptions.ActorDiedError:
        return None


def test_driver_killed_leaves_nothing_behind(no_leaks, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent("""
        import sys, time, numpy
        import runtime as ray
        ray.init(num_cpus=2)
        keep = ray.put(numpy.ones(10_000_000))          # a shared-memory segment
        @ray.remote
        def forever():
            import time; time.sleep(600)
        refs = [forever.remote() for _ in range(2)]      # busy workers
        print("ready", flush=True)
        time.sleep(600)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert len(ours(no_leaks)) >= 4  # head, node, zygote, workers
    assert segments()
    proc.kill()
    proc.wait()
    wait_for(
        lambda: not ours(no_leaks) and not segments(),
        timeout=15,
        what="the cluster of a killed driver to clean up",
    )


def test_unpicklable_result_is_an_error_not_a_crash(ray):
    @ray.remote
    def bad():
        import threading

        return threading.Lock()

    with pytest.raises(exceptions.SerializationError):
        ray.get(bad.remote())

    @ray.remote
    def fine():
        return 2

    assert ray.get(fine.remote()) == 2


def test_task_exceptions_are_not_retried_unless_asked(ray, tmp_path):
    counter = tmp_path / "n"

    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            raise ValueError("transient")
        return len(open(path).read())

    assert ray.get(flaky.remote(str(counter))) == 3

    @ray.remote(max_retries=3)
    def always(path):
        with open(path, "a") as f:
            f.write("y")
        raise ValueError("no retry")

    other = tmp_path / "m"
    with pytest.raises(ValueError):
        ray.get(always.remote(str(other)))
    assert other.read_text() == "y"


def test_cluster_processes_stop_on_shutdown(no_leaks):
    runtime.init(num_cpus=2)
    # head, node, zygote, 2 workers (forked in the background)
    wait_for(lambda: len(ours(no_leaks)) >= 5, what="the cluster's five processes")
    runtime.shutdown()
    wait_for(lambda: not ours(no_leaks), what="cluster processes to exit")
