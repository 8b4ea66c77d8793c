"""Remote tracebacks name the user's files and show their source lines, with the newest cloudpickle.

cloudpickle 3.1 pickles code by value with ``co_filename = "<dynamic-code>"``; the runtime keeps
the real file name, and the driver fills in source lines only it can read (a notebook cell's).
"""

from __future__ import annotations

import asyncio
import importlib
import linecache
import os
import subprocess
import sys
import textwrap

import cloudpickle
import pytest
from conftest import wait_for
from kernel_harness import Kernel

from runtime import exceptions
from runtime.remote_traceback import FULL_TRACEBACK_ENV, RemoteTraceback

WORKER_FRAME = os.path.join("runtime", "worker", "loop.py")


def caught(ray, ref) -> exceptions.TaskError:
    with pytest.raises(exceptions.TaskError) as info:
        ray.get(ref)
    return info.value


def test_a_module_pickled_by_value_keeps_its_file_and_lines(ray, tmp_path, monkeypatch):
    (tmp_path / "by_value_mod.py").write_text(
        textwrap.dedent(
            """
            class Oops(Exception):
                pass

            def inner(x):
                raise Oops(f"inner failed on {x}")

            def work(x):
                return inner(x) + 1
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("by_value_mod")
    cloudpickle.register_pickle_by_value(mod)
    try:
        err = caught(ray, ray.remote(mod.work).remote(7))
    finally:
        cloudpickle.unregister_pickle_by_value(mod)
    text = str(err)
    path = str(tmp_path / "by_value_mod.py")
    assert f'File "{path}", line 9, in work' in text, text
    assert "return inner(x) + 1" in text
    assert f'File "{path}", line 6, in inner' in text
    assert 'raise Oops(f"inner failed on {x}")' in text
    assert "<dynamic-code>" not in text
    assert WORKER_FRAME not in text  # the runtime's own frames are not the user's business
    assert isinstance(err, mod.Oops)


def test_source_known_only_to_the_driver_is_filled_in_where_the_error_is_read(ray):
    # What IPython does with a cell: its source lives only in the kernel's linecache.
    name = "/nonexistent/ipykernel_0/cell_under_test.py"
    source = "def cell_fn(n):\n    total = n * 2\n    raise RuntimeError(f'cell failed {total}')\n"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    ns: dict = {"__name__": "__main__"}
    exec(compile(source, name, "exec"), ns)
    try:
        err = caught(ray, ray.remote(ns["cell_fn"]).remote(3))
        text = str(err)
        assert f'File "{name}", line 3, in cell_fn' in text, text
        assert "raise RuntimeError(f'cell failed {total}')" in text
        rendered = "\n".join(err._render_traceback_())
        assert rendered.startswith("TaskError: cell_fn() failed on ")
        assert "raise RuntimeError(f'cell failed {total}')" in rendered
    finally:
        del linecache.cache[name]


def test_full_traceback_behind_an_environment_variable(ray, monkeypatch):
    @ray.remote
    def fails():
        raise ValueError("full please")

    err = caught(ray, fails.remote())
    assert WORKER_FRAME not in str(err)
    monkeypatch.setenv(FULL_TRACEBACK_ENV, "1")
    text = str(err)
    assert WORKER_FRAME in text and "value = fn(*args, **kwargs)" in text
    assert 'raise ValueError("full please")' in text


def test_chained_exceptions_nested_tasks_and_actors(ray):
    def helper(x):
        raise KeyError(f"missing {x}")

    @ray.remote
    def wraps(x):
        try:
            helper(x)
        except KeyError as e:
            raise ValueError("wrapped") from e

    @ray.remote
    def outer():
        return ray.get(wraps.remote(5))

    @ray.remote
    class Calc:
        def div(self, a):
            return a / 0

        async def later(self):
            await asyncio.sleep(0)
            raise LookupError("async actor")

    text = str(caught(ray, outer.remote()))
    assert 'raise KeyError(f"missing {x}")' in text and 'raise ValueError("wrapped") from e' in text
    assert "direct cause of the following exception" in text
    assert text.index("KeyError") < text.index("ValueError: wrapped")
    calc = Calc.remote()
    text = str(caught(ray, calc.div.remote(1)))
    assert "in div" in text and "return a / 0" in text and WORKER_FRAME not in text
    text = str(caught(ray, calc.later.remote()))
    assert "in later" in text and 'raise LookupError("async actor")' in text and WORKER_FRAME not in text


def test_a_script_run_as_main_shows_its_lines(no_leaks, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import runtime as ray

            @ray.remote
            def step(x):
                return {"a": 1}[x]

            ray.init(num_cpus=1)
            try:
                ray.get(step.remote("b"))
            except KeyError as e:
                print(e)
            ray.shutdown()
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f'File "{script}", line 6, in step' in out.stdout, out.stdout
    assert 'return {"a": 1}[x]' in out.stdout


def test_remote_traceback_pickles_and_renders_without_frames():
    tb = RemoteTraceback.from_text("SomeError: text only")
    assert tb.render() == "SomeError: text only\n"
    err = exceptions.TaskError("f", tb, None, "here")
    again = cloudpickle.loads(cloudpickle.dumps(err))
    assert str(again) == "f() failed on here:\nSomeError: text only"


@pytest.fixture
def kernel(no_leaks):
    k = Kernel(dict(os.environ, NBCLUSTER_DIR=no_leaks))
    yield k
    k.shutdown()


def error_text(kernel: Kernel, msg_id: str) -> str:
    errs = kernel.errors(msg_id)
    assert errs, kernel.messages(msg_id)
    return "\n".join(errs[0]["traceback"])


def test_a_real_kernel_shows_the_cells_name_and_source_lines(kernel):
    for code in ("%load_ext kernel_ext", "%cluster start -n 1", "import runtime as ray"):
        assert not kernel.errors(kernel.execute(code))
    define = kernel.execute(
        "@ray.remote\ndef parse(s):\n    number = int(s)\n    return number\n\n@ray.remote\n"
        "class Box:\n    def open(self):\n        return self.missing_attribute\n"
    )
    assert not kernel.errors(define)
    text = error_text(kernel, kernel.execute('ray.get(parse.remote("x1"))'))
    assert "TaskError: parse() failed on" in text
    assert "Cell In[4], line 3, in parse" in text, text
    assert "number = int(s)" in text
    assert "ValueError: invalid literal for int()" in text
    assert WORKER_FRAME not in text and "<dynamic-code>" not in text
    text = error_text(kernel, kernel.execute("ray.get(Box.remote().open.remote())"))
    assert "Cell In[4], line 9, in open" in text and "return self.missing_attribute" in text, text
    # A %%remote cell: line numbers are the visible cell's (the magic is line 1).
    msg = kernel.execute("%%remote\nx = 1\ny = {}\nz = y['nope'] + x")
    text = error_text(kernel, msg)
    assert "Cell In[7], line 4" in text and "z = y['nope'] + x" in text, text
    assert "remote_cell.py" not in text and WORKER_FRAME not in text
    assert wait_for(lambda: kernel.value("1 + 1") == "2")


def _made_again(cls, args):
    error = cls.__new__(cls, *args)  # what tblib's exception pickler does
    error.args = args
    return error


def test_every_error_of_ours_unpickles_under_a_generic_exception_pickler():
    """dask.distributed installs tblib's pickler for every exception class when it is imported:
    it remakes an error with `cls.__new__(cls)`, which CPython refuses for a class whose first
    base is not its builtin one (MemoryError.__new__(OutOfMemoryError) "is not safe"). A user
    with Dask imported got that TypeError from get() instead of our OutOfMemoryError."""
    import copyreg
    import pickle

    classes = [c for c in vars(exceptions).values() if isinstance(c, type) and issubclass(c, BaseException)]
    assert exceptions.OutOfMemoryError in classes
    for cls in classes:
        assert isinstance(cls.__new__(cls), cls)
    error = exceptions.OutOfMemoryError("the task ran out of memory")
    copyreg.pickle(exceptions.OutOfMemoryError, lambda e: (_made_again, (type(e), e.args)))
    try:
        for dumps in (pickle.dumps, cloudpickle.dumps):
            again = pickle.loads(dumps(error))
            assert type(again) is exceptions.OutOfMemoryError and again.args == error.args
    finally:
        del copyreg.dispatch_table[exceptions.OutOfMemoryError]
