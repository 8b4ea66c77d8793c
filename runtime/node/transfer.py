"""Object transfer between nodes: pulls of other nodes' segments, and serving ours.

::

    gateway: a batch names a segment of node B ──▶ fetch(path, move) ──▶ PULL(A, id, path) ══▶ B
        at most MAX_PULLS at once; one pull per argument per node (cached for CACHE_TTL)
    B: serve_pull maps the segment ──▶ pump(): one CHUNK per transfer per turn of B's loop ══▶ A
       (a view of the mapping, sent with copy=False: ZeroMQ reads the page cache itself)
    A: recv (payload left in ZeroMQ's buffer) ──▶ protocol.unpack: GMAC tag of the payload,
       HMAC of header, body and that tag ──▶ on_chunk: a checked chunk ──▶ ChunkWriter queue
    A's writer thread (nbc-writer, started at the first chunk, SIGINT blocked, joined at close):
       pwrite <local>.part ──▶ result + a byte on its pipe ──▶ A's loop: on_written
       ──▶ all written: renamed to a local segment ──▶ done(local path)
        (None if B died, the segment is gone or a write failed: the batch says ObjectLostError,
        or the owner re-runs the task that made a lost result; a failed pull's .part is closed
        and removed by the writer, after the writes queued before it)
    a worker's large result for an owner on another node: kept TRANSIT_TTL seconds
    for the owner's node to move it (move=True: the pulled copy is the only one)
    B: a segment that A pulled a copy of is freed ──▶ FREED(B, path) ══▶ A: the copy goes
       (to A's spare segments, which a .part file of the next pull may take)

Values are never copied between machines unless a process there needs
them: a task's large arguments are pulled by the node that runs it, and a
task's large results are moved to the node of the task's owner.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import pickle
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from .. import config as cfg
from ..exceptions import ObjectLostError
from ..prctl import sigint_blocked
from ..wire import protocol
from ..wire.paths import segment_node
from ..wire.protocol import Kind
from ..wire.segments import pwrite_all, take_spare
from .spares import Spares

log = logging.getLogger("runtime.gateway")

CHUNK = 8 << 20  # bytes per CHUNK message
MAX_PULLS = 4  # concurrent incoming transfers per node
CACHE_TTL = 30.0  # seconds a pulled copy of an argument is kept after its last use
TRANSIT_TTL = 120.0  # seconds a result waits for its owner's node to move it
# Seconds a started pull may go without a chunk before it fails (a chunk that failed its
# check was dropped, or the sender stopped serving it while its node lives on).
PULL_STALL = float(os.environ.get("NBCLUSTER_PULL_STALL_S", "30"))
TRIM_KEEP = 8 * CHUNK  # bytes of freed heap a node keeps for the next chunks (keep_chunk_buffers)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_chunk_buffers() -> None:
    """Let this process (a node daemon) reuse the memory of received chunks (glibc only).

    ZeroMQ's I/O thread mallocs an 8 MiB buffer per CHUNK it receives; glibc serves
    that with a fresh mmap, or trims the freed heap back to the system, so every
    chunk's pages were faulted in and zeroed again (a quarter of that thread's CPU
    in a pull). Chunk-sized blocks now come from the heap, and up to TRIM_KEEP bytes
    of it stay there when free. Called after the zygote is forked: workers keep
    glibc's defaults.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: its defaults
        return
    mallopt(M_MMAP_THRESHOLD, 2 * CHUNK)
    mallopt(M_TRIM_THRESHOLD, TRIM_KEEP)


def _err(exc: BaseException) -> bytes:
    return pickle.dumps(exc, protocol.PROTOCOL)


