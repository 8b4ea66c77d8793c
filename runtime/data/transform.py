"""The per-block functions of a plan: ``map``, ``map_batches``, ``filter``... as picklable callables.

Each takes a block (an Arrow table) and returns a block; a stage runs a chain
of them in one task (or one actor call), so consecutive maps cost one pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from . import block as blk


class MapBatches:
    """``fn(batch)`` on slices of `batch_size` rows of the block, in `batch_format`."""

    def __init__(
        self,
        fn: Callable,
        batch_size: int | None,
        batch_format: str,
        fn_args: tuple = (),
        fn_kwargs: dict | None = None,
    ) -> None:
        self.fn = fn
        self.batch_size = batch_size
        self.batch_format = batch_format
        self.fn_args = tuple(fn_args or ())
        self.fn_kwargs = dict(fn_kwargs or {})
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, block: blk.Block) -> blk.Block:
        out = []
        for piece in blk.batches([block], self.batch_size):
            result = self.fn(blk.to_batch(piece, self.batch_format), *self.fn_args, **self.fn_kwargs)
            if inspect.isgenerator(result):
                out.extend(blk.to_block(r) for r in result)
            else:
                out.append(blk.to_block(result))
        return blk.concat(out) if out else block.slice(0, 0)


class Instantiate:
    """``map_batches`` with a callable class: built once per actor, then called like a function."""

    def __init__(self, cls: type, args: tuple, kwargs: dict, op: MapBatches) -> None:
        self.cls, self.args, self.kwargs, self.op = cls, tuple(args or ()), dict(kwargs or {}), op

    def build(self) -> MapBatches:
        instance = self.cls(*self.args, **self.kwargs)
        op = self.op
        return MapBatches(instance, op.batch_size, op.batch_format, op.fn_args, op.fn_kwargs)


class MapRows:
    """``fn(row) -> row``."""

    def __init__(self, fn: Callable, fn_args: tuple = (), fn_kwargs: dict | None = None) -> None:
        self.fn, self.fn_args, self.fn_kwargs = fn, tuple(fn_args or ()), dict(fn_kwargs or {})
        self.name = getattr(fn, "__name__", "map")

    def __call__(self, block: blk.Block) -> blk.Block:
        rows: list[dict] = []
        for row in blk.iter_rows(block):
            rows.extend(self.rows_of(self.fn(row, *self.fn_args, **self.fn_kwargs)))
        return blk.from_rows(rows) if rows else block.slice(0, 0)

    def rows_of(self, out: Any) -> list[dict]:
        """The rows one call of the function made."""
        if not isinstance(out, dict):
            raise TypeError(
                f"the function given to map() must return a dict (a row), it returned "
                f"{type(out).__name__}; use flat_map() to return several rows"
            )
        return [out]


class FlatMap(MapRows):
    """``fn(row) -> list of rows``."""

    def rows_of(self, out: Any) -> list[dict]:
        rows = list(out)
        for r in rows:
            if not isinstance(r, dict):
                raise TypeError(
                    f"the function given to flat_map() must return a list of dicts, got an "
                    f"item of type {type(r).__name__}"
                )
        return rows


class Filter(MapRows):
    """Keep the rows where ``fn(row)`` is true."""

    def __call__(self, block: blk.Block) -> blk.Block:
        keep = [bool(self.fn(row, *self.fn_args, **self.fn_kwargs)) for row in blk.iter_rows(block)]
        return block.filter(pa.array(keep, type=pa.bool_())) if keep else block


class AddColumn:
    """A new column ``col = fn(batch)``."""

    def __init__(self, col: str, fn: Callable, batch_format: str) -> None:
        self.col, self.fn, self.batch_format = col, fn, batch_format
        self.name = f"add_column({col})"

    def __call__(self, block: blk.Block) -> blk.Block:
        values = blk._column(self.fn(blk.to_batch(block, self.batch_format)))
        if len(values) != block.num_rows:
            raise ValueError(
                f"add_column({self.col!r}): the function returned {len(values)} values for a "
                f"batch of {block.num_rows} rows"
            )
        if self.col in block.column_names:
            return block.set_column(block.column_names.index(self.col), self.col, values)
        return block.append_column(self.col, values)


class Columns:
    """``select_columns`` (keep) or ``drop_columns`` (drop)."""

    def __init__(self, cols: list[str], keep: bool) -> None:
        self.cols, self.keep = list(cols), keep
        self.name = "select_columns" if keep else "drop_columns"

    def __call__(self, block: blk.Block) -> blk.Block:
        if not block.num_columns:
            return block
        missing = [c for c in self.cols if c not in block.column_names]
        if missing:
            raise KeyError(f"{self.name}: no column(s) {missing}; the columns are {block.column_names}")
        return block.select(self.cols) if self.keep else block.drop_columns(self.cols)


class Rename:
    """``rename_columns({old: new})``."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = dict(names)
        self.name = "rename_columns"

    def __call__(self, block: blk.Block) -> blk.Block:
        return block.rename_columns([self.names.get(c, c) for c in block.column_names])


class Slice:
    """The first `n` rows."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.name = "limit"

    def __call__(self, block: blk.Block) -> blk.Block:
        return block.slice(0, self.n)


def run_chain(chain: list, source: Any) -> blk.Block:
    """Read (if `source` is a read task), then apply the chain."""
    block = source() if callable(source) and not isinstance(source, pa.Table) else source
    for fn in chain:
        block = fn(block)
    return block


def describe(fn: Any) -> str:
    return getattr(fn, "name", type(fn).__name__)
