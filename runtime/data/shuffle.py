"""All-to-all steps: repartition, random_shuffle, sort (and so groupby), split.

::

    repartition:  row counts ─▶ output j = slices of the inputs that cover its rows ─▶ 1 task each
    shuffle/sort: map: each block cut into n parts (random, or by key ranges sampled first)
                  reduce: output j = concat of part j of every block (+ shuffled / sorted)

The driver only decides; the data moves between tasks through the object store.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

from .. import get, remote
from . import block as blk
from .executor import BlockRef


@remote(num_returns=2)
def _gather(spec: list, *blocks: blk.Block) -> tuple:
    out = blk.concat([blocks[i].slice(offset, length) for i, offset, length in spec])
    return out, blk.meta(out)


def repartition(blocks: list[BlockRef], num_blocks: int) -> list[BlockRef]:
    """`num_blocks` blocks of (nearly) equal row counts, in the same row order."""
    counts = [b.num_rows for b in blocks]
    total = sum(counts)
    out: list[BlockRef] = []
    starts = np.cumsum([0, *counts])
    for j in range(num_blocks):
        lo, hi = total * j // num_blocks, total * (j + 1) // num_blocks
        spec, refs = [], []
        for i, b in enumerate(blocks):
            s, e = max(lo, starts[i]), min(hi, starts[i + 1])
            if e > s:
                spec.append((len(refs), int(s - starts[i]), int(e - s)))
                refs.append(b.block)
        if not refs:  # an empty output block, with the columns of the input
            if blocks:
                spec, refs = [(0, 0, 0)], [blocks[0].block]
            else:
                continue
        b, m = _gather.remote(spec, *refs)
        out.append(BlockRef(b, m))
    return out


@remote
def _split_random(block: blk.Block, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    dest = rng.integers(0, n, block.num_rows)
    return [block.filter(pa.array(dest == j)) for j in range(n)]


@remote
def _split_range(block: blk.Block, key: list[str], bounds: list, descending: bool) -> list:
    parts = _range_parts(block, key, bounds)
    return parts[::-1] if descending else parts


def _range_parts(block: blk.Block, key: list[str], bounds: list) -> list[blk.Block]:
    if not bounds:
        return [block]
    k = block.column(key[0]).to_numpy(zero_copy_only=False)
    where = np.searchsorted(
        np.asarray(bounds, dtype=k.dtype if k.dtype != object else object), k, side="right"
    )
    return [block.filter(pa.array(where == j)) for j in range(len(bounds) + 1)]


@remote(num_returns=2)
def _merge(how: str, key: list[str], descending: bool, seed: int, *parts: list) -> tuple:
    j = parts[0]
    pieces = [p[j] for p in parts[1:]]
    out = blk.concat(pieces)
    if how == "shuffle" and out.num_rows:
        out = out.take(pa.array(np.random.default_rng(seed).permutation(out.num_rows)))
    elif how == "sort" and out.num_rows:
        order = "descending" if descending else "ascending"
        out = out.sort_by([(k, order) for k in key])
    return out, blk.meta(out)


def _reduce(splits: list, n: int, how: str, key: list[str], descending: bool, seed: int) -> list[BlockRef]:
    out = []
    for j in range(n):
        b, m = _merge.remote(how, key, descending, seed + j, j, *splits)
        out.append(BlockRef(b, m))
    return out


def random_shuffle(blocks: list[BlockRef], seed: int | None) -> list[BlockRef]:
    """The rows in a random order, as many blocks as before."""
    n = max(1, len(blocks))
    base = random.randrange(2**31) if seed is None else seed
    splits = [_split_random.remote(b.block, n, base + 7919 * i) for i, b in enumerate(blocks)]
    return _reduce(splits, n, "shuffle", [], False, base)


@remote
def _sample(block: blk.Block, key: str, k: int) -> list:
    if block.num_rows == 0:
        return []
    idx = np.random.default_rng(0).choice(block.num_rows, min(k, block.num_rows), replace=False)
    return block.column(key).take(pa.array(idx)).to_pylist()


def sort(blocks: list[BlockRef], key: list[str], descending: bool) -> list[BlockRef]:
    """Sorted by `key` (the first column decides the ranges); rows of one key end in one block."""
    blocks = [b for b in blocks if b.num_rows]
    if not blocks:
        return []
    n = len(blocks)
    samples = sorted(
        x for s in get([_sample.remote(b.block, key[0], 64) for b in blocks]) for x in s if x is not None
    )
    bounds = []
    if n > 1 and samples:
        bounds = sorted({samples[len(samples) * j // n] for j in range(1, n)})
    splits = [_split_range.remote(b.block, key, bounds, descending) for b in blocks]
    return _reduce(splits, len(bounds) + 1, "sort", key, descending, 0)


def check_key(key: str | list[str]) -> list[str]:
    keys = [key] if isinstance(key, str) else list(key)
    if not keys or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"key must be a column name or a list of column names, got {key!r}")
    return keys