def read_file(path: str, owned: bool) -> bytes:
    """A segment's bytes; `owned`: nobody else has it (a moved result), remove it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return _err(ObjectLostError(f"its shared-memory segment {os.path.basename(path)} is gone"))
    if owned:
        try:
            os.unlink(path)
        except OSError:
            pass
    return data


class Pull:
    __slots__ = (
        "req_id",
        "src",
        "path",
        "local",
        "move",
        "total",
        "got",
        "written",
        "fd",
        "waiters",
        "started",
        "heard",
        "dropped",
    )

    def __init__(self, req_id: int, src: str, path: str, local: str, move: bool) -> None:
        self.req_id, self.src, self.path, self.local, self.move = req_id, src, path, local, move
        self.total = -1
        self.got = 0  # bytes received and checked
        self.written = 0  # of those, bytes the writer has written into the .part file
        self.fd = -1
        self.waiters: list[Callable[[str | None], None]] = []
        self.started = 0.0
        self.heard = 0.0  # when the sender was last heard of (the start, or its last chunk)
        self.dropped = False  # failed: the writer skips its queued chunks


class ChunkWriter:
    """The thread that writes checked chunks into their pulls' ``.part`` files.

    The node's loop checks a chunk (GMAC tag, HMAC) and queues it here, so
    it checks the next one while this thread writes (a write into a new tmpfs
    file costs about twice the check). Jobs run in the order queued: a pull's
    discard (close and remove its ``.part``) comes after its writes. Each write's
    outcome goes back on `results` with a byte on a pipe that the node polls
    (`fileno`); `take` reads them. Started at the first job, so a node that
    never pulls has no such thread.
    """

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[tuple[Pull, int | OSError]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.thread: threading.Thread | None = None

    def fileno(self) -> int:
        """Readable when results wait in `take`."""
        return self._wake_r

    def write(self, pull: Pull, data: Any, offset: int) -> None:
        self._submit((pull, data, offset))

    def discard(self, fd: int, part: str) -> None:
        """Close `fd` and remove `part` once the writes queued before are done (or skipped)."""
        self._submit((None, fd, part))

    def take(self) -> list[tuple[Pull, int | OSError]]:
        """The outcomes of writes done since the last call: (pull, bytes written or the error)."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Finish the queued jobs (their discards included) and stop the thread."""
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _submit(self, job: tuple) -> None:
        if self.thread is None:
            with sigint_blocked():  # the daemon ignores SIGINT; its threads never take it either
                self.thread = threading.Thread(target=self._run, name="nbc-writer", daemon=True)
                self.thread.start()
        self.jobs.put(job)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if job[0] is None:
                _close_and_remove(*job[1:])
            elif not job[0].dropped:
                self._write(*job)
            del job  # ZeroMQ's buffer goes now, not when the next job comes

    def _write(self, pull: Pull, data: Any, offset: int) -> None:
        try:
            outcome: int | OSError = pwrite_all(pull.fd, data, offset)
        except OSError as e:  # ENOSPC: the pull fails, its .part is discarded
            outcome = e
        self.results.put((pull, outcome))
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass


def _close_and_remove(fd: int, path: str) -> None:
    os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass


