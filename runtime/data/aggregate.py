"""Aggregations: over a whole dataset (partials per block, combined by the driver) and per group."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import remote
from . import block as blk

AGGS = ("count", "sum", "min", "max", "mean", "std")


@remote
def partials(block: blk.Block, cols: list[str]) -> dict:
    """Per column: (count of non-nulls, sum, sum of squares, min, max) of one block."""
    out = {}
    for c in cols:
        col = block.column(c)
        n = col.length() - col.null_count
        if n == 0:
            out[c] = (0, 0.0, 0.0, None, None)
            continue
        mm = pc.min_max(col)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
            values = col.cast(pa.float64()) if not pa.types.is_floating(col.type) else col
            total = pc.sum(col).as_py()
            sq = pc.sum(pc.multiply(values, values)).as_py()
        else:
            total, sq = None, None
        out[c] = (n, total, sq, mm["min"].as_py(), mm["max"].as_py())
    return out


def combine(parts: list[dict], col: str, agg: str, ddof: int = 1):
    """One aggregate of one column from the partials of every block (None when no values)."""
    rows = [p[col] for p in parts if p[col][0]]
    if not rows:
        return None
    n = sum(r[0] for r in rows)
    if agg == "min":
        return min(r[3] for r in rows)
    if agg == "max":
        return max(r[4] for r in rows)
    if any(r[1] is None for r in rows):
        raise TypeError(f"{agg}({col!r}): the column is not numeric")
    total = sum(r[1] for r in rows)
    if agg == "sum":
        return total
    mean = total / n
    if agg == "mean":
        return mean
    if agg == "std":
        if n - ddof <= 0:
            return None
        sq = sum(r[2] for r in rows)
        return math.sqrt(max(sq - n * mean * mean, 0.0) / (n - ddof))
    raise ValueError(f"unknown aggregation {agg!r}")


class GroupAggregate:
    """Per-group aggregates of a block that holds whole groups (blocks come range-partitioned)."""

    def __init__(self, keys: list[str], aggs: list[tuple[str | None, str]], ddof: int = 1) -> None:
        self.keys, self.aggs, self.ddof = keys, aggs, ddof
        self.name = "aggregate(" + ", ".join(_label(c, a) for c, a in aggs) + ")"

    def __call__(self, block: blk.Block) -> blk.Block:
        if block.num_rows == 0:
            return block.slice(0, 0).select(self.keys)
        specs = []
        for col, agg in self.aggs:
            if agg == "count":
                specs.append(([], "count_all"))
            elif agg == "std":
                specs.append((col, "stddev", pc.VarianceOptions(ddof=self.ddof)))
            else:
                specs.append((col, agg))
        out = block.group_by(self.keys, use_threads=False).aggregate(specs)
        names = []
        for col, agg in self.aggs:
            names.append(_label(col, agg))
        out = out.select([*[f"{_arrow_name(c, a)}" for c, a in self.aggs], *self.keys])
        out = out.rename_columns([*names, *self.keys]).select([*self.keys, *names])
        return out.sort_by([(k, "ascending") for k in self.keys])


def _arrow_name(col: str | None, agg: str) -> str:
    if agg == "count":
        return "count_all"
    return f"{col}_{'stddev' if agg == 'std' else agg}"


def _label(col: str | None, agg: str) -> str:
    return "count()" if agg == "count" else f"{agg}({col})"


class MapGroups:
    """``fn(group batch)`` for every group of a block that holds whole groups."""

    def __init__(
        self, keys: list[str], fn: Callable, batch_format: str, fn_args: tuple, fn_kwargs: dict
    ) -> None:
        self.keys, self.fn, self.batch_format = keys, fn, batch_format
        self.fn_args, self.fn_kwargs = tuple(fn_args or ()), dict(fn_kwargs or {})
        self.name = f"map_groups({getattr(fn, '__name__', 'fn')})"

    def __call__(self, block: blk.Block) -> blk.Block:
        if block.num_rows == 0:
            return block
        block = block.sort_by([(k, "ascending") for k in self.keys])
        keys = [block.column(k).to_numpy(zero_copy_only=False) for k in self.keys]
        change = np.zeros(block.num_rows, dtype=bool)
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
        starts = [*np.flatnonzero(change).tolist(), block.num_rows]
        out = []
        for s, e in zip(starts[:-1], starts[1:], strict=False):
            group = blk.to_batch(block.slice(s, e - s), self.batch_format)
            out.append(blk.to_block(self.fn(group, *self.fn_args, **self.fn_kwargs)))
        return blk.concat(out)
