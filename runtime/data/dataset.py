"""Dataset: Ray Data's ``Dataset`` on our runtime — lazy transformations, streaming consumption.

Transformations (``map_batches``, ``filter``, ``repartition``...) only add a
step to the plan; consuming (``take``, ``iter_batches``, ``to_pandas``,
``write_*``...) executes it (see `executor`), block by block.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from .. import ObjectRef, get, remote, wait
from . import aggregate as agg
from . import block as blk
from . import shuffle as shuffle_mod
from .context import DataContext
from .executor import (
    ActorMapOp,
    AllToAllOp,
    BlockRef,
    LimitOp,
    MapOp,
    Plan,
    Source,
    execute,
    materialize,
)
from .transform import AddColumn, Columns, Filter, FlatMap, Instantiate, MapBatches, MapRows, Rename

__all__ = ["ActorPoolStrategy", "Dataset", "GroupedData", "MaterializedDataset", "Schema"]


class ActorPoolStrategy:
    """``compute=ActorPoolStrategy(size=n)``: run a callable class on `n` actors (Ray's older API)."""

    def __init__(
        self, size: int | None = None, min_size: int | None = None, max_size: int | None = None
    ) -> None:
        self.size = size or max_size or min_size or 1


class Schema:
    """The columns of a dataset: ``names``, ``types`` and the Arrow schema (``base_schema``)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.base_schema = schema

    @property
    def names(self) -> list[str]:
        return list(self.base_schema.names)

    @property
    def types(self) -> list[pa.DataType]:
        return list(self.base_schema.types)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and other.base_schema.equals(self.base_schema)

    def __repr__(self) -> str:
        names = self.names or [""]
        types = [str(t) for t in self.types] or [""]
        w1 = max(len("Column"), *(len(n) for n in names))
        w2 = max(len("Type"), *(len(t) for t in types))
        lines = [f"{'Column':<{w1}}  Type", f"{'-' * 6:<{w1}}  {'-' * 4}"]
        lines += [f"{n:<{w1}}  {t:<{w2}}".rstrip() for n, t in zip(self.names, types, strict=False)]
        return "\n".join(lines)


def _remote_args(num_cpus: float | None, num_gpus: float | None, extra: dict) -> dict:
    args = dict(extra)
    if num_cpus is not None:
        args["num_cpus"] = num_cpus
    if num_gpus is not None:
        args["num_gpus"] = num_gpus
    return args


def _batch_size(batch_size: int | str | None) -> int | None:
    if batch_size == "default":
        return DataContext.get_current().default_batch_size
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(
            f'batch_size must be an int >= 1, None (whole blocks) or "default", got {batch_size!r}'
        )
    return batch_size


def _check_fn(fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what}() takes a function (or a callable class), got {type(fn).__name__}")


@remote
def _write(block: blk.Block, path: str, fmt: str, options: dict) -> int:
    if fmt == "csv":
        from pyarrow import csv

        csv.write_csv(block, path, **options)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(block, path, **options)
    else:
        block.to_pandas().to_json(path, orient="records", lines=True, **options)
    return block.num_rows


class Dataset:
    """A distributed table in blocks (Arrow tables in the object store), built lazily.

    Example::

        >>> import runtime as ray
        >>> ds = ray.data.range(1000).map_batches(lambda b: {"id": b["id"] * 2}, batch_size=100)
        >>> ds.filter(lambda r: r["id"] % 3 == 0).take(3)
        [{'id': 0}, {'id': 6}, {'id': 12}]
    """

    def __init__(self, plan: Plan) -> None:
        self._plan = plan

    def _with(self, op: Any) -> Dataset:
        return Dataset(self._plan.with_op(op))

    def __repr__(self) -> str:
        return f"Dataset(plan={self._plan.describe()!r})"

    # -- transformations (lazy) ------------------------------------------------
    def map(
        self,
        fn: Callable[[dict], dict],
        *,
        fn_args: tuple | None = None,
        fn_kwargs: dict | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        concurrency: int | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """``fn(row) -> row`` on every row (rows are dicts)."""
        _check_fn(fn, "map")
        return self._with(
            MapOp(MapRows(fn, fn_args, fn_kwargs), _remote_args(num_cpus, num_gpus, ray_remote_args))
        )

    def map_batches(
        self,
        fn: Callable | type,
        *,
        batch_size: int | str | None = "default",
        compute: ActorPoolStrategy | None = None,
        batch_format: str | None = "default",
        zero_copy_batch: bool = False,
        fn_args: tuple | None = None,
        fn_kwargs: dict | None = None,
        fn_constructor_args: tuple | None = None,
        fn_constructor_kwargs: dict | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """``fn(batch) -> batch`` on batches of `batch_size` rows, in `batch_format`.

        `fn` returns a dict of columns, a pandas DataFrame or an Arrow table. A
        callable class runs on a pool of `concurrency` actors, built once each
        with `fn_constructor_args`. Batches do not span blocks: with small
        blocks a batch can be shorter than `batch_size`.

        Example::

            >>> def pandas_transform(df):
            ...     return df.assign(total=df["a"] + df["b"])
            >>> ds.map_batches(pandas_transform, batch_size=100, batch_format="pandas")
        """
        _check_fn(fn, "map_batches")
        fmt = blk.check_batch_format(batch_format)
        size = _batch_size(batch_size)
        args = _remote_args(num_cpus, num_gpus, ray_remote_args)
        if inspect.isclass(fn):
            if isinstance(concurrency, tuple):
                concurrency = concurrency[-1]
            n = concurrency or (compute.size if isinstance(compute, ActorPoolStrategy) else None)
            if not isinstance(n, int) or n < 1:
                raise ValueError(
                    f"map_batches() with a callable class ({fn.__name__}) runs on a pool of actors: "
                    "pass concurrency=N (the number of actors)"
                )
            op = MapBatches(fn, size, fmt, fn_args, fn_kwargs)
            make = Instantiate(fn, fn_constructor_args or (), fn_constructor_kwargs or {}, op)
            return self._with(ActorMapOp(make, n, args))
        if fn_constructor_args or fn_constructor_kwargs:
            raise ValueError("fn_constructor_args/kwargs apply only when fn is a callable class")
        if isinstance(concurrency, int):
            args["_concurrency"] = concurrency
        return self._with(MapOp(MapBatches(fn, size, fmt, fn_args, fn_kwargs), args))

    def flat_map(
        self,
        fn: Callable[[dict], list[dict]],
        *,
        fn_args: tuple | None = None,
        fn_kwargs: dict | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """``fn(row) -> list of rows``: zero, one or many rows for each row."""
        _check_fn(fn, "flat_map")
        return self._with(
            MapOp(FlatMap(fn, fn_args, fn_kwargs), _remote_args(num_cpus, num_gpus, ray_remote_args))
        )

    def filter(
        self,
        fn: Callable[[dict], bool] | None = None,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Keep the rows for which ``fn(row)`` is true."""
        _check_fn(fn, "filter")
        return self._with(MapOp(Filter(fn), _remote_args(num_cpus, num_gpus, ray_remote_args)))

    def add_column(self, col: str, fn: Callable[[Any], Any], *, batch_format: str = "pandas") -> Dataset:
        """A new (or replaced) column ``col = fn(batch)`` (a pandas batch by default)."""
        _check_fn(fn, "add_column")
        return self._with(MapOp(AddColumn(col, fn, blk.check_batch_format(batch_format))))

    def drop_columns(self, cols: list[str]) -> Dataset:
        """Without the columns `cols`."""
        return self._with(MapOp(Columns(_names(cols), keep=False)))

    def select_columns(self, cols: list[str]) -> Dataset:
        """Only the columns `cols`, in that order."""
        return self._with(MapOp(Columns(_names(cols), keep=True)))

    def rename_columns(self, names: dict[str, str]) -> Dataset:
        """Columns renamed by the mapping ``{old: new}``."""
        return self._with(MapOp(Rename(names)))

    def repartition(self, num_blocks: int, *, shuffle: bool = False) -> Dataset:
        """The same rows in `num_blocks` blocks of nearly equal sizes (shuffled too with ``shuffle=True``)."""
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"repartition() takes a number of blocks >= 1, got {num_blocks!r}")
        ds = self.random_shuffle() if shuffle else self
        return ds._with(AllToAllOp(lambda blocks: shuffle_mod.repartition(blocks, num_blocks), "repartition"))

    def random_shuffle(self, *, seed: int | None = None) -> Dataset:
        """The rows in a random order (the same order for the same `seed`)."""
        return self._with(
            AllToAllOp(lambda blocks: shuffle_mod.random_shuffle(blocks, seed), "random_shuffle")
        )

    def sort(self, key: str | list[str], descending: bool = False) -> Dataset:
        """Rows sorted by the column(s) `key`."""
        keys = shuffle_mod.check_key(key)
        return self._with(AllToAllOp(lambda blocks: shuffle_mod.sort(blocks, keys, descending), "sort"))

    def groupby(self, key: str | list[str]) -> GroupedData:
        """Rows grouped by `key`: then ``.count()``, ``.sum(col)``, ``.map_groups(fn)``..."""
        return GroupedData(self, shuffle_mod.check_key(key))

    def union(self, *other: Dataset) -> Dataset:
        """The rows of this dataset, then those of each other one."""
        for o in other:
            if not isinstance(o, Dataset):
                raise TypeError(f"union() takes datasets, got {type(o).__name__}")
        return Dataset(Plan(Source(plans=[self._plan, *[o._plan for o in other]], name="union")))

    def limit(self, limit: int) -> Dataset:
        """The first `limit` rows (what comes after them is not computed)."""
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit() takes a number of rows >= 0, got {limit!r}")
        return self._with(LimitOp(limit))

    def split(self, n: int, *, equal: bool = False) -> list[MaterializedDataset]:
        """`n` datasets with (nearly) the same number of rows each, in order."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"split() takes a number of parts >= 1, got {n!r}")
        blocks = shuffle_mod.repartition(materialize(self._plan), n)
        return [MaterializedDataset([b]) for b in blocks]

    # -- consumption ------------------------------------------------------------
    def materialize(self) -> MaterializedDataset:
        """Execute now; the result keeps its blocks in the object store for reuse."""
        return MaterializedDataset(materialize(self._plan))

    def _blocks(self) -> Iterator[BlockRef]:
        return execute(self._plan)

    def iter_batches(
        self,
        *,
        batch_size: int | None = 256,
        batch_format: str | None = "default",
        drop_last: bool = False,
        prefetch_batches: int = 1,
    ) -> Iterator[Any]:
        """Batches of `batch_size` rows (across blocks), computed while you read them."""
        fmt = blk.check_batch_format(batch_format)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")

        def tables() -> Iterator[blk.Block]:
            for ref in self._blocks():
                yield get(ref.block)

        for table in blk.batches(tables(), batch_size, drop_last):
            yield blk.to_batch(table, fmt)

    def iter_rows(self) -> Iterator[dict]:
        """Every row as a dict."""
        for ref in self._blocks():
            yield from blk.iter_rows(get(ref.block))

    def take(self, limit: int = 20) -> list[dict]:
        """The first `limit` rows."""
        return list(self.limit(limit).iter_rows())

    def take_all(self, limit: int | None = None) -> list[dict]:
        """All rows; ValueError if there are more than `limit`."""
        rows = []
        for row in self.iter_rows():
            rows.append(row)
            if limit is not None and len(rows) > limit:
                raise ValueError(f"the dataset has more than {limit} rows; raise limit= or use take()")
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default") -> Any:
        """The first `batch_size` rows as one batch."""
        for batch in self.limit(batch_size).iter_batches(batch_size=batch_size, batch_format=batch_format):
            return batch
        raise ValueError("the dataset is empty: there is no batch to take")

    def show(self, limit: int = 20) -> None:
        """Print the first `limit` rows."""
        for row in self.take(limit):
            print(row)

    def count(self) -> int:
        """The number of rows."""
        return sum(ref.num_rows for ref in self._blocks())

    def schema(self) -> Schema | None:
        """The columns and their types (None for an empty dataset)."""
        for ref in self._blocks():
            if ref.num_rows:
                return Schema(get(ref.block).schema)
        return None

    def columns(self) -> list[str] | None:
        """The column names."""
        s = self.schema()
        return s.names if s is not None else None

    def num_blocks(self) -> int:
        """How many blocks the dataset has (executes it)."""
        return len(materialize(self._plan))

    def _aggregate(self, on: str | list[str] | None, how: str, ddof: int = 1) -> Any:
        blocks = [r for r in self._blocks() if r.num_rows]
        if not blocks:
            return None
        cols = [on] if isinstance(on, str) else list(on) if on else Schema(get(blocks[0].block).schema).names
        parts = get([agg.partials.remote(r.block, cols) for r in blocks])
        values = {f"{how}({c})": agg.combine(parts, c, how, ddof) for c in cols}
        return next(iter(values.values())) if isinstance(on, str) else values

    def sum(self, on: str | list[str] | None = None) -> Any:
        """The sum of column `on` (a dict ``{"sum(col)": ...}`` for several)."""
        return self._aggregate(on, "sum")

    def min(self, on: str | list[str] | None = None) -> Any:
        """The minimum of column `on`."""
        return self._aggregate(on, "min")

    def max(self, on: str | list[str] | None = None) -> Any:
        """The maximum of column `on`."""
        return self._aggregate(on, "max")

    def mean(self, on: str | list[str] | None = None) -> Any:
        """The mean of column `on`."""
        return self._aggregate(on, "mean")

    def std(self, on: str | list[str] | None = None, ddof: int = 1) -> Any:
        """The standard deviation of column `on` (``ddof=1`` as Ray and pandas)."""
        return self._aggregate(on, "std", ddof)

    def to_pandas(self, limit: int | None = None) -> Any:
        """One pandas DataFrame of all rows; ValueError if there are more than `limit`."""
        import pandas as pd

        tables = []
        rows = 0
        for ref in self._blocks():
            t = get(ref.block)
            rows += t.num_rows
            if limit is not None and rows > limit:
                raise ValueError(f"the dataset has more than {limit} rows; raise limit= or use limit()")
            tables.append(t)
        tables = [t for t in tables if t.num_columns]
        if not tables:
            return pd.DataFrame()
        return blk.concat(tables).to_pandas()

    def to_arrow_refs(self) -> list[ObjectRef]:
        """The refs of the blocks (Arrow tables)."""
        return [r.block for r in materialize(self._plan)]

    def _write(self, path: str, fmt: str, ext: str, options: dict) -> None:
        os.makedirs(path, exist_ok=True)
        write_id = uuid.uuid4().hex[:12]
        window = max(2, DataContext.get_current().max_tasks_in_flight_per_stage or 8)
        pending: list[ObjectRef] = []
        for i, ref in enumerate(self._blocks()):
            if ref.num_rows == 0:
                continue
            name = os.path.join(path, f"{write_id}_{i:06d}_000000.{ext}")
            pending.append(_write.remote(ref.block, name, fmt, options))
            if len(pending) >= window:
                done, pending = wait(pending, num_returns=1)
                get(done)
        get(pending)

    def write_csv(self, path: str, **arrow_csv_args: Any) -> None:
        """One CSV file per block in the folder `path`."""
        self._write(path, "csv", "csv", arrow_csv_args)

    def write_parquet(self, path: str, **arrow_parquet_args: Any) -> None:
        """One Parquet file per block in the folder `path`."""
        self._write(path, "parquet", "parquet", arrow_parquet_args)

    def write_json(self, path: str, **pandas_json_args: Any) -> None:
        """One JSON-lines file per block in the folder `path`."""
        self._write(path, "json", "json", pandas_json_args)


def _names(cols: Any) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    cols = list(cols)
    if not all(isinstance(c, str) for c in cols):
        raise TypeError(f"columns must be names (str), got {cols!r}")
    return cols


class MaterializedDataset(Dataset):
    """A dataset computed once, its blocks held in the object store (``materialize()``)."""

    def __init__(self, blocks: list[BlockRef]) -> None:
        super().__init__(Plan(Source(list(blocks), name="materialized")))
        self._block_refs = list(blocks)

    def num_blocks(self) -> int:
        return len(self._block_refs)

    def count(self) -> int:
        return sum(b.num_rows for b in self._block_refs)

    def __repr__(self) -> str:
        schema = self.schema()
        cols = (
            ", ".join(f"{n}: {t}" for n, t in zip(schema.names, schema.types, strict=False)) if schema else ""
        )
        return (
            f"MaterializedDataset(num_blocks={self.num_blocks()}, num_rows={self.count()}, schema={{{cols}}})"
        )


class GroupedData:
    """``ds.groupby(key)``: aggregates per group, sorted by the key (as Ray's)."""

    def __init__(self, ds: Dataset, keys: list[str]) -> None:
        self._ds, self._keys = ds, keys

    def _sorted(self) -> Dataset:
        return self._ds.sort(self._keys)

    def _agg(self, aggs: list[tuple[str | None, str]], ddof: int = 1) -> Dataset:
        return self._sorted()._with(MapOp(agg.GroupAggregate(self._keys, aggs, ddof)))

    def count(self) -> Dataset:
        """Rows per group: the key column(s) and ``count()``."""
        return self._agg([(None, "count")])

    def sum(self, on: str | list[str]) -> Dataset:
        """``sum(col)`` per group."""
        return self._agg([(c, "sum") for c in _names(on)])

    def min(self, on: str | list[str]) -> Dataset:
        """``min(col)`` per group."""
        return self._agg([(c, "min") for c in _names(on)])

    def max(self, on: str | list[str]) -> Dataset:
        """``max(col)`` per group."""
        return self._agg([(c, "max") for c in _names(on)])

    def mean(self, on: str | list[str]) -> Dataset:
        """``mean(col)`` per group."""
        return self._agg([(c, "mean") for c in _names(on)])

    def std(self, on: str | list[str], ddof: int = 1) -> Dataset:
        """``std(col)`` per group."""
        return self._agg([(c, "std") for c in _names(on)], ddof)

    def map_groups(
        self,
        fn: Callable[[Any], Any],
        *,
        batch_format: str | None = "default",
        fn_args: tuple | None = None,
        fn_kwargs: dict | None = None,
    ) -> Dataset:
        """``fn(group batch) -> batch`` for every group."""
        _check_fn(fn, "map_groups")
        fmt = blk.check_batch_format(batch_format)
        return self._sorted()._with(MapOp(agg.MapGroups(self._keys, fn, fmt, fn_args, fn_kwargs)))
