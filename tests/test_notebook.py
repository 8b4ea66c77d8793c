"""The notebook layer through a real IPython kernel (jupyter_client)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import ours, wait_for
from kernel_harness import Kernel, ok
from notebook_cells import check_follow_and_progress, check_output_lands, follow_and_progress, output_tasks


@pytest.fixture
def kernel(no_leaks):
    env = dict(os.environ, NBCLUSTER_DIR=no_leaks)
    k = Kernel(env)
    yield k
    k.shutdown()


def started(kernel: Kernel, args: str = "-n 2") -> str:
    ok(kernel, "%load_ext kernel_ext")
    return ok(kernel, f"%cluster start {args}")


def test_cluster_start_shows_a_widget_with_a_text_fallback(kernel):
    msg_id = started(kernel, "-n 2 --resources '{\"alice\": 2}'")
    bundles = kernel.results(msg_id)
    assert bundles, kernel.messages(msg_id)
    bundle = bundles[0]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "CPUs: 2" in bundle["text/plain"] and "alice 2" in bundle["text/plain"]
    assert "<table>" in bundle["text/html"]
    again = ok(kernel, "%cluster start")
    assert "already in use" in kernel.stream(again)
    assert kernel.value("__import__('runtime').cluster_resources()['alice']") == "2.0"


def test_help_and_bad_arguments(kernel):
    ok(kernel, "%load_ext kernel_ext")
    assert "start" in kernel.stream(ok(kernel, "%cluster"))
    out = kernel.stream(ok(kernel, "%cluster start --resources nope"))
    assert "JSON" in out
    assert "Not connected" in kernel.stream(ok(kernel, "%%remote\nx = 1"))


def test_a_cell_value_that_cannot_be_pickled_is_named_with_why(kernel):
    started(kernel, "-n 1")
    ok(kernel, "import threading\nlock = threading.Lock()\nz = 5")
    msg_id = kernel.execute("%%remote\nw = z + 1\nwith lock:\n    pass")
    out = kernel.stream(msg_id)
    assert "not sent (cannot be pickled): lock (TypeError: cannot pickle '_thread.lock' object)" in out, out
    assert "--actor NAME" in out
    errs = kernel.errors(msg_id)  # the cell ran without it: a NameError from the cluster, nothing else
    assert errs and "NameError" in errs[0]["ename"] + errs[0]["evalue"]
    assert kernel.value("z") == "5"  # the kernel and the cluster carry on
    ok(kernel, "%%remote\nw = z + 1")
    assert kernel.value("w") == "6"


def test_remote_output_lands_in_the_submitting_cell(kernel):
    started(kernel)
    ok(kernel, output_tasks("runtime"))
    check_output_lands(kernel, at_once=True)


def test_remote_cell_namespace_round_trip(kernel):
    started(kernel)
    ok(kernel, "x = 21\nimport numpy as np")
    cell = ok(kernel, "%%remote\ny = x * 2\nz = np.arange(3).sum()\nprint('remote hi')\ny + int(z)")
    result = [b for b in kernel.results(cell) if "text/plain" in b]
    assert result and result[-1]["text/plain"] == "45"
    assert "remote hi" in kernel.stream(cell)
    assert kernel.value("(y, int(z))") == "(42, 3)"
    err = kernel.execute("%%remote\n1 / 0")
    errors = kernel.errors(err)
    assert errors and "ZeroDivisionError" in errors[0]["ename"] + " ".join(errors[0]["traceback"])
    ref = ok(
        kernel, "%%remote --no-wait --num-cpus 1\nimport time\ntime.sleep(0.5)\nanswer = 6 * 7\nanswer + 1"
    )
    assert "ObjectRef" in kernel.results(ref)[-1]["text/plain"]
    assert kernel.value("__import__('runtime').get(_)") == "43"  # the cell's value
    assert kernel.value("answer") == "42"  # and the names it assigned came back


def test_remote_cells_in_a_persistent_actor(kernel):
    started(kernel)
    ok(kernel, "%%remote --actor engine\ncounter = 1\nimport os\npid = os.getpid()")
    ok(kernel, "%%remote --actor engine\ncounter += 1\nsame = os.getpid() == pid")
    assert kernel.value("(counter, same)") == "(2, True)"


def test_progress_bar_reaches_the_total(kernel):
    started(kernel)
    msg_id = ok(
        kernel,
        textwrap.dedent("""
        import runtime as ray, kernel_ext
        bar = kernel_ext.ProgressBar(total=20, description="work")

        @ray.remote
        def step(bar):
            for _ in range(4):
                bar.update(1)
            return 1

        assert sum(ray.get([step.remote(bar) for _ in range(5)])) == 5
        import time
        deadline = time.time() + 20
        while bar.view.n < 20 and time.time() < deadline:
            time.sleep(0.05)
        bar.close()
        print("bar at", bar.view.n)
    """),
    )
    assert "bar at 20" in kernel.stream(msg_id)
    states = kernel.comm_states()
    bars = [s for s in states.values() if s.get("_model_name") == "FloatProgressModel"]
    assert bars and bars[-1]["value"] == 20 and bars[-1]["bar_style"] == "success"
    finals = [b["text/plain"] for b in kernel.results(msg_id) if "text/plain" in b]
    assert any("20/20" in t for t in finals)


def test_follow_an_actor_and_progress_of_refs(kernel):
    started(kernel)
    msg_id = ok(kernel, follow_and_progress("runtime"))
    check_follow_and_progress(kernel.stream(msg_id), "TaskError")


def test_status_view(kernel):
    started(kernel, "-n 2 --resources '{\"alice\": 2}'")
    ok(
        kernel,
        textwrap.dedent("""
        import runtime as ray
        @ray.remote(resources={"bob": 1})
        def impossible():
            return 1
        stuck = impossible.remote()
    """),
    )
    msg_id = ok(kernel, "%cluster status")
    texts = [b["text/plain"] for b in kernel.results(msg_id) if "text/plain" in b]
    assert texts and "CPU" in texts[0] and "alice" in texts[0]
    wait_for(
        lambda: (
            "impossible"
            in kernel.value(
                "__import__('runtime.snapshot').snapshot.format_text("
                "__import__('runtime.snapshot').snapshot.snapshot())"
            )
        ),
        timeout=10,
        what="the infeasible task in the status",
    )
    ok(kernel, "%cluster stop")
    assert kernel.value("__import__('runtime').is_initialized()") == "False"


def test_connect_and_disconnect_leave_the_cluster_running(kernel, no_leaks):
    cli = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "start", "--head", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    address = re.search(r"127\.0\.0\.1:\d+", cli.stdout).group(0)
    ok(kernel, "%load_ext kernel_ext")
    msg_id = ok(kernel, f"%cluster connect {address}")
    assert "started elsewhere" in kernel.results(msg_id)[0]["text/plain"]
    assert kernel.value("__import__('runtime').get(__import__('runtime').put(5))") == "5"
    ok(kernel, "%cluster disconnect")
    assert (
        subprocess.run(
            [sys.executable, "-m", "runtime.cli", "status"], capture_output=True, timeout=60
        ).returncode
        == 0
    )
    assert (
        subprocess.run(
            [sys.executable, "-m", "runtime.cli", "stop"], capture_output=True, timeout=60
        ).returncode
        == 0
    )


def test_kernel_killed_leaves_no_process(kernel, no_leaks):
    started(kernel)
    ok(kernel, "import runtime as ray, numpy\nkeep = ray.put(numpy.ones(1_000_000))")
    assert len(ours(no_leaks)) >= 5  # the kernel is not ours; head, node, zygote, workers are
    os.kill(kernel.pid, signal.SIGKILL)
    wait_for(lambda: not ours(no_leaks), timeout=10, what="the cluster of a killed kernel to exit")


def test_warnings_and_logging_from_tasks_land_in_the_cell(kernel):
    started(kernel)
    msg_id = ok(
        kernel,
        textwrap.dedent("""
        import runtime as ray

        @ray.remote
        def noisy():
            import logging, warnings
            warnings.warn("careful with that axe")
            logging.getLogger("job").warning("logged from a task")
            return 1

        ray.get(noisy.remote())
    """),
    )
    wait_for(lambda: "logged from a task" in kernel.stream(msg_id, "stderr"), what="the log line")
    err = kernel.stream(msg_id, "stderr")
    assert "careful with that axe" in err and "(noisy pid=" in err
