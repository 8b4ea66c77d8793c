"""Streaming execution of a dataset's plan.

::

    source (read tasks, or blocks already in the object store)
      │  one task per block: read + the fused chain of map/filter/... (TaskStage)
      ▼        ≤ `window` tasks in flight; the oldest is waited for before the next is sent
    ActorStage: a pool of actors (map_batches with a callable class); the map
      │  steps just before and after it run inside the same actor call
      ▼
    AllToAllStage (repartition, shuffle, sort, groupby): waits for all its input blocks
      ▼
    consumer (iter_batches, take, write_*, materialize) reads blocks in order and lets them go

Blocks live in the object store (zero-copy reads on a node, spilled to disk
past its limit). What is alive at once is bounded by the stages' windows, not
by the size of the dataset: a stream larger than the store completes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import ObjectRef, cluster_resources, get, kill, method, put, remote, wait
from . import block as blk
from .context import DataContext
from .progress import StageProgress
from .transform import Instantiate, describe, run_chain


class BlockRef:
    """A block in the object store and its metadata (a ref until read, then a dict)."""

    __slots__ = ("block", "_meta")

    def __init__(self, block: ObjectRef, meta: ObjectRef | dict) -> None:
        self.block = block
        self._meta = meta

    def meta(self) -> dict:
        if not isinstance(self._meta, dict):
            self._meta = get(self._meta)
        return self._meta

    @property
    def num_rows(self) -> int:
        return self.meta()["num_rows"]


def put_block(table: blk.Block) -> BlockRef:
    return BlockRef(put(table), blk.meta(table))


@remote(num_returns=2)
def _transform(chain: list, source: Any) -> tuple:
    block = run_chain(chain, source)
    return block, blk.meta(block)


class _MapWorker:
    """An actor of a map_batches pool: builds the user's class once, then maps blocks."""

    def __init__(self, pre: list, make: Instantiate, post: list) -> None:
        self.chain = [*pre, make.build(), *post]

    @method(num_returns=2)
    def apply(self, source: Any) -> tuple:
        block = run_chain(self.chain, source)
        return block, blk.meta(block)


# -- the plan -------------------------------------------------------------------


@dataclass
class MapOp:
    """A per-block function; consecutive ones with the same task options fuse into one task."""

    fn: Callable
    remote_args: dict = field(default_factory=dict)


@dataclass
class ActorMapOp:
    """``map_batches`` with a callable class, on a pool of `size` actors."""

    make: Instantiate
    size: int
    remote_args: dict = field(default_factory=dict)


@dataclass
class AllToAllOp:
    """A function of all the blocks at once (blocks -> blocks), run by the driver with tasks."""

    fn: Callable[[list[BlockRef]], list[BlockRef]]
    name: str


@dataclass
class LimitOp:
    """Stop the stream after `n` rows."""

    n: int


@dataclass
class Source:
    """Where a plan starts: read tasks, blocks, or other plans (`union`)."""

    items: list = field(default_factory=list)  # read tasks (callables) or BlockRefs
    plans: list = field(default_factory=list)  # for union: several plans in a row
    name: str = "read"

    def count_hint(self) -> int | None:
        if self.plans:
            return None
        return len(self.items)


@dataclass
class Plan:
    source: Source
    ops: list = field(default_factory=list)

    def with_op(self, op: Any) -> Plan:
        return Plan(self.source, [*self.ops, op])

    def describe(self) -> str:
        parts = [self.source.name]
        for op in self.ops:
            if isinstance(op, MapOp):
                parts.append(describe(op.fn))
            elif isinstance(op, ActorMapOp):
                parts.append(f"{describe(op.make.op)}[actors={op.size}]")
            elif isinstance(op, AllToAllOp):
                parts.append(op.name)
            elif isinstance(op, LimitOp):
                parts.append(f"limit({op.n})")
        return " -> ".join(parts)


# -- execution ------------------------------------------------------------------


def _window() -> int:
    ctx = DataContext.get_current()
    if ctx.max_tasks_in_flight_per_stage:
        return max(1, ctx.max_tasks_in_flight_per_stage)
    return max(2, 2 * int(cluster_resources().get("CPU", 1)))


def execute(plan: Plan) -> Iterator[BlockRef]:
    """The plan's output blocks, in order, computed as they are consumed."""
    window = _window()
    stream, count = _source_stream(plan.source)
    ops = list(plan.ops)
    source_name = plan.source.name
    has_reads = any(not isinstance(x, BlockRef) for x in plan.source.items)
    if has_reads and not (ops and isinstance(ops[0], (MapOp, ActorMapOp))):
        stream = _task_stage(stream, [], {}, window, count, source_name)
    prefix = source_name if has_reads else ""
    i = 0
    while i < len(ops):
        op = ops[i]
        if isinstance(op, ActorMapOp):
            post, i = _take_maps(ops, i + 1, {})
            stream = _actor_stage(stream, [], op, post, window, count, prefix)
        elif isinstance(op, MapOp):
            chain, j = _take_maps(ops, i, op.remote_args)
            if j < len(ops) and isinstance(ops[j], ActorMapOp) and not op.remote_args:
                post, i = _take_maps(ops, j + 1, {})
                stream = _actor_stage(stream, chain, ops[j], post, window, count, prefix)
            else:
                stream = _task_stage(stream, chain, op.remote_args, window, count, prefix)
                i = j
        elif isinstance(op, AllToAllOp):
            stream, count = _all_to_all(stream, op)
            i += 1
        elif isinstance(op, LimitOp):
            stream, count = _limit(stream, op.n), None
            i += 1
        else:  # pragma: no cover - the Dataset only builds the ops above
            raise TypeError(f"unknown plan step {op!r}")
        prefix = ""
    return stream


