"""Where datasets come from: in-memory data (put as blocks) and files (read by tasks).

A file read is a list of read tasks, small picklable callables that return a
block; big text files (CSV, JSON lines, text) are cut at line boundaries into
byte ranges, Parquet files into groups of row groups, so no block is much
larger than ``DataContext.target_max_block_size``.
"""

from __future__ import annotations

import glob
import io
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from . import block as blk
from .context import DataContext
from .executor import Source, put_block


def _blocks_of(n_rows: int, override: int | None) -> int:
    """Blocks for in-memory rows: `override`, else two per core here, more for many rows."""
    if override is not None:
        if not isinstance(override, int) or override < 1:
            raise ValueError(f"override_num_blocks must be an int >= 1, got {override!r}")
        return override
    default = min(200, max(2 * (os.cpu_count() or 1), n_rows // 1_000_000))
    return max(1, min(default, n_rows))


class RangeRead:
    def __init__(self, start: int, end: int, column: str) -> None:
        self.start, self.end, self.column = start, end, column

    def __call__(self) -> blk.Block:
        return pa.table({self.column: np.arange(self.start, self.end, dtype=np.int64)})


def range_source(n: int, override_num_blocks: int | None, column: str = "id") -> Source:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"range() takes a number of rows >= 0, got {n!r}")
    k = _blocks_of(n, override_num_blocks)
    reads = [RangeRead(n * i // k, n * (i + 1) // k, column) for i in range(k)]
    return Source(reads, name="range")


def items_source(items: list, override_num_blocks: int | None) -> Source:
    items = list(items)
    dicts = sum(isinstance(x, dict) for x in items)
    if 0 < dicts < len(items):
        raise TypeError("items must all be dicts, or none of them (then they become the column 'item')")
    k = _blocks_of(len(items), override_num_blocks)
    blocks = [
        put_block(blk.from_rows(items[len(items) * i // k : len(items) * (i + 1) // k])) for i in range(k)
    ]
    return Source(blocks, name="from_items")


def tables_source(tables: Iterable[pa.Table], name: str) -> Source:
    return Source([put_block(t) for t in tables], name=name)


# -- files ----------------------------------------------------------------------


def expand_paths(paths: str | list[str], extensions: tuple[str, ...] | None) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p).removeprefix("local://")
        if "://" in p:
            raise ValueError(f"only local paths are supported (got {p!r}); copy the data to a shared disk")
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
                for f in sorted(files):
                    if f.startswith((".", "_")):
                        continue
                    if extensions and not f.lower().endswith(extensions):
                        continue
                    out.append(os.path.join(root, f))
        elif any(c in p for c in "*?["):
            out.extend(sorted(glob.glob(p)))
        elif os.path.exists(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p!r}")
    if not out:
        raise FileNotFoundError(f"no files to read in {paths!r}")
    return [os.path.abspath(p) for p in out]


def _ranges(path: str, target: int) -> list[tuple[int, int]]:
    size = os.path.getsize(path)
    n = max(1, -(-size // target))
    return [(size * i // n, size * (i + 1) // n) for i in range(n)]


def _read_lines(path: str, start: int, end: int) -> bytes:
    """The lines that start in [start, end) (a line starts at 0 or after a newline)."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()
        pos = f.tell()
        if pos >= end:
            return b""
        data = f.read(end - pos)
        if data and not data.endswith(b"\n"):
            data += f.readline()
        return data


class CsvRead:
    def __init__(self, path: str, start: int, end: int, options: dict) -> None:
        self.path, self.start, self.end, self.options = path, start, end, options

    def __call__(self) -> blk.Block:
        from pyarrow import csv

        if self.end < 0:  # the whole file, with the user's own read options
            return csv.read_csv(self.path, **self.options)
        data = _read_lines(self.path, self.start, self.end)
        if self.start > 0:
            with open(self.path, "rb") as f:
                data = f.readline() + data
        return csv.read_csv(io.BytesIO(data), **self.options)


def csv_source(paths: Any, options: dict) -> Source:
    target = DataContext.get_current().target_max_block_size
    reads = []
    for path in expand_paths(paths, None):
        if "read_options" in options:  # skip_rows, column names...: read the file whole
            reads.append(CsvRead(path, 0, -1, options))
        else:
            reads.extend(CsvRead(path, s, e, options) for s, e in _ranges(path, target))
    return Source(reads, name="read_csv")


class JsonRead:
    def __init__(self, path: str, start: int, end: int, options: dict) -> None:
        self.path, self.start, self.end, self.options = path, start, end, options

    def __call__(self) -> blk.Block:
        from pyarrow import json as pajson

        if self.end < 0:  # a JSON document (an array of objects, or one object)
            with open(self.path, "rb") as f:
                doc = json.load(f)
            return blk.from_rows(doc if isinstance(doc, list) else [doc])
        data = _read_lines(self.path, self.start, self.end)
        if not data.strip():
            return pa.table({})
        return pajson.read_json(io.BytesIO(data), **self.options)


def json_source(paths: Any, lines: bool | None, options: dict) -> Source:
    target = DataContext.get_current().target_max_block_size
    reads = []
    for path in expand_paths(paths, None):
        is_lines = lines
        if is_lines is None:
            with open(path, "rb") as f:
                head = f.read(4096).lstrip()
            is_lines = not head.startswith(b"[")
        if is_lines:
            reads.extend(JsonRead(path, s, e, options) for s, e in _ranges(path, target))
        else:
            reads.append(JsonRead(path, 0, -1, options))
    return Source(reads, name="read_json")


class TextRead:
    def __init__(self, path: str, start: int, end: int, drop_empty_lines: bool, encoding: str) -> None:
        self.path, self.start, self.end = path, start, end
        self.drop_empty_lines, self.encoding = drop_empty_lines, encoding

    def __call__(self) -> blk.Block:
        lines = _read_lines(self.path, self.start, self.end).decode(self.encoding).splitlines()
        if self.drop_empty_lines:
            lines = [x for x in lines if x.strip()]
        return pa.table({"text": pa.array(lines, type=pa.string())})


def text_source(paths: Any, drop_empty_lines: bool, encoding: str) -> Source:
    target = DataContext.get_current().target_max_block_size
    reads = [
        TextRead(path, s, e, drop_empty_lines, encoding)
        for path in expand_paths(paths, None)
        for s, e in _ranges(path, target)
    ]
    return Source(reads, name="read_text")


class ParquetRead:
    def __init__(self, path: str, row_groups: list[int] | None, columns: list[str] | None) -> None:
        self.path, self.row_groups, self.columns = path, row_groups, columns

    def __call__(self) -> blk.Block:
        import pyarrow.parquet as pq

        f = pq.ParquetFile(self.path)
        if self.row_groups is None:
            return f.read(columns=self.columns)
        return f.read_row_groups(self.row_groups, columns=self.columns)


def parquet_source(paths: Any, columns: list[str] | None) -> Source:
    import pyarrow.parquet as pq

    target = DataContext.get_current().target_max_block_size
    reads = []
    for path in expand_paths(paths, (".parquet", ".pq", ".parq")):
        md = pq.ParquetFile(path).metadata
        if md.num_row_groups <= 1:
            reads.append(ParquetRead(path, None, columns))
            continue
        group: list[int] = []
        size = 0
        for i in range(md.num_row_groups):
            group.append(i)
            size += md.row_group(i).total_byte_size
            if size >= target:
                reads.append(ParquetRead(path, group, columns))
                group, size = [], 0
        if group:
            reads.append(ParquetRead(path, group, columns))
    return Source(reads, name="read_parquet")
