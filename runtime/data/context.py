"""DataContext: the knobs of Ray Data that matter here (``DataContext.get_current()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["DataContext"]


@dataclass
class DataContext:
    """Settings read when a dataset executes.

    Example::

        >>> ctx = ray.data.DataContext.get_current()
        >>> ctx.enable_progress_bars = False
    """

    #: Files larger than this are read in several blocks (CSV, JSON lines and text by byte
    #: ranges, Parquet by row groups), so reading streams with bounded memory.
    target_max_block_size: int = 64 * 1024 * 1024
    #: A live bar per stage: a widget in a notebook, a text bar (stderr) in a terminal.
    enable_progress_bars: bool = True
    #: Tasks (or actor calls) a stage keeps in flight; None: twice the cluster's CPUs.
    max_tasks_in_flight_per_stage: int | None = None
    #: Rows in a batch of ``map_batches`` when ``batch_size="default"``.
    default_batch_size: int = 1024

    _current: ClassVar[DataContext | None] = None

    @classmethod
    def get_current(cls) -> DataContext:
        """The context of this process (created on first use)."""
        if cls._current is None:
            cls._current = cls()
        return cls._current
