"""The local transport: signed frames over Unix stream sockets.

Why not ZeroMQ here: a ZeroMQ message crosses two extra I/O threads (the
sender's and the receiver's), so one request/reply costs six thread
wake-ups instead of two. Measured on the 2-core CI machine with the peer
idle between messages (the normal case for a sync ``get``): ZeroMQ ipc
round trip 540 µs, Unix socket 120 µs. Processes on the node's machine
(drivers, workers) therefore talk to their node over a Unix socket in the
cluster's 0700 directory; ZeroMQ stays for TCP (the head, other machines,
CurveZMQ encryption).

A frame is::

    u32 length | 32-byte HMAC-SHA256 signature | body (pickled batch)

and is checked exactly like a ZeroMQ message (`protocol.unpack`) before
the body is unpickled. Any thread may send (one ``sendall`` per frame,
under a lock); one thread reads.

::

    client thread ──send(batch)──▶ [lock] sendall(frame) ──▶ node: Server.read(conn)
                                                               ├─ FrameReader → (sig, body)
    client I/O thread ◀── recv_into ◀── Server.flush(conn) ◀───┘  out buffer, non-blocking
"""

from __future__ import annotations

import errno
import os
import pickle
import select
import socket
import struct
import threading
import time
from collections import deque

from . import protocol

_LEN = struct.Struct("<I")
MAX_FRAME = 1 << 31


RECV_SIZE = 1 << 20
_recv = threading.local()


def recv_some(sock: socket.socket) -> memoryview:
    """What the socket has now (up to RECV_SIZE bytes), read into this thread's own buffer.

    Not ``sock.recv(RECV_SIZE)``: that allocates a fresh 1 MB object for every
    read, which the allocator maps and unmaps (three system calls per message).
    The view is valid until this thread's next read: callers copy it at once.
    """
    view = getattr(_recv, "view", None)
    if view is None:
        view = _recv.view = memoryview(bytearray(RECV_SIZE))
    return view[: sock.recv_into(view)]


def encode(signer: protocol.Signer, batch: list) -> bytes:
    body = pickle.dumps(batch, protocol.PROTOCOL)
    return _LEN.pack(32 + len(body)) + signer.sign(body) + body


class FrameReader:
    """Reassembles frames from a byte stream; yields verified batches."""

    def __init__(self, signer: protocol.Signer, source: str = "") -> None:
        self.signer = signer
        self.buf = bytearray()
        self.source = source
        self.broken = False

    def feed(self, data) -> list[list]:
        """The verified batches of the whole frames in what came so far (`data`: bytes or a
        view); a partial frame waits in `buf` for the rest."""
        buf = self.buf
        if buf:
            buf += data
            with memoryview(buf) as view:
                out, pos = self._frames(view)
            if pos:
                del buf[:pos]
            return out
        # Nothing held back (the usual case): read the frames in place (no copy into `buf`,
        # none of a body: HMAC and unpickling take views), keep only a partial frame's bytes.
        view = data if type(data) is memoryview else memoryview(data)
        out, pos = self._frames(view)
        if pos < len(view):
            buf += view[pos:]
        return out

    def _frames(self, view: memoryview) -> tuple[list[list], int]:
        out = []
        pos = 0
        n = len(view)
        while n - pos >= 4:
            (length,) = _LEN.unpack_from(view, pos)
            if length < 32 or length > MAX_FRAME:
                self.broken = True  # not our protocol: the caller drops the connection
                break
            if n - pos - 4 < length:
                break
            start = pos + 4
            pos = start + length
            batch = self.check(view[start : start + 32], view[start + 32 : pos])
            if batch is not None:
                out.append(batch)
        return out, pos

    def check(self, sig, body) -> list | None:
        """One frame's batch, if its signature holds (see `direct.SessionReader` for TCP)."""
        return protocol.unpack_local(self.signer, sig, body, self.source)


