"""Object transfer between nodes: pulls of other nodes' segments, and serving ours.

::

    gateway: a batch names a segment of node B ──▶ fetch(path, move) ──▶ PULL(A, id, path) ══▶ B
        at most MAX_PULLS at once; one pull per argument per node (cached for CACHE_TTL)
    B: serve_pull maps the segment ──▶ pump(): one CHUNK per transfer per turn of B's loop ══▶ A
       (a view of the mapping, sent with copy=False: ZeroMQ reads the page cache itself)
    A: recv (payload left in ZeroMQ's buffer) ──▶ protocol.unpack: keyed BLAKE3 of the payload,
       HMAC of header, body and that digest ──▶ on_chunk ──▶ pwrite <local>.part
       ──▶ renamed to a local segment ──▶ done(local path)
        (None if B died or the segment is gone: the batch says ObjectLostError, or
        the owner re-runs the task that made a lost result)
    a worker's large result for an owner on another node: kept TRANSIT_TTL seconds
    for the owner's node to move it (move=True: the pulled copy is the only one)

Values are never copied between machines unless a process there needs
them: a task's large arguments are pulled by the node that runs it, and a
task's large results are moved to the node of the task's owner.
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import zmq

from .. import config as cfg
from ..exceptions import ObjectLostError
from ..wire import protocol
from ..wire.paths import segment_node
from ..wire.protocol import Kind

log = logging.getLogger("runtime.gateway")

CHUNK = 8 << 20  # bytes per CHUNK message
MAX_PULLS = 4  # concurrent incoming transfers per node
CACHE_TTL = 30.0  # seconds a pulled copy of an argument is kept after its last use
TRANSIT_TTL = 120.0  # seconds a result waits for its owner's node to move it


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
    __slots__ = ("req_id", "src", "path", "local", "move", "total", "got", "fd", "waiters", "started")

    def __init__(self, req_id: int, src: str, path: str, local: str, move: bool) -> None:
        self.req_id, self.src, self.path, self.local, self.move = req_id, src, path, local, move
        self.total = -1
        self.got = 0
        self.fd = -1
        self.waiters: list[Callable[[str | None], None]] = []
        self.started = 0.0


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
        self.transit: dict[str, float] = {}  # our result segments awaiting a move -> deadline
        self.serving: deque[list] = deque()  # [node, request, path, move, view, total, offset]
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
            pull.started = time.monotonic()
            self.send(pull.src, (Kind.PULL, self.node_id, pull.req_id, pull.path, pull.move))

    def on_chunk(self, req_id: int, offset: int, total: int, data: bytes) -> None:
        pull = self.pulls.get(req_id)
        if pull is None:
            return
        if total < 0:
            self.finish_pull(pull, ok=False)
            return
        if pull.fd < 0:
            pull.total = total
            pull.fd = os.open(pull.local + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(pull.fd, max(total, 1))
        view = memoryview(data)
        size = view.nbytes
        while view.nbytes:
            n = os.pwrite(pull.fd, view, offset)
            view = view[n:]
            offset += n
        pull.got += size
        self.bytes_in += size
        if pull.got >= pull.total:
            self.finish_pull(pull, ok=True)

    def finish_pull(self, pull: Pull, ok: bool) -> None:
        if self.pulls.pop(pull.req_id, None) is None:
            return
        if pull.started:
            self.active -= 1
        if pull.fd >= 0:
            os.close(pull.fd)
            if ok:
                os.replace(pull.local + ".part", pull.local)
            else:
                try:
                    os.unlink(pull.local + ".part")
                except OSError:
                    pass
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
            # The mapping is unmapped when ZeroMQ has sent (and released) the last view of it.
            if move:
                self.transit.pop(path, None)
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def note_transit(self, results: list) -> None:
        deadline = time.monotonic() + TRANSIT_TTL
        for result in results:
            if isinstance(result[2], str):
                self.transit[result[2]] = deadline

    def tick(self) -> None:
        """Drop cached copies unused for CACHE_TTL, and results never moved within TRANSIT_TTL."""
        now = time.monotonic()
        for path, (local, used) in list(self.copies.items()):
            if now - used > CACHE_TTL:
                del self.copies[path]
                try:
                    os.unlink(local)
                except OSError:
                    pass
        for path, deadline in list(self.transit.items()):
            if now > deadline:
                del self.transit[path]
                try:
                    os.unlink(path)
                except OSError:
                    pass

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
        for local, _ in self.copies.values():
            try:
                os.unlink(local)
            except OSError:
                pass
