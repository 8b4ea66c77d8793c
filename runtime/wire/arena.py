"""A process's own large segment files, kept open after it wrote them, so that its next value
of about their size is one memcpy into pages it has mapped already (Ray's store writes into an
arena mapped once; a file written with `pwrite`, or mapped afresh, costs twice the copy).

::

    write_segment(path, size), size >= RECYCLE_MIN (any process)
      write(path, size, parts) -> claim: a kept file of at least `size` bytes (at most twice),
        whose object the node has freed: the node renamed it <spares>/q-<object id> (spares.offer)
          rename <spares>/q-<id> -> path                 atomic: the node can no longer publish it
          still our file (same inode)? no -> rename it back, forget ours (it was unlinked)
          nobody else has it open or mapped? a write lease on our own descriptor: the kernel
            counts every other open file and mapping, not the one we hold
              no  -> rename it back (the node asks again later), try the next one
              yes -> ftruncate to size; copy the parts into our mapping (MAP_POPULATE the
                     first time; halves on two threads when big), keep it again
      none (write() says False): take_spare / a new file, pwrite; then keep(path, fd, size)
    sweep() (the client's tick, and each write): let go of a file the node unlinked (no links
      left), one freed KEEP_TTL ago and not claimed since, and the oldest beyond KEEP_MAX.
      Letting go = munmap + close: the node's own lease check then publishes the file as an
      ordinary spare for any writer (spares.release).

Why only the writer can claim its file: while it holds the file open, the node's lease
check (another descriptor) always fails. Why the lease and not the table: a zero-copy
array from `get` maps the segment for as long as it lives, in any process.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

KEEP_MAX = 8  # files kept open per process
KEEP_TTL = 5.0  # seconds a freed file waits for its writer before it goes back to the node
SPLIT_MIN = 16 << 20  # bytes: a copy this big is done in two halves on two threads (one core's
# memcpy is short of the memory's bandwidth: 100 MB in ~10.6 ms on one thread, ~7.6 on two here)


@dataclass
class Kept:
    path: str  # where its object lives; the node renames it to `freed_at` when it frees it
    fd: int  # open read-write: the lease is taken on this descriptor
    size: int  # bytes in the file
    ino: int
    mm: mmap.mmap | None = None  # made (populated) the first time the file is reused
    freed: float | None = None  # when we first saw it gone from `path`

    @property
    def freed_at(self) -> str:
        from .segments import quarantine_path  # segments imports this module

        return quarantine_path(self.path)


def alone(fd: int) -> bool | None:
    """Whether no other open file or mapping has the file of `fd` (a write lease on `fd`, taken
    and let go at once); None if this file system or kernel cannot say."""
    if not hasattr(fcntl, "F_SETLEASE"):
        return None  # not Linux
    try:
        # A lease broken by someone opening the file signals us: SIGURG, ignored by default,
        # instead of SIGIO, whose default ends the process. Nobody opens the file by name
        # meanwhile: it is at a path whose object id has not been given out yet.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except BlockingIOError:
        return False
    except OSError:
        return None
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True


def copy(dest: mmap.mmap, offset: int, buf: memoryview) -> None:
    """Copy `buf` (bytes, "B" format) into `dest` at `offset`; a big one in two halves, the
    second on a helper thread, when numpy (which lets go of the GIL while it copies) is
    loaded already and this process may use two cores."""
    n = buf.nbytes
    np = sys.modules.get("numpy")
    if n < SPLIT_MIN or np is None or len(os.sched_getaffinity(0)) < 2:
        with memoryview(dest) as view:
            view[offset : offset + n] = buf
        return
    to, frm = np.frombuffer(dest, np.uint8, n, offset), np.frombuffer(buf, np.uint8)
    half = n // 2 & ~4095
    other = ARENA.helper().submit(np.copyto, to[half:], frm[half:])
    try:
        np.copyto(to[:half], frm[:half])
    finally:
        other.result()


class Arena:
    """The kept files of this process (one instance, `ARENA`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: dict[int, Kept] = {}  # inode -> file, oldest first
        self.enabled = True
        self.pool: ThreadPoolExecutor | None = None  # copy()'s helper thread, made when first needed

    def helper(self) -> ThreadPoolExecutor:
        """The thread that copies the second half of a big value (a ThreadPoolExecutor)."""
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            with self.lock:
                if self.pool is None:
                    self.pool = ThreadPoolExecutor(1, thread_name_prefix="nbc-copy")
        return self.pool

    def keep(self, path: str, fd: int, size: int) -> None:
        """Hold on to `fd`, just written at `path` with `size` bytes (ours to close from now)."""
        if not self.enabled:
            os.close(fd)
            return
        self.put_back(Kept(path, fd, size, os.fstat(fd).st_ino))
        self.sweep()

    def write(self, path: str, size: int, parts: list[tuple[int, memoryview]]) -> bool:
        """Write a `size`-byte value at `path` (`parts`: (offset, bytes) pairs) through the
        mapping of a kept file whose object was freed; False if none is free for it."""
        e = self._claim(path, size)
        if e is None:
            return False
        try:
            for offset, part in parts:
                copy(e.mm, offset, part)
        except BaseException:
            self.let_go(e)
            os.unlink(path)
            raise
        self.put_back(e)
        return True

    def _claim(self, path: str, size: int) -> Kept | None:
        """A kept file, now at `path`, `size` bytes long and mapped; None if none is free."""
        if not self.enabled:
            return None
        with self.lock:
            fits = sorted((e for e in self.kept.values() if size <= e.size <= 2 * size), key=lambda e: e.size)
            for e in fits:
                del self.kept[e.ino]  # ours alone while we look at it: sweep() passes it by
        got = None
        for e in fits:
            if got is None and self._take(e, path, size):
                got = e
                e.path, e.size, e.freed = path, size, None
            elif e.fd >= 0:
                self.put_back(e)
        return got

    def _take(self, e: Kept, path: str, size: int) -> bool:
        freed_at = e.freed_at
        try:
            os.rename(freed_at, path)
        except OSError:
            return False  # its object is alive still, or the node let the file go
        try:
            ours = os.stat(path).st_ino == e.ino
        except OSError:
            ours = False
        # Not ours: ours was unlinked (spilled to disk, say) and another file written under
        # its object's name (a task run again makes the same object id), then freed; not ours
        # to write through our mapping of the old one. Ours but mapped elsewhere: the node
        # asks again later.
        free = alone(e.fd) if ours else False
        if not free:
            try:
                os.rename(path, freed_at)
            except OSError:
                pass
            if not ours:
                self.let_go(e)
            elif free is None:
                self.enabled = False
            return False
        try:
            os.ftruncate(e.fd, size)
            if e.mm is None:
                e.mm = mmap.mmap(e.fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except OSError:
            self.let_go(e)
            os.unlink(path)
            return False
        return True

    def put_back(self, e: Kept) -> None:
        """Keep `e` again (written, or not taken)."""
        with self.lock:
            old = self.kept.pop(e.ino, None)
            self.kept[e.ino] = e
        if old is not None and old is not e:
            self.let_go(old)

    def sweep(self) -> None:
        """Let go of the files the node unlinked, freed more than KEEP_TTL ago, or too many."""
        now = time.monotonic()
        gone = []
        with self.lock:
            for e in list(self.kept.values()):
                try:
                    links = os.fstat(e.fd).st_nlink
                except OSError:
                    links = 0
                try:
                    here = os.stat(e.path).st_ino == e.ino
                except OSError:
                    here = False
                if here:
                    e.freed = None
                elif e.freed is None:
                    e.freed = now
                if links == 0 or (e.freed is not None and now - e.freed > KEEP_TTL):
                    gone.append(self.kept.pop(e.ino))
            while len(self.kept) > KEEP_MAX:
                gone.append(self.kept.pop(next(iter(self.kept))))
        for e in gone:
            self.let_go(e)

    def clear(self) -> None:
        """Let go of every kept file (the cluster is shutting down)."""
        with self.lock:
            gone, self.kept = list(self.kept.values()), {}
        for e in gone:
            self.let_go(e)

    def after_fork(self) -> None:
        """In a forked child: the parent's files are the parent's (and its helper thread)."""
        self.lock = threading.Lock()
        self.pool = None
        self.clear()

    @staticmethod
    def let_go(e: Kept) -> None:
        """Unmap and close `e`: the node may publish it as a spare now."""
        if e.mm is not None:
            try:
                e.mm.close()
            except BufferError:
                pass  # a view is still out: the mapping goes with it
            e.mm = None
        if e.fd >= 0:
            try:
                os.close(e.fd)
            except OSError:
                pass
            e.fd = -1


ARENA = Arena()
os.register_at_fork(after_in_child=ARENA.after_fork)