class Link:
    """One end of a Unix-socket connection: thread-safe sends that never block, framed reads.

    Used by drivers and workers for their node, for the workers they send
    tasks to, and (accepted) for the callers that send tasks to a worker.

    Sends never block: what the socket does not take now waits in `out`,
    and the thread that reads this process's sockets also writes it out
    when the socket is writable (`wants_write`). Two processes that both
    send a lot to each other would otherwise deadlock, each blocked in a
    send while nobody reads.
    """

    direct = False  # a DirectLink (TCP to another node): what it brings may name other nodes' segments

    def __init__(
        self,
        path: str | None,
        signer: protocol.Signer,
        sock: socket.socket | None = None,
        identity: bytes = b"",
    ) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            except OSError:
                pass
        sock.setblocking(False)
        self.sock = sock
        self.signer = signer
        self.reader = FrameReader(signer, path or "peer")
        self.lock = threading.Lock()
        self.out: deque[memoryview] = deque()
        self.closed = False
        self.identity = identity  # who is at the other end
        self.state: object = None  # what the owner of the link keeps about it

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        return bool(self.out)

    def send(self, batch: list) -> None:
        frame = encode(self.signer, batch)
        with self.lock:
            if self.closed:
                return
            self.out.append(memoryview(frame))
            self._write()

    def flush_out(self) -> None:
        """Write what waits in `out` (called when the socket is writable)."""
        with self.lock:
            if not self.closed:
                self._write()

    def _write(self) -> None:
        out = self.out
        while out:
            try:
                n = self.sock.send(out[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.closed = True
                out.clear()
                return
            if n == len(out[0]):
                out.popleft()
            else:
                out[0] = out[0][n:]

    def recv(self) -> list[list] | None:
        """Batches now readable; None when the other end closed the connection."""
        try:
            data = recv_some(self.sock)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        return self.reader.feed(data)

    def drain(self, timeout: float) -> None:
        """Before closing: give what waits in `out` up to `timeout` seconds to leave."""
        deadline = time.monotonic() + timeout
        while self.out and not self.closed and time.monotonic() < deadline:
            select.select([], [self.sock], [], max(0.0, deadline - time.monotonic()))
            self.flush_out()

    def close(self) -> None:
        with self.lock:
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RemoteLink:
    """A worker on another node, reached through our own node (see `gateway.py`).

    Looks like a `Link` to the client: what it sends goes to our node as one
    FORWARD; what the worker answers comes back as FORWARDED.
    """

    wants_write = False
    direct = False

    def __init__(self, node_id: str, identity: bytes, via: Link) -> None:
        self.node_id = node_id
        self.identity = identity
        self.via = via
        self.closed = False
        self.state: object = None

    def send(self, batch: list) -> None:
        if not self.closed:
            self.via.send([(protocol.Kind.FORWARD, self.node_id, self.identity, batch)])

    def flush_out(self) -> None:
        pass

    def drain(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ZLink:
    """A driver's connection to a node's gateway, when no node runs on its machine.

    ZeroMQ over TCP (CurveZMQ when the cluster encrypts). Only the driver's
    I/O thread touches the socket: `send` queues and wakes it, and it calls
    `flush_out` and `recv`.
    """

    wants_write = False
    direct = False

    def __init__(
        self, ctx, address: str, signer: protocol.Signer, identity: bytes, curve_public: str, wake
    ) -> None:
        import zmq

        self.sock = protocol.tune(ctx.socket(zmq.DEALER))
        self.sock.setsockopt(zmq.ROUTING_ID, identity)
        if curve_public:
            protocol.curve_client(self.sock, curve_public)
        self.sock.connect(address)
        self.signer = signer
        self.pending: deque[list] = deque()
        self.wake = wake
        self.closed = False
        self.identity = b"node"
        self.state: object = None

    def send(self, batch: list) -> None:
        if not self.closed:
            self.pending.append(batch)
            self.wake()

    def flush_out(self) -> None:
        while self.pending:
            protocol.send(self.sock, self.signer, self.pending.popleft())

    def recv(self) -> list[list]:
        return [batch for _, batch in protocol.recv_batches(self.sock, self.signer, False)]

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self.closed = True
        self.sock.close(linger=500)


class Conn:
    """Server side of one accepted connection."""

    __slots__ = ("sock", "fd", "reader", "out", "identity", "want_write")

    def __init__(self, sock: socket.socket, signer: protocol.Signer) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = FrameReader(signer, f"fd {self.fd}")
        self.out: deque[memoryview] = deque()
        self.identity = b""
        self.want_write = False


class Server:
    """The node's listening socket and its connections; never blocks on a peer."""

    def __init__(self, path: str, signer: protocol.Signer) -> None:
        self.path = path
        self.signer = signer
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.conns: dict[int, Conn] = {}

    def accept(self) -> list[Conn]:
        new = []
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            conn = Conn(sock, self.signer)
            self.conns[conn.fd] = conn
            new.append(conn)
        return new

    def read(self, conn: Conn) -> list[list] | None:
        """Batches from `conn`; None if it closed (or spoke garbage) and was dropped."""
        batches: list[list] = []
        while True:
            try:
                data = recv_some(conn.sock)
            except (BlockingIOError, InterruptedError):
                return batches
            except OSError:
                self.drop(conn)
                return None
            if not data:
                self.drop(conn)
                return None if not batches else batches
            batches.extend(conn.reader.feed(data))
            if conn.reader.broken:
                self.drop(conn)
                return batches or None
            if len(data) < RECV_SIZE:
                return batches

    def queue(self, conn: Conn, batch: list) -> None:
        conn.out.append(memoryview(encode(self.signer, batch)))

    def flush(self, conn: Conn) -> bool:
        """Write what the socket takes now; True if everything went out."""
        out = conn.out
        while out:
            try:
                n = conn.sock.send(out[0])
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                    out.clear()
                    return True
                raise
            if n == len(out[0]):
                out.popleft()
            else:
                out[0] = out[0][n:]
                return False
        return True

    def drop(self, conn: Conn) -> None:
        self.conns.pop(conn.fd, None)
        try:
            conn.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self.drop(conn)
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