def _take_maps(ops: list, i: int, remote_args: dict) -> tuple[list, int]:
    """The functions of the MapOps from `i` on that share `remote_args` (they fuse)."""
    chain = []
    while i < len(ops) and isinstance(ops[i], MapOp) and ops[i].remote_args == remote_args:
        chain.append(ops[i].fn)
        i += 1
    return chain, i


def _source_stream(source: Source) -> tuple[Iterator, int | None]:
    if source.plans:

        def chained() -> Iterator[BlockRef]:
            for p in source.plans:
                yield from execute(p)

        return chained(), None
    return iter(source.items), len(source.items)


def _all_to_all(stream: Iterator[BlockRef], op: AllToAllOp) -> tuple[Iterator[BlockRef], int]:
    blocks = list(stream)
    progress = StageProgress(op.name, None)
    try:
        out = op.fn(blocks)
        wait([r.block for r in out], num_returns=len(out)) if out else None
    except BaseException as e:
        progress.close(type(e).__name__)
        raise
    progress.step(len(out))
    progress.close()
    return iter(out), len(out)


def _task_stage(
    inputs: Iterable, chain: list, remote_args: dict, window: int, count: int | None, prefix: str = ""
) -> Iterator[BlockRef]:
    names = ([prefix] if prefix else []) + [describe(f) for f in chain]
    progress = StageProgress(" -> ".join(names) or "read", count)
    chain_ref = put(chain)
    remote_args = dict(remote_args)
    window = remote_args.pop("_concurrency", None) or window  # map_batches(fn, concurrency=N)
    fn = _transform.options(**remote_args) if remote_args else _transform
    inflight: deque[BlockRef] = deque()
    try:
        for src in inputs:
            b, m = fn.remote(chain_ref, src.block if isinstance(src, BlockRef) else src)
            inflight.append(BlockRef(b, m))
            while len(inflight) >= window:
                yield _finish(inflight.popleft(), progress)
        while inflight:
            yield _finish(inflight.popleft(), progress)
    except GeneratorExit:  # the consumer stopped early (take, limit)
        raise
    except BaseException as e:
        progress.close(type(e).__name__)
        raise
    finally:
        progress.close()  # no-op after an error


def _finish(ref: BlockRef, progress: StageProgress) -> BlockRef:
    ref.meta()  # waits for the task; raises its error here
    progress.step()
    return ref


def _actor_stage(
    inputs: Iterable,
    pre: list,
    op: ActorMapOp,
    post: list,
    window: int,
    count: int | None,
    prefix: str = "",
) -> Iterator[BlockRef]:
    names = (
        ([prefix] if prefix else [])
        + [describe(f) for f in pre]
        + [f"{describe(op.make.op)}[actors={op.size}]"]
        + [describe(f) for f in post]
    )
    progress = StageProgress(" -> ".join(names), count)
    args = {"num_cpus": 1, **op.remote_args}
    cpus = cluster_resources().get("CPU", 1)
    if "num_cpus" not in op.remote_args and op.size > cpus:  # more actors than CPUs: they share
        args["num_cpus"] = cpus / op.size
    worker = remote(_MapWorker).options(**args)
    actors = [worker.remote(pre, op.make, post) for _ in range(op.size)]
    load = [0] * len(actors)
    inflight: deque[tuple[BlockRef, int]] = deque()
    limit = max(2 * len(actors), 2)
    try:
        for src in inputs:
            while len(inflight) >= limit:
                ref, a = inflight.popleft()
                load[a] -= 1
                yield _finish(ref, progress)
            a = min(range(len(actors)), key=load.__getitem__)
            b, m = actors[a].apply.remote(src.block if isinstance(src, BlockRef) else src)
            load[a] += 1
            inflight.append((BlockRef(b, m), a))
        while inflight:
            ref, a = inflight.popleft()
            yield _finish(ref, progress)
    except GeneratorExit:  # the consumer stopped early (take, limit)
        raise
    except BaseException as e:
        progress.close(type(e).__name__)
        raise
    finally:
        for a in actors:
            kill(a)
        progress.close()


@remote(num_returns=2)
def _slice(block: blk.Block, n: int) -> tuple:
    out = block.slice(0, n)
    return out, blk.meta(out)


def _limit(stream: Iterator[BlockRef], n: int) -> Iterator[BlockRef]:
    left = n
    if left <= 0:
        return
    for ref in stream:
        rows = ref.num_rows
        if rows <= left:
            yield ref
            left -= rows
        else:
            b, m = _slice.remote(ref.block, left)
            yield BlockRef(b, m)
            left = 0
        if left == 0:
            break


def materialize(plan: Plan) -> list[BlockRef]:
    """Run the whole plan; its blocks (in the object store) and their metadata."""
    out = list(execute(plan))
    wait([r.block for r in out], num_returns=len(out)) if out else None
    return out