class Transfers:
    """This node's pulls of other nodes' segments, the copies it keeps, and the pulls it serves."""

    def __init__(
        self,
        node_id: str,
        cluster_id: str,
        cluster_dir: Path,
        signer: protocol.Signer,
        send: Callable[[str, tuple], bool],
        socket_to: Callable[[str], zmq.Socket | None],
        reachable: Callable[[str], bool],
    ) -> None:
        self.node_id, self.cluster_id, self.cluster_dir, self.signer = (
            node_id,
            cluster_id,
            cluster_dir,
            signer,
        )
        self.send = send  # queue a message for a node (False: it is gone)
        self.socket_to = socket_to  # a node's socket, its queued messages sent first (None: gone)
        self.reachable = reachable
        self.pulls: dict[int, Pull] = {}
        self.pull_queue: deque[Pull] = deque()
        self.active = 0
        self.by_path: dict[str, Pull] = {}  # cache pulls in flight, for dedup
        self.copies: dict[str, list] = {}  # remote path -> [local path, last used]
        # Our segment (where it is now) -> (node, path it pulled) of each node that keeps a copy
        # of it (the copy is known there by that path; the segment may be on disk since).
        self.pulled_by: dict[str, set[tuple[str, str]]] = {}
        self.spares: Spares | None = None  # this node's: freed copies go there, .part files from there
        self.transit: dict[str, float] = {}  # our result segments awaiting a move -> deadline
        self.serving: deque[list] = deque()  # [node, request, path, move, view, total, offset]
        self.writer = ChunkWriter()
        self.next_req = 1
        self.bytes_in = 0
        self.bytes_out = 0

    def fetch(self, path: str, move: bool, done: Callable[[str | None], None]) -> None:
        """Get a local copy of another node's segment; `done(local path or None)`.

        Copies of arguments are shared and cached (`copies`); moved results
        belong to whoever asked.
        """
        if not move:
            cached = self.copies.get(path)
            if cached is not None and os.path.exists(cached[0]):
                cached[1] = time.monotonic()
                done(cached[0])
                return
            pending = self.by_path.get(path)
            if pending is not None:
                pending.waiters.append(done)
                return
        src = segment_node(path)
        name = os.path.basename(path).split("-", 3)[3]
        suffix = "" if not move else f".m{self.next_req}"
        local = f"{cfg.shm_dir()}/{cfg.SHM_PREFIX}{self.cluster_id}-{self.node_id}-{name}{suffix}"
        pull = Pull(self.next_req, src, path, local, move)
        self.next_req += 1
        pull.waiters.append(done)
        if not move:
            self.by_path[path] = pull
        self.pulls[pull.req_id] = pull
        if not self.reachable(src):
            self.finish_pull(pull, ok=False)
            return
        self.pull_queue.append(pull)
        self.start_pulls()

    def start_pulls(self) -> None:
        while self.pull_queue and self.active < MAX_PULLS:
            pull = self.pull_queue.popleft()
            if pull.req_id not in self.pulls:
                continue
            self.active += 1
            pull.started = pull.heard = time.monotonic()
            self.send(pull.src, (Kind.PULL, self.node_id, pull.req_id, pull.path, pull.move))

    def on_chunk(self, req_id: int, offset: int, total: int, data: bytes) -> None:
        pull = self.pulls.get(req_id)
        if pull is None:
            return
        pull.heard = time.monotonic()
        if total < 0:
            self.finish_pull(pull, ok=False)
            return
        if pull.fd < 0 and not self.open_part(pull, total):
            self.finish_pull(pull, ok=False)
            return
        size = memoryview(data).nbytes
        if offset < 0 or offset + size > pull.total:  # not a part of the segment it announced
            self.finish_pull(pull, ok=False)
            return
        pull.got += size
        self.bytes_in += size
        if size:
            self.writer.write(pull, data, offset)  # checked: `on_written` hears when it is written
        elif pull.got >= pull.total:  # an empty segment: nothing to write
            self.finish_pull(pull, ok=True)

    @staticmethod
    def open_part(pull: Pull, total: int) -> bool:
        """Make the pull's ``.part`` file, `total` bytes long; False if the file system says no
        (full, or a file size limit): the pull fails."""
        pull.total = total
        part = pull.local + ".part"
        try:
            # Into a spare segment when there is one: its pages exist (no zeroing by the kernel).
            spare = take_spare(part, total)
            pull.fd = (
                spare if spare is not None else os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            )
            os.ftruncate(pull.fd, max(total, 1))
        except OSError as e:
            log.warning("could not make %s: %s", os.path.basename(pull.local) + ".part", e)
            return False  # if it was opened, finish_pull closes and removes it
        return True

    def on_written(self) -> None:
        """The writer wrote chunks: a pull whose bytes are all written is done; one whose
        write failed is lost."""
        for pull, outcome in self.writer.take():
            if self.pulls.get(pull.req_id) is not pull:
                continue  # failed or closed meanwhile
            if isinstance(outcome, OSError):
                log.warning("could not write a chunk of %s: %s", os.path.basename(pull.local), outcome)
                self.finish_pull(pull, ok=False)
                continue
            pull.written += outcome
            if pull.written >= pull.total and pull.written == pull.got:  # none still queued
                self.finish_pull(pull, ok=True)

    def finish_pull(self, pull: Pull, ok: bool) -> None:
        if self.pulls.pop(pull.req_id, None) is None:
            return
        if pull.started:
            self.active -= 1
        if pull.fd >= 0:
            if ok:  # every write is done (on_written)
                os.close(pull.fd)
                os.replace(pull.local + ".part", pull.local)
            else:  # writes may still be queued: the writer closes and removes it after them
                pull.dropped = True
                self.writer.discard(pull.fd, pull.local + ".part")
            pull.fd = -1
        if self.by_path.get(pull.path) is pull:
            del self.by_path[pull.path]
        local = pull.local if ok else None
        if ok and not pull.move:
            self.copies[pull.path] = [pull.local, time.monotonic()]
        if not ok:
            log.warning("could not pull %s from node %s", os.path.basename(pull.path), pull.src)
        for done in pull.waiters:
            try:
                done(local)
            except Exception:
                log.exception("error after a transfer")
        self.start_pulls()

    def serve_pull(self, src_node: str, req_id: int, path: str, move: bool) -> None:
        """Another node wants one of our segments: queue it; `pump` sends it a chunk at a time."""
        real = os.path.realpath(path)
        allowed = (str(cfg.shm_dir()), str(self.cluster_dir / "spill"))
        ok = segment_node(path) == self.node_id and os.path.dirname(real).startswith(allowed)
        try:
            if not ok:
                raise FileNotFoundError(path)
            fd = os.open(real, os.O_RDONLY)
            try:
                total = os.fstat(fd).st_size
                # Mapped, not read: chunks are views of the mapping that ZeroMQ sends without a
                # copy. The mapping outlives an unlink (a moved result) and goes with the last view.
                view = memoryview(mmap.mmap(fd, total, prot=mmap.PROT_READ)) if total else memoryview(b"")
            finally:
                os.close(fd)
        except (OSError, ValueError):
            self.send(src_node, (Kind.CHUNK, req_id, 0, -1, b""))
            return
        self.serving.append([src_node, req_id, path, move, view, total, 0])
        if not move:
            self.pulled_by.setdefault(path, set()).add((src_node, path))

    def spilled(self, path: str, target: str) -> None:
        """Our segment `path` is on disk now, at `target`: it is freed under that path."""
        pulled = self.pulled_by.pop(path, None)
        if pulled:
            self.pulled_by.setdefault(target, set()).update(pulled)

    def freed(self, path: str) -> None:
        """Our segment `path` is freed: the nodes that pulled a copy of it may drop theirs
        now, not CACHE_TTL after they last used it (nobody can ask for it again)."""
        for node, named in self.pulled_by.pop(path, ()):
            self.send(node, (Kind.FREED, self.node_id, named))

    def on_freed(self, src_node: str, path: str) -> None:
        """A node says its segment `path` is freed: our copy of it goes (a spare, if it may)."""
        if not isinstance(path, str) or segment_node(path) != src_node:
            return
        entry = self.copies.pop(path, None)
        if entry is not None:
            self.discard(entry[0])

    def discard(self, local: str) -> None:
        """A file of ours nobody asks for again (a copy of a freed object, a result moved to
        its owner's node): one of our spares once nobody maps it, or unlinked."""
        try:
            size = os.stat(local).st_size
        except OSError:
            return
        if self.spares is not None:
            self.spares.recycle(local, size)
        else:
            os.unlink(local)

    def pump(self) -> None:
        """Send the next chunk of each transfer we serve (between other messages, so a
        large object does not stop the node for its whole length)."""
        for _ in range(len(self.serving)):
            item = self.serving.popleft()
            src_node, req_id, path, move, view, total, offset = item
            sock = self.socket_to(src_node)  # what was queued for that node goes first
            data = view[offset : offset + CHUNK]
            if sock is not None:
                sock.send_multipart(
                    protocol.pack_data(self.signer, (Kind.CHUNK, req_id, offset, total), data), copy=False
                )
                self.bytes_out += data.nbytes
            offset += data.nbytes
            if sock is not None and data.nbytes and offset < total:
                item[6] = offset
                self.serving.append(item)
                continue
            # The mapping is unmapped when ZeroMQ has sent (and released) the last view of it;
            # a moved result's file is then a spare for the next result written here.
            if move:
                self.transit.pop(path, None)
                self.discard(path)

    def note_transit(self, paths: list[str]) -> None:
        """Our segments of results sent to another node's owner: kept TRANSIT_TTL for the move."""
        deadline = time.monotonic() + TRANSIT_TTL
        for path in paths:
            self.transit[path] = deadline

    def tick(self) -> None:
        """Drop cached copies unused for CACHE_TTL, and results never moved within TRANSIT_TTL;
        fail pulls that heard nothing for PULL_STALL seconds."""
        now = time.monotonic()
        for pull in [p for p in self.pulls.values() if p.started and now - p.heard > PULL_STALL]:
            log.warning(
                "no chunk of %s from node %s for %.0f s: the pull fails",
                os.path.basename(pull.path),
                pull.src,
                now - pull.heard,
            )
            self.finish_pull(pull, ok=False)
        for path, (local, used) in list(self.copies.items()):
            if now - used > CACHE_TTL:
                del self.copies[path]
                self.discard(local)
        for path, deadline in list(self.transit.items()):
            if now > deadline:
                del self.transit[path]
                self.discard(path)

    def drop_node(self, node_id: str) -> None:
        """A node died: its transfers to us fail."""
        for pull in [p for p in self.pulls.values() if p.src == node_id] + [
            p for p in self.pull_queue if p.src == node_id
        ]:
            self.finish_pull(pull, ok=False)

    def close(self) -> None:
        self.serving.clear()
        for pull in list(self.pulls.values()):
            self.finish_pull(pull, ok=False)
        self.writer.close()  # after the discards: no .part file or thread is left
        for local, _ in self.copies.values():
            try:
                os.unlink(local)
            except OSError:
                pass
