"""Spare segments: the files of freed large objects, kept a few seconds for the next large
value of about their size. Writing into a file whose pages exist skips the kernel's
allocating and zeroing them, most of the cost of a large `put` or result on tmpfs.

::

    node: an object of RECYCLE_MIN bytes or more is freed (ObjectTable._free)
      offer(): rename nbc-C-N-<id> -> <spares>/q-<id>      its name is gone: nobody opens it again
        its writer may take it back from there (wire/arena.py: it keeps the file open and
        mapped, so its next value of that size is one memcpy; then this node never sees it free)
      unmapped everywhere? (a write lease: the kernel refuses it while any process
      has the file open or mapped, e.g. a numpy view from get() that outlived its ref)
        yes -> rename -> <spares>/<size>-<id>               published
        no  -> stays in quarantine; asked again every RETRY_S for its first RETRY_FOR
               (retry()), then at each tick()
    writer (any process: segments.write_segment), a value of RECYCLE_MIN bytes or more:
      the smallest published spare of at least its size: rename -> its own path,
      truncate to its size, write (segments.take_spare)
    node tick(): unlink spares unused for SPARE_TTL, quarantined ones after QUARANTINE_TTL,
                 and the oldest beyond `limit` bytes; drop() them all (quarantined too)
                 when the machine's memory is short (before the memory monitor kills a
                 worker); clear() at the end

Why a lease and not the table: the table knows that no process holds a ref, but
a zero-copy array from `get` maps the segment for as long as it lives, and
writing the next value into that file would change the array under its owner.
The decisions (`to_unlink`) are apart from the file operations.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import time

from ..wire.segments import RECYCLE_MIN, quarantine_path, spare_dir

log = logging.getLogger(__name__)

SPARE_TTL = 5.0  # seconds a published spare waits for a writer before it is unlinked
QUARANTINE_TTL = 60.0  # seconds a still-mapped file is asked again before it is unlinked
RETRY_S = 0.05  # a file quarantined less than RETRY_FOR is asked again this often...
RETRY_FOR = 1.0  # ...(a task's worker lets go of its argument just after its result); later, at tick()
SPARE_SHARE = 4  # spares hold at most 1/SPARE_SHARE of the store's capacity...
SPARE_MAX = 2 << 30  # ...and at most this many bytes


def to_unlink(published: dict[str, float], sizes: dict[str, int], now: float, limit: int) -> list[str]:
    """Published spares to drop: unused for SPARE_TTL, then the oldest beyond `limit` bytes
    (`published`: name -> when published; `sizes`: name -> bytes)."""
    drop = [name for name, since in published.items() if now - since > SPARE_TTL]
    kept = sorted((since, name) for name, since in published.items() if name not in drop)
    total = sum(sizes[name] for _, name in kept)
    for _, name in kept:
        if total <= limit:
            break
        drop.append(name)
        total -= sizes[name]
    return drop


def unmapped(path: str) -> bool | None:
    """Whether no process has `path` open or mapped (a write lease, taken and let go at once);
    None if this file system or kernel cannot say (no recycling then)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # out of file descriptors, say: ask again at the next tick
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except BlockingIOError:
        return False
    except OSError:
        return None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    finally:
        os.close(fd)


class Spares:
    """The node's spare segments (one folder next to its segments)."""

    def __init__(self, prefix: str, capacity: int) -> None:
        self.prefix = prefix
        self.dir = spare_dir(prefix)
        self.limit = min(capacity // SPARE_SHARE, SPARE_MAX)
        self.enabled = self.limit >= RECYCLE_MIN
        self.quarantined: dict[str, float] = {}  # name -> since
        self.published: dict[str, float] = {}  # name -> when
        self.retry_until = 0.0  # retry() is due until then (RETRY_FOR after the last quarantine)

    def offer(self, path: str, size: int) -> bool:
        """A freed segment of `size` bytes: keep it (True), or the caller unlinks it."""
        if not self.enabled or size < RECYCLE_MIN or not path.startswith(self.prefix):
            return False
        if not self.quarantined and not self.published:
            # The kernel tells a lease holder that someone opens its file with SIGIO, whose
            # default ends the process. Nobody can open a quarantined file by name, and the
            # lease lasts two calls; still, this node must not die of it.
            try:
                signal.signal(signal.SIGIO, signal.SIG_IGN)
            except ValueError:
                pass  # not the main thread: a node run inside a test's thread
        name = os.path.basename(quarantine_path(path))  # where its writer looks (wire/arena.py)
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            os.rename(path, os.path.join(self.dir, name))
        except OSError:
            return False
        self.quarantined[name] = now = time.monotonic()
        self.retry_until = now + RETRY_FOR
        self.release(name)
        return True

    def recycle(self, path: str, size: int) -> None:
        """A freed file of `size` bytes: kept as a spare if it may be, else unlinked."""
        if not self.offer(path, size):
            try:
                os.unlink(path)
            except OSError:
                pass

    def release(self, name: str) -> None:
        """Publish a quarantined file once nobody maps it; unlink it if nobody can say."""
        path = os.path.join(self.dir, name)
        free = unmapped(path)
        if free is False:
            return
        del self.quarantined[name]
        try:
            if free is None:
                self.enabled = False
                log.info("spare segments off: %s cannot tell whether a file is still mapped", self.dir)
                os.unlink(path)
                return
            size = os.stat(path).st_size
            public = f"{size:016d}-{name[2:]}"
            os.rename(path, os.path.join(self.dir, public))
        except OSError:
            return
        self.published[public] = time.monotonic()

    def retry(self, now: float) -> None:
        """Publish the files quarantined less than RETRY_FOR ago that nobody maps now."""
        for name, since in list(self.quarantined.items()):
            if now - since < RETRY_FOR:
                self.release(name)

    def tick(self) -> None:
        """Publish what is no longer mapped; unlink what waited too long or is too much."""
        now = time.monotonic()
        for name, since in list(self.quarantined.items()):
            if now - since > QUARANTINE_TTL:
                del self.quarantined[name]
                self.unlink(name)
            else:
                self.release(name)
        if not self.published:
            return
        try:
            present = set(os.listdir(self.dir))
        except OSError:
            present = set()
        for name in [n for n in self.published if n not in present]:  # taken by a writer
            del self.published[name]
        sizes = {name: int(name.split("-", 1)[0]) for name in self.published}
        for name in to_unlink(self.published, sizes, now, self.limit):
            del self.published[name]
            self.unlink(name)

    def drop(self) -> bool:
        """Memory is short: unlink every spare, and every quarantined file (still mapped by a
        reader, or kept by its writer, who lets go of it at its next tick); whether there was any."""
        names = [*self.published, *self.quarantined]
        self.published, self.quarantined = {}, {}
        for name in names:
            self.unlink(name)
        return bool(names)

    def unlink(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, name))
        except OSError:
            pass  # taken by a writer meanwhile

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.quarantined.clear()
        self.published.clear()
