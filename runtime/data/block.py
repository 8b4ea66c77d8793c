"""Blocks: Arrow tables, and their conversions to rows and to the batch formats of Ray Data.

Pure functions, no I/O: they run in tasks and in the driver alike.

    batch formats  "default" / "numpy": dict[str, numpy.ndarray]
                   "pandas": pandas.DataFrame        "pyarrow": pyarrow.Table
    rows           dict[str, Any]  (``iter_rows``, ``map``, ``take``)

Columns of arrays with more than one dimension (images, embeddings) are
Arrow fixed-shape tensors, so they come back as numpy arrays of that shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

BATCH_FORMATS = ("default", "numpy", "pandas", "pyarrow")

Block = pa.Table


def check_batch_format(batch_format: str | None) -> str:
    if batch_format is None:
        return "pyarrow"
    if batch_format not in BATCH_FORMATS:
        raise ValueError(
            f"batch_format must be one of {', '.join(repr(f) for f in BATCH_FORMATS)}, got {batch_format!r}"
        )
    return batch_format


def _column(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values, np.ndarray):
        if values.ndim > 1:
            return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))
        return pa.array(values)
    if hasattr(values, "to_numpy") and hasattr(values, "dtype"):  # a pandas Series
        return pa.Array.from_pandas(values)
    values = list(values)
    if values and isinstance(values[0], np.ndarray) and values[0].ndim >= 1:
        shapes = {v.shape for v in values}
        if len(shapes) == 1:
            return pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack(values))
    return pa.array(values)


def to_block(batch: Any) -> Block:
    """A block from what a user function returned: Table, DataFrame, or dict of columns."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        if not batch:
            return pa.table({})
        return pa.table({str(k): _column(v) for k, v in batch.items()})
    if type(batch).__name__ == "DataFrame" and hasattr(batch, "columns"):
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise TypeError(
        "a batch function must return a dict of columns (numpy arrays or lists), a pandas "
        f"DataFrame or a pyarrow Table; it returned {type(batch).__name__}"
    )


def from_rows(rows: list) -> Block:
    """A block from rows: dicts become columns; anything else is the column "item"."""
    if not rows:
        return pa.table({})
    if all(isinstance(r, dict) for r in rows):
        names: dict[str, None] = {}
        for r in rows:
            for k in r:
                names.setdefault(k, None)
        return pa.table({str(k): _column([r.get(k) for r in rows]) for k in names})
    if any(isinstance(r, dict) for r in rows):
        raise TypeError("rows must all be dicts, or none of them (then they become the column 'item')")
    return pa.table({"item": _column(rows)})


def _numpy(col: pa.ChunkedArray) -> np.ndarray:
    if isinstance(col.type, pa.FixedShapeTensorType):
        return col.combine_chunks().to_numpy_ndarray()
    return col.to_numpy(zero_copy_only=False)


def to_batch(block: Block, batch_format: str) -> Any:
    """The block in a batch format (see the module's docstring)."""
    if batch_format in ("default", "numpy"):
        return {name: _numpy(block.column(name)) for name in block.column_names}
    if batch_format == "pandas":
        return block.to_pandas()
    return block


def iter_rows(block: Block) -> Iterator[dict]:
    """The rows of a block as dicts (tensor columns as numpy arrays)."""
    tensors = [
        n for n in block.column_names if isinstance(block.schema.field(n).type, pa.FixedShapeTensorType)
    ]
    if not tensors:
        yield from block.to_pylist()
        return
    arrays = {n: _numpy(block.column(n)) for n in tensors}
    plain = block.drop_columns(tensors).to_pylist() if len(tensors) < block.num_columns else None
    for i in range(block.num_rows):
        row = dict(plain[i]) if plain is not None else {}
        for n in tensors:
            row[n] = arrays[n][i]
        yield {n: row[n] for n in block.column_names}


def concat(blocks: Iterable[Block]) -> Block:
    blocks = [b for b in blocks if b.num_columns]
    if not blocks:
        return pa.table({})
    if len(blocks) == 1:
        return blocks[0]
    try:  # "permissive": string and large_string (pandas' and Arrow's) meet as large_string
        return pa.concat_tables(blocks, promote_options="permissive")
    except TypeError:  # pyarrow < 14
        return pa.concat_tables(blocks, promote=True)


def meta(block: Block) -> dict:
    """What the driver keeps about a block without fetching it."""
    return {"num_rows": block.num_rows, "size_bytes": block.nbytes}


def batches(blocks: Iterable[Block], batch_size: int | None, drop_last: bool = False) -> Iterator[Block]:
    """Re-slice a stream of blocks into blocks of exactly `batch_size` rows (the last may be short)."""
    if batch_size is None:
        for b in blocks:
            if b.num_rows:
                yield b
        return
    carry: list[Block] = []
    have = 0
    for b in blocks:
        offset = 0
        while offset < b.num_rows:
            take = min(batch_size - have, b.num_rows - offset)
            carry.append(b.slice(offset, take))
            have += take
            offset += take
            if have == batch_size:
                yield concat(carry)
                carry, have = [], 0
    if have and not drop_last:
        yield concat(carry)
