"""Cells the notebook tests run on both engines, the runtime's (``import runtime as ray``)
and Ray's (``import ray``): one source, and one check of what they print."""

from __future__ import annotations

import re
import textwrap

from conftest import wait_for
from kernel_harness import Kernel, ok


def follow_and_progress(module: str) -> str:
    """A progress actor followed with `kernel_ext.follow`, and `kernel_ext.progress` over a
    put ref and a failing task; prints both ends (``view.n counted.n counted.error``), then
    the view's text bar."""
    return textwrap.dedent(f"""
        import {module} as ray, kernel_ext, time

        @ray.remote
        class ProgressActor:
            def __init__(self, total):
                self.total, self.done = total, 0
            def report_progress(self, n):
                self.done += n
            def get_progress(self):
                return self.done / self.total

        actor = ProgressActor.remote(10)
        view = kernel_ext.follow(actor, "get_progress")
        for i in range(10):  # not `_`: later cells read the last result as `_`
            actor.report_progress.remote(1)

        @ray.remote
        def fail():
            raise ValueError("x")

        refs = [ray.put(1), fail.remote()]
        counted = kernel_ext.progress(refs)
        deadline = time.time() + 30
        while (not view.stopped.is_set() or not counted.stopped.is_set()) and time.time() < deadline:
            time.sleep(0.05)
        print(view.n, counted.n, counted.error)
        print(view.text())
    """)


def check_follow_and_progress(stdout: str, error: str) -> None:
    """What `follow_and_progress` printed: the actor's fraction followed to 1.0, both refs
    counted with the task's error named as the engine names it (`error`), and the bar of a
    fraction shown as a percentage only."""
    first, bar = stdout.splitlines()[:2]
    assert first.split() == ["1.0", "2.0", f"{error}(ValueError)"], stdout
    assert "100%" in bar and "1/1" not in bar, bar


def output_tasks(module: str) -> str:
    """Tasks that print: `late` after the cell that started it ended, `parent` to stdout and
    its nested `child` to stderr."""
    return textwrap.dedent(f"""
        import {module} as ray, time, sys

        @ray.remote
        def late(t):
            time.sleep(t)
            print("late hello")
            return 1

        @ray.remote
        def child():
            print("child says hi", file=sys.stderr)
            return 2

        @ray.remote
        def parent():
            print("parent says hi")
            return ray.get(child.remote())
    """)


def check_output_lands(kernel: Kernel, at_once: bool) -> tuple[str, str, str]:
    """Run `output_tasks`' tasks: a print after its cell ended lands in that cell and not the
    next; a task's and its nested task's prints land in the cell that got the result, on their
    streams (`at_once`: the task's print is there when ``get`` returns). The three cells' ids."""
    first = ok(kernel, "ref = late.remote(1.5)")  # the cell ends before the print
    second = ok(kernel, "x = 1 + 1")
    wait_for(lambda: "late hello" in kernel.stream(first), timeout=60, what="the late print")
    assert re.search(r"\(late pid=\d+\) late hello", kernel.stream(first, "stdout"))
    assert "late hello" not in kernel.stream(second)
    nested = ok(kernel, "ray.get(parent.remote())")
    if at_once:
        assert "parent says hi" in kernel.stream(nested, "stdout")
    wait_for(lambda: "parent says hi" in kernel.stream(nested, "stdout"), what="the task's print")
    wait_for(lambda: "child says hi" in kernel.stream(nested, "stderr"), what="the nested task's print")
    return first, second, nested
