"""Direct links: a caller's TCP connection to a worker on another node.

A task or actor call to a worker of another node would otherwise cross
both node daemons each way (caller → its node → the worker's node →
worker, and back: six hand-offs). A direct link is one TCP connection,
caller ⇄ worker, carrying exactly what a local caller's Unix link
carries (EXECUTE, CANCEL, FUNC one way; DONE, LOG, REJECTED the other)::

    caller (node A) ──connect──▶ worker's listener (node B's address, a port of its own)
        first bytes: HELLO = "NBCD" ‖ replay header ‖ nonce ‖
                             HMAC(key, "B" ‖ header ‖ "direct" ‖ nonce ‖ the worker's identity)
        worker: signature (for it, no other worker), then `Signer.fresh(header)` (not a
        replay) ─▶ the session is the nonce
    then frames as on a Unix link (u32 length ‖ signature ‖ body), each signed over
        nonce ‖ direction ‖ sequence number, which the receiver knows without being told:
        a frame replayed, reordered, reflected or moved to another connection fails its check

Only where the cluster is not encrypted (loopback, or ``--no-encryption``):
under CurveZMQ the nodes' relay stays the only path between machines (see
docs/security.md, "Direct links"). Values in shared memory are not carried:
a frame names another node's segment, and the receiver's node pulls it
(`runtime.client.arrivals`), as the gateways do on the relay path.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import time

from . import protocol
from .transport import _LEN, FrameReader, Link

MAGIC = b"NBCD"
_SEQ = struct.Struct("<Q")
NONCE = 16
HELLO_SIZE = len(MAGIC) + 24 + NONCE + 32  # magic, replay header, nonce, signature
CONNECT_TIMEOUT = 1.0  # s: a worker whose port cannot be reached by then is reached through the nodes
HELLO_WAIT = 10.0  # s: a connection to a worker without a valid HELLO by then is closed
TO_WORKER, TO_CALLER = b">", b"<"


def hello(signer: protocol.Signer, nonce: bytes, worker: bytes) -> bytes:
    """A caller's first bytes to `worker` (its identity): this session's nonce, signed for it."""
    header = signer.header()
    return MAGIC + header + nonce + signer.sign(b"direct" + nonce + worker, header)


class SessionReader(FrameReader):
    """Frames of one direct link, each checked against the next sequence number it must carry.

    On the worker's side the first bytes are the caller's HELLO, checked
    (signature, then freshness) before any frame is read.
    """

    def __init__(
        self, signer: protocol.Signer, source: str, nonce: bytes | None, direction: bytes, me: bytes = b""
    ) -> None:
        super().__init__(signer, source)
        self.nonce = nonce  # None: the HELLO is still to come
        self.me = me  # the worker's identity, which its callers' HELLO must be signed for
        self.direction = direction
        self.seq = 0

    def feed(self, data) -> list[list]:
        if self.nonce is None:
            self.buf += data
            if len(self.buf) < HELLO_SIZE:
                return []
            first = bytes(self.buf[:HELLO_SIZE])
            del self.buf[:HELLO_SIZE]
            self.nonce = self._hello(first)
            if self.nonce is None:
                self.broken = True
                return []
            data, self.buf = bytes(self.buf), bytearray()
        return super().feed(data)

    def _hello(self, first: bytes) -> bytes | None:
        signer = self.signer
        header, nonce, sig = first[4:28], first[28 : 28 + NONCE], first[28 + NONCE :]
        if first[:4] != MAGIC or not signer.verify(sig, b"direct" + nonce + self.me, header):
            signer.drop("a direct connection with a wrong signature", self.source)
            return None
        if not signer.fresh(header):
            signer.replayed += 1
            signer.drop("a replayed direct connection", self.source)
            return None
        return nonce

    def check(self, sig, body) -> list | None:
        self.seq += 1
        batch = protocol.unpack_session(
            self.signer, sig, body, self.nonce + self.direction + _SEQ.pack(self.seq), self.source
        )
        if batch is None:
            self.broken = True  # out of step for good: the link is dropped
        return batch


class DirectLink(Link):
    """One end of a direct link: a `Link` over TCP whose frames are signed for this session."""

    direct = True

    def __init__(
        self,
        sock: socket.socket,
        signer: protocol.Signer,
        nonce: bytes | None,
        identity: bytes = b"",
        node_id: str = "",
        source: str = "",
        me: bytes = b"",
    ) -> None:
        caller = nonce is not None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        super().__init__(None, signer, sock=sock, identity=identity)
        self.node_id = node_id  # the worker's node (a caller's link): its death closes the link
        self.reader = SessionReader(signer, source, nonce, TO_CALLER if caller else TO_WORKER, me)
        self.out_header = (TO_WORKER if caller else TO_CALLER, 0)
        self.opened = time.monotonic()

    @classmethod
    def connect(cls, address: str, signer: protocol.Signer, identity: bytes, node_id: str) -> DirectLink:
        """Connect to a worker's listener at ``host:port`` (OSError if it cannot be reached)."""
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT)
        nonce = os.urandom(NONCE)
        link = cls(sock, signer, nonce, identity=identity, node_id=node_id, source=address)
        link.out.append(memoryview(hello(signer, nonce, identity)))
        return link

    def recv(self) -> list[list] | None:
        batches = super().recv()
        return None if self.reader.broken else batches

    def send(self, batch: list) -> None:
        body = pickle.dumps(batch, protocol.PROTOCOL)
        with self.lock:  # the sequence number and the order in `out` go together
            if self.closed:
                return
            direction, seq = self.out_header
            seq += 1
            self.out_header = (direction, seq)
            sig = self.signer.sign(body, self.reader.nonce + direction + _SEQ.pack(seq))
            self.out.append(memoryview(_LEN.pack(32 + len(body)) + sig + body))
            self._write()


def listen(host: str) -> socket.socket:
    """A worker's listener for direct links, on its node's address and a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(256)
    sock.setblocking(False)
    return sock


def accept(sock: socket.socket, signer: protocol.Signer, me: bytes) -> DirectLink:
    """The worker's end of a caller's new connection (`me`: the worker's identity)."""
    try:
        host, port = sock.getpeername()[:2]
        source = f"{host}:{port}"
    except OSError:
        source = "a caller that left"
    return DirectLink(sock, signer, None, source=source, me=me)
