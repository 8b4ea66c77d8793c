"""Hamilton on the cluster: GraphAdapter and TaskExecutor, Hamilton's hello world unchanged but the import."""

from __future__ import annotations

import os
import sys
import textwrap

import cloudpickle
import pandas as pd
import pytest
from hamilton import ad_hoc_utils, base, driver
from hamilton.function_modifiers.metadata import ray_remote_options
from hamilton.htypes import Collect, Parallelizable

from runtime.integrations.hamilton import GraphAdapter, TaskExecutor, remote_options_from_tags

# Hamilton's hello world (docs: "Hello World"): my_functions.py, imported by the driver script.
MY_FUNCTIONS = textwrap.dedent(
    """
    import os

    import pandas as pd


    def avg_3wk_spend(spend: pd.Series) -> pd.Series:
        \"\"\"Rolling 3 week average spend.\"\"\"
        return spend.rolling(3).mean()


    def spend_per_signup(spend: pd.Series, signups: pd.Series) -> pd.Series:
        \"\"\"The cost per signup in relation to spend.\"\"\"
        return spend / signups


    def spend_mean(spend: pd.Series) -> float:
        \"\"\"Shows function creating a scalar. In this case it computes the mean of the entire column.\"\"\"
        return spend.mean()


    def spend_zero_mean(spend: pd.Series, spend_mean: float) -> pd.Series:
        \"\"\"Shows function that takes a scalar. In this case to zero mean spend.\"\"\"
        return spend - spend_mean


    def spend_std_dev(spend: pd.Series) -> float:
        \"\"\"Function that computes the standard deviation of the spend column.\"\"\"
        return spend.std()


    def spend_zero_mean_unit_variance(spend_zero_mean: pd.Series, spend_std_dev: float) -> pd.Series:
        \"\"\"Function showing one way to make spend have zero mean and unit variance.\"\"\"
        return spend_zero_mean / spend_std_dev


    def where_it_ran(spend: pd.Series) -> pd.Series:
        return pd.Series([os.getpid()] * len(spend), index=spend.index)
    """
)


@pytest.fixture
def my_functions(tmp_path, monkeypatch):
    """The module, importable here and (through the shipped sys.path) in the workers."""
    (tmp_path / "my_functions.py").write_text(MY_FUNCTIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_functions

    yield my_functions
    sys.modules.pop("my_functions", None)


INITIAL_COLUMNS = {  # load from actuals or wherever -- this is our initial data we use as input.
    "signups": pd.Series([1, 10, 50, 100, 200, 400]),
    "spend": pd.Series([10, 10, 20, 40, 40, 50]),
}
OUTPUT_COLUMNS = [
    "spend",
    "signups",
    "avg_3wk_spend",
    "spend_per_signup",
    "spend_zero_mean_unit_variance",
]


def test_hello_world_with_a_pandas_result(ray, my_functions):
    import runtime as ray  # Hamilton's example: `import ray` and `h_ray.RayGraphAdapter`

    rga = GraphAdapter(result_builder=base.PandasDataFrameResult())
    dr = driver.Driver(INITIAL_COLUMNS, my_functions, adapter=rga)
    df = dr.execute([*OUTPUT_COLUMNS, "where_it_ran"])
    local = driver.Driver(INITIAL_COLUMNS, my_functions).execute(OUTPUT_COLUMNS)
    pd.testing.assert_frame_equal(df[OUTPUT_COLUMNS], local)
    assert os.getpid() not in set(df["where_it_ran"])  # the nodes ran as tasks
    assert ray.is_initialized()


def test_tags_become_task_options(ray):
    assert remote_options_from_tags({"ray_remote.num_cpus": "2", "other": "x"}) == {"num_cpus": 2}

    @ray_remote_options(resources={"alice": 1})
    def with_alice(spend: pd.Series) -> float:
        return float(spend.sum())

    @ray_remote_options(num_cpus=-1)
    def bad_cpus(spend: pd.Series) -> float:
        return 0.0

    module = _by_value(ad_hoc_utils.create_temporary_module(with_alice, bad_cpus, module_name="tagged"))
    dr = driver.Driver(INITIAL_COLUMNS, module, adapter=GraphAdapter(base.DictResult()))
    assert dr.execute(["with_alice"]) == {"with_alice": 170.0}
    with pytest.raises(ValueError, match="num_cpus must be a non-negative number"):
        dr.execute(["bad_cpus"])  # the tag reached the task's options, which refused it


def test_adapter_needs_a_result_builder_and_can_shut_down(my_functions):
    import runtime

    with pytest.raises(ValueError, match="ResultMixin"):
        GraphAdapter(result_builder=None)
    rga = GraphAdapter(base.DictResult(), ray_init_config={"num_cpus": 1}, shutdown_ray_on_completion=True)
    out = driver.Driver({"spend": pd.Series([1.0, 3.0])}, my_functions, adapter=rga).execute(["spend_mean"])
    assert out == {"spend_mean": 2.0}
    assert not runtime.is_initialized()


def _by_value(module):
    """A notebook's ad-hoc module exists only here: its functions travel by value (as with Ray)."""
    cloudpickle.register_pickle_by_value(module)
    return module


def numbers(n: int) -> Parallelizable[int]:
    yield from range(n)


def doubled(numbers: int) -> tuple:
    return numbers * 2, os.getpid()


def summary(doubled: Collect[tuple]) -> dict:
    return {"total": sum(d for d, _ in doubled), "pids": sorted({p for _, p in doubled})}


def test_task_executor_runs_dynamic_execution(ray):
    module = _by_value(ad_hoc_utils.create_temporary_module(numbers, doubled, summary, module_name="dyn"))
    dr = (
        driver.Builder()
        .with_modules(module)
        .enable_dynamic_execution(allow_experimental_mode=True)
        .with_remote_executor(TaskExecutor(skip_init=True))
        .build()
    )
    out = dr.execute(["summary"], inputs={"n": 10})["summary"]
    assert out["total"] == 90
    assert os.getpid() not in out["pids"]
