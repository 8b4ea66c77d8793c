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

In an encrypted cluster (CurveZMQ, the default beyond loopback) every frame
is also encrypted, with keys of this connection alone::

    worker: an X25519 key pair of its own (made when it starts; the public half reaches
        callers with LEASE_GRANT / ACTOR_LOCATION, signed, and between machines under CurveZMQ)
    caller: a fresh X25519 key pair per connection; HELLO = "NBCE" ‖ replay header ‖ nonce ‖
        its public key ‖ HMAC(key, "B" ‖ header ‖ "direct" ‖ nonce ‖ public key ‖ worker identity)
    both: HKDF-SHA256(X25519 shared secret, salt = nonce, info = worker identity)
        ─▶ one AES-256-GCM key per direction; a frame's body is sealed under its sequence
           number, then signed as above (checked before it is opened)

A worker of an encrypted cluster takes only "NBCE" HELLOs (no downgrade),
and only the worker can open what its caller seals: the caller's secret
half lives for one connection, the worker's for one process (forward
secrecy as CurveZMQ's). See docs/security.md, "Direct links". Values in
shared memory are not carried:
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
SEALED = b"NBCE"  # the HELLO of an encrypted link
_SEQ = struct.Struct("<Q")
NONCE = 16
PUBLIC = 32  # bytes of an X25519 public key
HELLO_SIZE = len(MAGIC) + 24 + NONCE + 32  # magic, replay header, nonce, signature
SEALED_HELLO_SIZE = HELLO_SIZE + PUBLIC  # ... and the caller's public key
CONNECT_TIMEOUT = 1.0  # s: a worker whose port cannot be reached by then is reached through the nodes
HELLO_WAIT = 10.0  # s: a connection to a worker without a valid HELLO by then is closed
TO_WORKER, TO_CALLER = b">", b"<"


def hello(signer: protocol.Signer, nonce: bytes, worker: bytes, public: bytes = b"") -> bytes:
    """A caller's first bytes to `worker` (its identity): this session's nonce (and, sealed,
    the caller's public key), signed for it."""
    header = signer.header()
    magic = SEALED if public else MAGIC
    return magic + header + nonce + public + signer.sign(b"direct" + nonce + public + worker, header)


def address_of(host: str, port: int, public: bytes = b"") -> str:
    """What callers are told of a worker's listener: "ip:port", sealed "ip:port/<public key hex>"."""
    return f"{host}:{port}/{public.hex()}" if public else f"{host}:{port}"


class KeyPair:
    """An X25519 key pair: a worker's (one per process) or a caller's (one per connection)."""

    def __init__(self) -> None:
        x25519 = _crypto()[0]
        self.secret = x25519.X25519PrivateKey.generate()
        self.public = self.secret.public_key().public_bytes_raw()

    def sessions(self, peer_public: bytes, nonce: bytes, worker: bytes) -> tuple:
        """(AESGCM to the worker, AESGCM to the caller) of the link with this nonce."""
        x25519, aesgcm, hkdf, hashes = _crypto()
        shared = self.secret.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        keys = hkdf(hashes.SHA256(), 64, nonce, b"nbcluster direct link " + worker).derive(shared)
        return aesgcm(keys[:32]), aesgcm(keys[32:])


def _crypto() -> tuple:
    """`cryptography`'s X25519, AES-GCM, HKDF and hashes, imported on first use (~70 ms: only
    encrypted clusters pay it, and their zygote imports it before forking workers)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return x25519, AESGCM, HKDF, hashes


def preload() -> None:
    """Import the cryptography an encrypted cluster's workers use (the zygote, before forking)."""
    _crypto()


def _gcm_nonce(direction: bytes, seq: int) -> bytes:
    return direction + b"\0\0\0" + _SEQ.pack(seq)


