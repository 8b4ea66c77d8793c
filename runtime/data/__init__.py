"""Ray Data on our runtime: ``import runtime as ray`` then ``ray.data.read_csv(...)``.

Blocks are Arrow tables in the object store; transformations are lazy, and
consuming a dataset streams it block by block with bounded memory. Needs the
``data`` extra (``pip install "nbcluster[data]"``: pandas and pyarrow).

Example::

    >>> import runtime as ray
    >>> ray.data.range(10000).repartition(10).take(5)
    [{'id': 0}, {'id': 1}, {'id': 2}, {'id': 3}, {'id': 4}]
"""

from __future__ import annotations

try:
    import pyarrow as pa
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError('runtime.data needs pyarrow and pandas: pip install "nbcluster[data]"') from e

from typing import Any

import numpy as np

from . import block as _blk
from . import datasource as _src
from .context import DataContext
from .dataset import ActorPoolStrategy, Dataset, GroupedData, MaterializedDataset, Schema
from .executor import Plan as _Plan

__all__ = [
    "ActorPoolStrategy",
    "DataContext",
    "Dataset",
    "GroupedData",
    "MaterializedDataset",
    "Schema",
    "from_arrow",
    "from_items",
    "from_numpy",
    "from_pandas",
    "range",
    "read_csv",
    "read_json",
    "read_parquet",
    "read_text",
]


def _ds(source: Any) -> Dataset:
    return Dataset(_Plan(source))


def _override(override_num_blocks: int | None, parallelism: int) -> int | None:
    if override_num_blocks is not None:
        return override_num_blocks
    return parallelism if parallelism and parallelism > 0 else None


def range(n: int, *, override_num_blocks: int | None = None, parallelism: int = -1) -> Dataset:  # noqa: A001
    """Rows ``{"id": 0}`` ... ``{"id": n - 1}``.

    Example::

        >>> ray.data.range(3).take_all()
        [{'id': 0}, {'id': 1}, {'id': 2}]
    """
    return _ds(_src.range_source(n, _override(override_num_blocks, parallelism)))


def from_items(items: list, *, override_num_blocks: int | None = None, parallelism: int = -1) -> Dataset:
    """A dataset of `items`: dicts become rows; other values the column ``"item"``.

    Example::

        >>> ray.data.from_items([{"a": 1}, {"a": 2}]).sum("a")
        3
    """
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"from_items() takes a list, got {type(items).__name__}")
    return _ds(_src.items_source(items, _override(override_num_blocks, parallelism)))


def from_pandas(dfs: Any) -> MaterializedDataset:
    """A dataset of a pandas DataFrame (or a list of them: one block each).

    Example::

        >>> ray.data.from_pandas(pd.DataFrame({"a": [1, 2]})).count()
        2
    """
    dfs = dfs if isinstance(dfs, list) else [dfs]
    for df in dfs:
        if type(df).__name__ != "DataFrame":
            raise TypeError(f"from_pandas() takes DataFrames, got {type(df).__name__}")
    return MaterializedDataset(_src.tables_source([_blk.to_block(df) for df in dfs], "from_pandas").items)


def from_numpy(ndarrays: Any) -> MaterializedDataset:
    """A dataset with the column ``"data"`` (one row per first-axis entry; a list: one block each).

    Example::

        >>> ray.data.from_numpy(np.zeros((4, 2))).take(1)[0]["data"].shape
        (2,)
    """
    arrays = ndarrays if isinstance(ndarrays, list) else [ndarrays]
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"from_numpy() takes numpy arrays, got {type(a).__name__}")
    return MaterializedDataset(
        _src.tables_source([_blk.to_block({"data": a}) for a in arrays], "from_numpy").items
    )


def from_arrow(tables: Any) -> MaterializedDataset:
    """A dataset of a pyarrow Table (or a list of them: one block each)."""
    tables = tables if isinstance(tables, list) else [tables]
    for t in tables:
        if not isinstance(t, pa.Table):
            raise TypeError(f"from_arrow() takes pyarrow Tables, got {type(t).__name__}")
    return MaterializedDataset(_src.tables_source(tables, "from_arrow").items)


def read_csv(
    paths: str | list[str],
    *,
    parse_options: Any = None,
    read_options: Any = None,
    convert_options: Any = None,
    **arrow_csv_args: Any,
) -> Dataset:
    """Rows of CSV files (a file, a folder, a glob or a list); big files are read in several blocks.

    Example::

        >>> ray.data.read_csv("my_data_guest.csv").repartition(10).count()
    """
    options = dict(arrow_csv_args)
    for name, value in (
        ("parse_options", parse_options),
        ("read_options", read_options),
        ("convert_options", convert_options),
    ):
        if value is not None:
            options[name] = value
    return _ds(_src.csv_source(paths, options))


def read_json(paths: str | list[str], *, lines: bool | None = None, **arrow_json_args: Any) -> Dataset:
    """Rows of JSON-lines files, or of files holding a JSON array of objects (detected)."""
    return _ds(_src.json_source(paths, lines, arrow_json_args))


def read_parquet(paths: str | list[str], *, columns: list[str] | None = None) -> Dataset:
    """Rows of Parquet files (a file, a folder of ``*.parquet`` or a list)."""
    return _ds(_src.parquet_source(paths, columns))


def read_text(paths: str | list[str], *, encoding: str = "utf-8", drop_empty_lines: bool = True) -> Dataset:
    """One row ``{"text": line}`` per line of text files."""
    return _ds(_src.text_source(paths, drop_empty_lines, encoding))
