"""The object store: the node's table of objects and their shared-memory lifetime.

Data flow of a large value on one node::

    creator (driver put / worker result)            reader (driver get / worker arg)
      pickle5 -> write_segment(/dev/shm/nbc-C-ID) ----> read_segment: mmap PROT_READ,
      send (PUT|DONE, path) to the node                  buffers are views on the mapping
                     │
                     ▼
    node: ObjectTable entry {holders, pins, path, size}
          last holder gone and no pins  -> unlink the segment (a large one: kept a
                                           few seconds as a spare for the next, spares.py)
          shared memory over capacity   -> copy least recently used to the
                                           spill folder, unlink the segment

The segment format (header, buffer table, aligned buffers) is in
``runtime/wire/segments.py``: every process writes and reads segments, the
node's table owns their lifetime.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .spares import Spares

log = logging.getLogger(__name__)


class Entry:
    """What the node knows about one object (or actor handle, see `actor`)."""

    __slots__ = (
        "id",
        "ready",
        "is_error",
        "value",
        "size",
        "holders",
        "pins",
        "contained",
        "subscribers",
        "last_used",
        "actor",
    )

    def __init__(self, object_id: bytes) -> None:
        self.id = object_id
        self.ready = False
        self.is_error = False
        self.value: bytes | str | None = None  # inline bytes or segment/spill path
        self.size = 0
        self.holders: set[bytes] = set()
        self.pins = 0
        self.contained: tuple = ()
        self.subscribers: set[bytes] = set()
        self.last_used = 0.0
        self.actor = False  # an actor id: freeing it ends the actor

    @property
    def in_shm(self) -> bool:
        return isinstance(self.value, str)


class ObjectTable:
    """Reference counts, readiness and memory of the objects of one node.

    Pure bookkeeping with no sockets: callers pass in what happened and get
    back what to do. An object lives while some process holds a ref to it
    (`holders`) or something pins it (an actor's constructor arguments, a
    containing object). An object nobody references is freed only after a
    short grace period: holds and releases from different processes travel
    on different sockets, so a HOLD sent before a RELEASE (in real time) can
    still arrive after it.
    """

    GRACE = 0.5  # seconds

    def __init__(self, capacity: int, shm_dir: Path, spill_dir: Path) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.by_holder: dict[bytes, set[bytes]] = {}
        self.capacity = capacity
        self.shm_used = 0
        self.spilled_bytes = 0
        self.shm_dir = shm_dir
        self.spill_dir = spill_dir
        self.spill_error = ""  # over capacity and spilling failed: why (new large values are refused)
        self.freed_actors: list[bytes] = []
        self.doomed: dict[bytes, float] = {}
        self.spares: Spares | None = None  # the files of freed large objects, for the next ones
        # Told the path of each freed segment (the nodes that pulled a copy of it are told),
        # and (old, new) of each segment spilled to disk (a freed one is told by its new path).
        self.on_free_segment: Callable[[str], None] | None = None
        self.on_spill_segment: Callable[[str, str], None] | None = None

    # -- creation ---------------------------------------------------------
    def placeholder(self, object_id: bytes) -> Entry:
        e = self.entries.get(object_id)
        if e is None:
            e = self.entries[object_id] = Entry(object_id)
        return e

    def set_ready(self, object_id: bytes, is_error: bool, value, size: int, contained: tuple) -> Entry | None:
        """The value exists. Returns the entry (None if it was known already)."""
        e = self.placeholder(object_id)
        if e.ready:
            if value != e.value:
                self.discard_value(value)  # a retried task produced it twice
            return None
        e.ready, e.is_error, e.value, e.size = True, is_error, value, size
        e.last_used = time.monotonic()
        if contained:
            e.contained = contained
            self.pin(contained)
        if isinstance(value, str):
            self.shm_used += size
        self._maybe_free(e)
        return e

    def mark_actor(self, actor_id: bytes, holder: bytes) -> None:
        e = self.placeholder(actor_id)
        self._hold(e, holder)
        e.actor = True
        e.ready = True

    # -- reference counting -----------------------------------------------
    def hold(self, object_id: bytes, holder: bytes) -> None:
        self._hold(self.placeholder(object_id), holder)

    def _hold(self, e: Entry, holder: bytes) -> None:
        if holder not in e.holders:
            e.holders.add(holder)
            self.by_holder.setdefault(holder, set()).add(e.id)
        self.doomed.pop(e.id, None)

    def release(self, object_id: bytes, holder: bytes, at_once: bool = False) -> None:
        """`holder` dropped its last ref; `at_once`: free now if nobody else references it
        (no other process ever had a ref to it, so no HOLD can be late), not after GRACE."""
        e = self.entries.get(object_id)
        if e is None or holder not in e.holders:
            return
        e.holders.discard(holder)
        held = self.by_holder.get(holder)
        if held is not None:
            held.discard(object_id)
        if at_once and self._unreferenced(e) and not e.actor:
            self.doomed.pop(e.id, None)
            self._free(e)
        else:
            self._maybe_free(e)

    def pin(self, ids: Iterable[bytes]) -> None:
        for object_id in ids:
            e = self.placeholder(object_id)
            e.pins += 1
            self.doomed.pop(object_id, None)

    def unpin(self, ids: Iterable[bytes]) -> None:
        for object_id in ids:
            e = self.entries.get(object_id)
            if e is not None:
                e.pins -= 1
                self._maybe_free(e)

    def drop_holder(self, holder: bytes) -> None:
        """A process is gone: everything it held is released."""
        for object_id in self.by_holder.pop(holder, ()):
            e = self.entries.get(object_id)
            if e is not None:
                e.holders.discard(holder)
                self._maybe_free(e)

    def _unreferenced(self, e: Entry) -> bool:
        return not e.holders and e.pins <= 0 and not e.subscribers and (e.ready or e.actor)

    def _maybe_free(self, e: Entry) -> None:
        if self._unreferenced(e) and e.id not in self.doomed:
            self.doomed[e.id] = time.monotonic()

    def collect(self) -> int:
        """Free what has stayed unreferenced for the grace period."""
        now = time.monotonic()
        freed = 0
        for object_id, since in list(self.doomed.items()):
            if now - since < self.GRACE:
                continue
            del self.doomed[object_id]
            e = self.entries.get(object_id)
            if e is not None and self._unreferenced(e):
                self._free(e)
                freed += 1
        return freed

    def _free(self, e: Entry) -> None:
        del self.entries[e.id]
        if e.actor:
            self.freed_actors.append(e.id)
            return
        if isinstance(e.value, str):
            if self.on_free_segment is not None:
                self.on_free_segment(e.value)
            if e.value.startswith(str(self.spill_dir)):
                self.spilled_bytes -= e.size
                self.discard_value(e.value)
            else:
                self.shm_used -= e.size
                if self.spares is None:
                    self.discard_value(e.value)
                else:
                    self.spares.recycle(e.value, e.size)
        if e.contained:
            self.unpin(e.contained)

    @staticmethod
    def discard_value(value) -> None:
        if isinstance(value, str):
            try:
                os.unlink(value)
            except FileNotFoundError:
                pass

    # -- memory -----------------------------------------------------------
    def spill_if_needed(self) -> int:
        """Move least recently used segments to disk until under capacity."""
        if self.shm_used <= self.capacity:
            self.spill_error = ""
            return 0
        spilled = 0
        spill = str(self.spill_dir)
        candidates = sorted(
            (e for e in self.entries.values() if e.ready and e.in_shm and not e.value.startswith(spill)),
            key=lambda e: e.last_used,
        )
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        for e in candidates:
            if self.shm_used <= self.capacity:
                break
            target = self.spill_dir / os.path.basename(e.value)
            try:
                shutil.copyfile(e.value, target)
                os.unlink(e.value)
            except OSError as err:
                log.error("could not spill %s to %s: %s", e.value, target, err)
                try:
                    os.unlink(target)  # no partial copy left on the full disk
                except OSError:
                    pass
                self.spill_error = (
                    f"the object store of this node holds {self.shm_used:,} bytes, over its "
                    f"{self.capacity:,}, and spilling to {self.spill_dir} failed ({err.strerror or err}); "
                    "free space there (or set NBCLUSTER_SPILL_DIR to a bigger disk before the "
                    "cluster starts), or let go of refs you no longer need (del them)"
                )
                return spilled
            if self.on_spill_segment is not None:
                self.on_spill_segment(e.value, str(target))
            e.value = str(target)
            self.shm_used -= e.size
            self.spilled_bytes += e.size
            spilled += 1
        self.spill_error = ""
        return spilled

    def clear(self) -> None:
        """Shutdown: remove every segment and spill file."""
        for e in list(self.entries.values()):
            if isinstance(e.value, str):
                self.discard_value(e.value)
        self.entries.clear()
        self.by_holder.clear()
        self.doomed.clear()
        self.shm_used = 0
        self.spilled_bytes = 0
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        if self.spares is not None:
            self.spares.clear()