class SessionReader(FrameReader):
    """Frames of one direct link, each checked against the next sequence number it must carry.

    On the worker's side the first bytes are the caller's HELLO, checked
    (signature, then freshness) before any frame is read.
    """

    def __init__(
        self,
        signer: protocol.Signer,
        source: str,
        nonce: bytes | None,
        direction: bytes,
        me: bytes = b"",
        keys: KeyPair | None = None,
    ) -> None:
        super().__init__(signer, source)
        self.nonce = nonce  # None: the HELLO is still to come
        self.me = me  # the worker's identity, which its callers' HELLO must be signed for
        self.direction = direction
        self.seq = 0
        self.keys = keys  # a worker of an encrypted cluster: its key pair (sealed HELLOs only)
        self.opener = None  # AESGCM of the frames we receive (an encrypted link)
        self.sealer = None  # ... and of those we send (the link takes it after the HELLO)

    def feed(self, data) -> list[list]:
        if self.nonce is None:
            self.buf += data
            size = SEALED_HELLO_SIZE if self.keys is not None else HELLO_SIZE
            if len(self.buf) < size:
                return []
            first = bytes(self.buf[:size])
            del self.buf[:size]
            self.nonce = self._hello(first)
            if self.nonce is None:
                self.broken = True
                return []
            data, self.buf = bytes(self.buf), bytearray()
        return super().feed(data)

    def _hello(self, first: bytes) -> bytes | None:
        signer = self.signer
        magic, header, nonce = first[:4], first[4:28], first[28 : 28 + NONCE]
        public = first[28 + NONCE : 28 + NONCE + PUBLIC] if self.keys is not None else b""
        sig = first[28 + NONCE + len(public) :]
        expected = SEALED if self.keys is not None else MAGIC
        if magic != expected or not signer.verify(sig, b"direct" + nonce + public + self.me, header):
            signer.drop("a direct connection with a wrong signature", self.source)
            return None
        if not signer.fresh(header):
            signer.replayed += 1
            signer.drop("a replayed direct connection", self.source)
            return None
        if self.keys is not None:
            try:
                self.opener, self.sealer = self.keys.sessions(public, nonce, self.me)
            except ValueError:  # not a point X25519 takes
                signer.drop("a direct connection with a bad key", self.source)
                return None
        return nonce

    def check(self, sig, body) -> list | None:
        self.seq += 1
        header = self.nonce + self.direction + _SEQ.pack(self.seq)
        opener = self.opener
        if opener is None:
            batch = protocol.unpack_session(self.signer, sig, body, header, self.source)
        else:
            nonce = _gcm_nonce(self.direction, self.seq)
            batch = protocol.unpack_session(
                self.signer, sig, body, header, self.source, lambda b: opener.decrypt(nonce, bytes(b), None)
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
        keys: KeyPair | None = None,
    ) -> None:
        caller = nonce is not None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        super().__init__(None, signer, sock=sock, identity=identity)
        self.node_id = node_id  # the worker's node (a caller's link): its death closes the link
        self.reader = SessionReader(signer, source, nonce, TO_CALLER if caller else TO_WORKER, me, keys)
        self.out_header = (TO_WORKER if caller else TO_CALLER, 0)
        self.opened = time.monotonic()

    @classmethod
    def connect(cls, address: str, signer: protocol.Signer, identity: bytes, node_id: str) -> DirectLink:
        """Connect to a worker's listener at ``host:port`` (OSError if it cannot be reached);
        encrypted when the address carries the worker's public key (``host:port/key``)."""
        address, _, worker_public = address.partition("/")
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT)
        nonce = os.urandom(NONCE)
        link = cls(sock, signer, nonce, identity=identity, node_id=node_id, source=address)
        public = b""
        if worker_public:
            mine = KeyPair()
            public = mine.public
            to_worker, to_caller = mine.sessions(bytes.fromhex(worker_public), nonce, identity)
            link.reader.opener, link.reader.sealer = to_caller, to_worker
        link.out.append(memoryview(hello(signer, nonce, identity, public)))
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
            sealer = self.reader.sealer
            if sealer is not None:  # encrypted, then signed: the check comes before the opening
                body = sealer.encrypt(_gcm_nonce(direction, seq), body, None)
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


def accept(
    sock: socket.socket, signer: protocol.Signer, me: bytes, keys: KeyPair | None = None
) -> DirectLink:
    """The worker's end of a caller's new connection (`me`: the worker's identity; `keys`:
    its key pair in an encrypted cluster, whose callers must seal)."""
    try:
        host, port = sock.getpeername()[:2]
        source = f"{host}:{port}"
    except OSError:
        source = "a caller that left"
    return DirectLink(sock, signer, None, source=source, me=me, keys=keys)
