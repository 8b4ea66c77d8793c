"""runtime.data with Ray Data's names, rows and batch formats, on real clusters."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import runtime
from runtime.data import DataContext


@pytest.fixture(autouse=True)
def quiet_context():
    """No bars (one test turns them on), default sizes; restored after each test."""
    ctx = DataContext.get_current()
    saved = dict(vars(ctx))
    ctx.enable_progress_bars = False
    yield ctx
    vars(ctx).update(saved)


def guests(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "name": [f"guest {i}" for i in range(n)],
            "age": rng.integers(1, 90, n),
            "fare": rng.random(n) * 100,
            "pclass": rng.integers(1, 4, n),
        }
    )


def pandas_transform(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["pclass"] == 1]
    return df.assign(fare_per_year=df["fare"] / df["age"])


def test_the_seed_examples_run_with_only_the_import_changed(ray, tmp_path):
    import runtime as ray  # the seeds say `import ray`

    ds = ray.data.range(10000).repartition(10)
    assert ds.take(5) == [{"id": i} for i in range(5)]
    assert ds.num_blocks() == 10

    path = str(tmp_path / "my_data_guest.csv")
    guests().to_csv(path, index=False)
    ds = ray.data.read_csv(path).repartition(10)
    ds.map_batches(pandas_transform, batch_size=100)  # lazy, as in the seed
    out = ds.map_batches(pandas_transform, batch_size=100, batch_format="pandas").to_pandas()
    expected = pandas_transform(pd.read_csv(path)).reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected)


def test_runtime_data_is_an_attribute_and_lazy():
    import subprocess
    import sys

    code = (
        "import sys, runtime as ray\n"
        "assert 'pyarrow' not in sys.modules and 'pandas' not in sys.modules\n"
        "ray.data.DataContext.get_current().enable_progress_bars = False\n"
        "print(ray.data.range(3).take_all())\n"  # and the first use starts a cluster (auto-init)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[{'id': 0}, {'id': 1}, {'id': 2}]"


def test_in_memory_sources(ray):
    ds = ray.data.from_items([{"a": i, "b": str(i)} for i in range(10)], override_num_blocks=3)
    assert ds.num_blocks() == 3 and ds.count() == 10
    assert ds.take(2) == [{"a": 0, "b": "0"}, {"a": 1, "b": "1"}]
    assert ray.data.from_items([1, 2, 3]).take_all() == [{"item": 1}, {"item": 2}, {"item": 3}]
    with pytest.raises(TypeError, match="must all be dicts"):
        ray.data.from_items([{"a": 1}, 2])
    df = guests(50)
    pd.testing.assert_frame_equal(ray.data.from_pandas(df).to_pandas(), df)
    pd.testing.assert_frame_equal(ray.data.from_pandas([df[:20], df[20:]]).to_pandas(), df)
    images = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    rows = ray.data.from_numpy(images).take_all()
    assert len(rows) == 4 and rows[1]["data"].shape == (2, 3)
    np.testing.assert_array_equal(rows[1]["data"], images[1])
    batch = ray.data.from_numpy(images).take_batch(4)
    np.testing.assert_array_equal(batch["data"], images)
    table = pa.table({"x": [1, 2, 3]})
    assert ray.data.from_arrow(table).sum("x") == 6
    with pytest.raises(TypeError, match="DataFrame"):
        ray.data.from_pandas([1])
    with pytest.raises(ValueError, match=">= 0"):
        ray.data.range(-1)


def test_file_sources_split_big_files_at_line_boundaries(ray, tmp_path, quiet_context):
    df = guests(2000)
    df.to_csv(tmp_path / "g.csv", index=False)
    quiet_context.target_max_block_size = 7_000  # ~13 byte ranges for this file
    ds = ray.data.read_csv(str(tmp_path / "g.csv"))
    assert ds.num_blocks() > 5
    pd.testing.assert_frame_equal(ds.to_pandas(), df)

    with open(tmp_path / "g.jsonl", "w") as f:
        for r in df.to_dict("records"):
            f.write(json.dumps(r) + "\n")
    pd.testing.assert_frame_equal(ray.data.read_json(str(tmp_path / "g.jsonl")).to_pandas(), df)
    (tmp_path / "arr.json").write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert ray.data.read_json(str(tmp_path / "arr.json")).take_all() == [{"a": 1}, {"a": 2}]

    lines = [f"line {i}" for i in range(500)]
    (tmp_path / "t.txt").write_text("\n".join(lines[:250]) + "\n\n" + "\n".join(lines[250:]) + "\n")
    assert [r["text"] for r in ray.data.read_text(str(tmp_path / "t.txt")).take_all()] == lines

    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(df[:1000]), pq_dir / "a.parquet", row_group_size=100)
    pq.write_table(pa.Table.from_pandas(df[1000:]), pq_dir / "b.parquet", row_group_size=100)
    ds = ray.data.read_parquet(str(pq_dir))
    assert ds.num_blocks() > 2  # row groups grouped up to the target size
    pd.testing.assert_frame_equal(ds.to_pandas(), df)
    assert ray.data.read_parquet(str(pq_dir), columns=["age"]).columns() == ["age"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        ray.data.read_csv(str(tmp_path / "missing.csv"))


def test_row_and_batch_transforms(ray):
    ds = ray.data.range(100, override_num_blocks=4)
    assert ds.map(lambda r: {"id": r["id"], "sq": r["id"] ** 2}).take(3) == [
        {"id": 0, "sq": 0},
        {"id": 1, "sq": 1},
        {"id": 2, "sq": 4},
    ]
    assert ds.flat_map(lambda r: [r, r]).count() == 200
    assert [r["id"] for r in ds.filter(lambda r: r["id"] % 10 == 0).take_all()] == list(range(0, 100, 10))

    seen = {}

    def record(fmt):
        def fn(batch):
            kind = type(batch).__name__
            n = len(batch["id"]) if isinstance(batch, dict) else len(batch)
            return {"kind": [kind] * n, "n": [n] * n}

        return fn

    for fmt, kind in [("default", "dict"), ("numpy", "dict"), ("pandas", "DataFrame"), ("pyarrow", "Table")]:
        rows = ds.map_batches(record(fmt), batch_size=10, batch_format=fmt).take_all()
        seen[fmt] = {r["kind"] for r in rows}
        assert seen[fmt] == {kind}
        assert max(r["n"] for r in rows) == 10
    whole = ds.map_batches(lambda t: {"n": [t.num_rows]}, batch_size=None, batch_format="pyarrow")
    assert sorted(r["n"] for r in whole.take_all()) == [25, 25, 25, 25]

    def twice(batch):
        yield batch
        yield batch

    assert ds.map_batches(twice, batch_size=50).count() == 200
    added = ds.add_column("double", lambda df: df["id"] * 2)
    assert added.take(2) == [{"id": 0, "double": 0}, {"id": 1, "double": 2}]
    assert added.drop_columns(["id"]).columns() == ["double"]
    assert added.select_columns(["double", "id"]).columns() == ["double", "id"]
    assert added.rename_columns({"double": "d"}).columns() == ["id", "d"]
    with pytest.raises(ValueError, match="batch_format"):
        ds.map_batches(lambda b: b, batch_format="arrow")
    with pytest.raises(TypeError, match="must return a dict"):
        ds.map_batches(lambda b: 1).take(1)
    with pytest.raises(TypeError, match="must return a dict"):
        ds.map(lambda r: 1).take(1)
    with pytest.raises(KeyError, match="no column"):
        ds.select_columns(["nope"]).take(1)
    with pytest.raises(TypeError, match="function"):
        ds.map(3)


class AddOffset:
    def __init__(self, offset):
        self.offset = offset
        self.pid = os.getpid()
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return {
            "id": batch["id"] + self.offset,
            "pid": np.full(len(batch["id"]), self.pid),
            "calls": np.full(len(batch["id"]), self.calls),
        }


def test_map_batches_with_a_callable_class_runs_on_a_pool_of_actors(ray):
    ds = ray.data.range(400, override_num_blocks=8)
    out = ds.map_batches(AddOffset, fn_constructor_args=(1000,), concurrency=2, batch_size=25).to_pandas()
    assert out["id"].tolist() == list(range(1000, 1400))
    assert out["pid"].nunique() == 2 and os.getpid() not in set(out["pid"])
    assert out["calls"].max() > 2  # each actor was built once and kept its state across batches
    strategy = ds.map_batches(
        AddOffset, fn_constructor_kwargs={"offset": 1}, compute=ray.data.ActorPoolStrategy(size=1)
    )
    assert strategy.take(1)[0]["id"] == 1
    with pytest.raises(ValueError, match="concurrency"):
        ds.map_batches(AddOffset)
    many = ds.map_batches(AddOffset, fn_constructor_args=(0,), concurrency=4).to_pandas()  # > 2 CPUs
    assert many["id"].tolist() == list(range(400)) and many["pid"].nunique() == 4
    # The actors are gone when the stage ends: the cluster's CPUs are free again.
    from conftest import wait_for

    wait_for(lambda: ray.available_resources().get("CPU", 0) == 2, what="the pool's actors to exit")


def test_all_to_all_steps(ray):
    ds = ray.data.range(1000, override_num_blocks=7)
    rep = ds.repartition(4).materialize()
    assert rep.num_blocks() == 4 and [r["id"] for r in rep.take_all()] == list(range(1000))
    shuffled = [r["id"] for r in ds.random_shuffle(seed=3).take_all()]
    assert sorted(shuffled) == list(range(1000)) and shuffled != list(range(1000))
    assert shuffled == [r["id"] for r in ds.random_shuffle(seed=3).take_all()]
    assert [r["id"] for r in ds.random_shuffle().sort("id", descending=True).take(3)] == [999, 998, 997]

    df = guests(500)
    gds = ray.data.from_pandas([df[:200], df[200:]])
    assert gds.sort(["pclass", "age"]).to_pandas()[["pclass", "age"]].values.tolist() == (
        df.sort_values(["pclass", "age"])[["pclass", "age"]].values.tolist()
    )
    counts = gds.groupby("pclass").count().to_pandas()
    assert counts["count()"].tolist() == df.groupby("pclass").size().tolist()
    assert counts["pclass"].tolist() == [1, 2, 3]
    for how in ("sum", "min", "max", "mean", "std"):
        got = getattr(gds.groupby("pclass"), how)("fare").to_pandas()[f"{how}(fare)"].to_numpy()
        np.testing.assert_allclose(got, getattr(df.groupby("pclass")["fare"], how)().to_numpy())
    oldest = gds.groupby("pclass").map_groups(
        lambda g: g.nlargest(1, "age")[["pclass", "age"]], batch_format="pandas"
    )
    assert oldest.to_pandas()["age"].tolist() == df.groupby("pclass")["age"].max().tolist()

    # More blocks than rows: empty blocks, whose string columns pandas types differently.
    few = ray.data.from_items([{"name": n, "age": a} for n, a in [("a", 20), ("b", 40), ("c", 50)]])
    kept = few.repartition(10).map_batches(lambda d: d[d["age"] > 30], batch_format="pandas").to_pandas()
    assert kept["name"].tolist() == ["b", "c"]

    both = ds.union(ray.data.range(5))
    assert both.count() == 1005 and both.take_all()[-1] == {"id": 4}
    parts = ds.split(3)
    assert [p.count() for p in parts] == [333, 333, 334]
    assert ds.limit(5).take_all() == [{"id": i} for i in range(5)]


def test_consumption(ray, capsys):
    ds = ray.data.range(100, override_num_blocks=3).map(lambda r: {"id": r["id"], "x": float(r["id"])})
    assert ds.count() == 100
    assert ds.sum("id") == 4950 and ds.min("id") == 0 and ds.max("id") == 99
    assert ds.mean("x") == pytest.approx(49.5)
    assert ds.std("x") == pytest.approx(np.std(np.arange(100), ddof=1))
    assert ds.sum(["id", "x"]) == {"sum(id)": 4950, "sum(x)": 4950.0}
    schema = ds.schema()
    assert schema.names == ["id", "x"] and str(schema.types[0]) == "int64"
    assert "Column" in repr(schema)
    sizes = [len(b["id"]) for b in ds.iter_batches(batch_size=30)]
    assert sizes == [30, 30, 30, 10]  # batches span blocks
    assert [len(b) for b in ds.iter_batches(batch_size=30, drop_last=True, batch_format="pandas")] == [30] * 3
    assert next(iter(ds.iter_rows())) == {"id": 0, "x": 0.0}
    assert ds.take_batch(5, batch_format="pandas")["id"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="more than 10"):
        ds.take_all(limit=10)
    with pytest.raises(ValueError, match="more than 10"):
        ds.to_pandas(limit=10)
    ds.show(2)
    assert capsys.readouterr().out == "{'id': 0, 'x': 0.0}\n{'id': 1, 'x': 1.0}\n"
    mat = ds.materialize()
    assert mat.num_blocks() == 3 and "num_rows=100" in repr(mat)
    assert sum(t.num_rows for t in ray.get(mat.to_arrow_refs())) == 100
    assert ray.data.range(0).count() == 0 and ray.data.range(0).schema() is None


def test_write_and_read_back(ray, tmp_path):
    df = guests(300)
    ds = ray.data.from_pandas([df[:100], df[100:]])
    for fmt in ("csv", "parquet", "json"):
        out = str(tmp_path / fmt)
        getattr(ds, f"write_{fmt}")(out)
        files = sorted(os.listdir(out))
        assert len(files) == 2 and all(f.endswith(f".{fmt}") for f in files)
        back = getattr(ray.data, f"read_{fmt}")(out).to_pandas()
        pd.testing.assert_frame_equal(back, df, check_dtype=False)


def test_a_dataset_larger_than_the_object_store_streams_and_spills():
    runtime.init(num_cpus=2, object_store_memory=48 * 2**20)
    ctx = DataContext.get_current()
    ctx.max_tasks_in_flight_per_stage = 2

    def big(batch):  # 8 MB per block, 40 blocks: 320 MB through a 48 MB store
        n = 1_000_000
        return {"v": np.full(n, float(batch["id"][0]))}

    ds = runtime.data.range(40, override_num_blocks=40).map_batches(big, batch_size=None)
    total = sum(float(b["v"].sum()) for b in ds.iter_batches(batch_size=None))
    assert total == sum(i * 1_000_000 for i in range(40))
    mat = ds.materialize()  # all of it held at once: the store spills to disk
    assert mat.count() == 40_000_000
    assert mat.sum("v") == total
    del mat
    runtime.shutdown()


def test_progress_bar_per_stage_in_a_terminal(ray, capfd, quiet_context):
    quiet_context.enable_progress_bars = True
    ray.data.range(100, override_num_blocks=4).map_batches(
        pandas_transform_ids, batch_format="pandas"
    ).repartition(2).take_all()
    err = capfd.readouterr().err
    assert "range -> pandas_transform_ids" in err and "4/4" in err
    assert "repartition" in err


def pandas_transform_ids(df):
    return df.assign(id2=df["id"] * 2)
