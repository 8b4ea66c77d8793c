"""The wire protocol: every message kind, the task record, signing and framing.

A message on the wire is one ZeroMQ multipart message::

    [identity]          only on ROUTER sockets, added/removed by ZeroMQ
    signature           HMAC-SHA256(cluster key, "B" + header + body), 32 bytes
    header              sender (8 random bytes per sender), counter, time (ms): 24 bytes
    body                pickle of a *batch*: a list of messages

and each message in a batch is a plain tuple ``(Kind.X, field, ...)``.
Batching is what makes small tasks cheap: a burst of ``.remote()`` calls
becomes one frame, one signature and one syscall. A message with a large
payload (a CHUNK of an object) carries it as a fourth frame, signed as
``"D" + header + lengths + body + tag(payload)`` so frames cannot be
re-cut; the tag is a GMAC (AES-256-GCM over the payload as associated data)
under a key of that message's own, derived from its header: on the machines we
measure ~7 GB/s on a payload coming from memory (~20 GB/s in cache), against
~5 GB/s for the keyed BLAKE3 it replaced and ~1.2 GB/s for HMAC-SHA256. The receiver computes it itself before it
checks the HMAC (see `Signer.payload_tag` and docs/security.md).

A receiver drops a message whose counter is not above the last one it
accepted from that sender, or whose time is more than `REPLAY_WINDOW`
away from its own clock: a recorded message cannot be played again.
(Frames on the local Unix sockets, signed ``"L" + body``, carry no header:
only the cluster's user can reach those, see `transport.py`.)

The signature is checked **before** the body is unpickled; a message that
fails the check is dropped and counted, never deserialized. User code and
data inside a body are cloudpickled bytes that only the worker that runs
them unpickles.

Values (task results and `put` objects) travel as ``(object_id, is_error,
value, size, contained)`` where ``value`` is the pickled bytes when small
(inline) or the path of a shared-memory segment (a ``str``) when large.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import math
import os
import pickle
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import zmq

log = logging.getLogger(__name__)

PROTOCOL = 5  # pickle protocol
# Poll flags as plain ints: `ev & zmq.POLLOUT` goes through enum.Flag (~0.5 µs against
# ~0.03 µs), several times a turn in the node's loop and the I/O thread's.
POLLIN, POLLOUT, POLLERR = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.POLLERR)


def poll_ms(seconds: float | None) -> int:
    """A ZeroMQ poll's timeout for `seconds`: whole milliseconds, rounded up; -1 (none) for
    None or a negative time. ZeroMQ (and pyzmq's `Poller.poll`, which truncates a float)
    would wait 0 ms for anything under one: the last millisecond before each timer of a
    loop became a busy loop of empty polls (30-60 of them per tick in a driver's I/O
    thread, each taking the interpreter from the thread in get())."""
    if seconds is None or seconds < 0:
        return -1
    return math.ceil(seconds * 1000.0)


class Kind:
    """Message kinds. Fields follow the kind in each tuple."""

    # process (driver or worker) -> node
    HELLO = 1  # (role, pid, job_id, worker_id, sys_path, recv_identity, direct_port)
    SUBMIT = 2  # (TaskSpec)
    PUT = 3  # (object_id, is_error, value, size, contained)
    HOLD = 4  # (object_id,)          this process now holds a ref
    RELEASE = 5  # (object_id[, private])  this process dropped its last ref; private: it made
    #   the object and no ref to it ever left it (or came in), so no HOLD can be on its way
    SUBSCRIBE = 6  # (object_ids,)     send me these values when ready
    CANCEL = 7  # (task_id, "drop" | "steal" | "interrupt")   owner -> worker: skip or stop this task
    KILL_ACTOR = 8  # (actor_id, no_restart)
    DONE = 9  # (task_id, results, retryable, seconds it ran)   a worker finished a task
    BLOCKED = 10  # ()                worker waits in get(): lend its CPU
    UNBLOCKED = 11  # ()
    LOG = 12  # (owner, ctx, stream, text, label)
    FUNC_FETCH = 13  # (function_id,)
    ACTOR_READY = 14  # (actor_id, error_or_None)
    REQUEST = 15  # (request_id, op, args)   control-plane call, answered by REPLY
    BYE = 16  # ()
    REGISTER_FUNC = 17  # (function_id, blob, sys_path)
    LEASE_REQUEST = 18  # (request_id, shape, name)   lend me a worker for this shape
    LEASE_RETURN = 19  # (lease_id,)
    STATS = 20  # (running_by_name, queued_by_name)   what this owner runs through leases
    LEASE_CANCEL = 21  # (shape,)   drop my queued lease requests for this shape
    FORWARD = 22  # (node_id, identity, batch)   deliver `batch` to `identity` on another node
    #                                          (b"": that node itself); the node relays it
    SIGNAL = 23  # (worker_identity, signum)   cancel a task on a leased worker of this node
    FETCH = 24  # (request_id, [(path, move), ...])   copy these segments of other nodes here
    #            (what a direct link brought; move: a result, whose other copy then goes)
    TRANSIT = 25  # (paths,)   results sent over a direct link: kept until their owner's node moves them

    # node -> process
    EXECUTE = 30  # (task fields, resolved, gpu_ids)   fields: a TaskSpec as a plain tuple
    #              (`spec_of`); resolved: {object_id: (is_error, value)}
    RESULT = 31  # (object_id, is_error, value, size, contained)
    FUNC = 32  # (function_id, blob)
    EXIT = 34  # ()
    REPLY = 35  # (request_id, ok, payload)
    WELCOME = 36  # (node_id, info)
    LEASE_GRANT = 37  # (request_id, lease_id, worker_identity, socket_path, pid, shape, room, direct)
    LEASE_REVOKE = 38  # (lease_id,)   another owner waits: give it back when idle
    ACTOR_LOCATION = 39  # (actor_id, state, worker_identity, socket_path, pid, cause, node_id, direct)
    REJECTED = 40  # (task_ids,)   worker -> caller: not started, run them elsewhere
    FORWARDED = 41  # (node_id, identity, batch)   from `identity` on another node (b"": the node)
    PEER_CLOSED = 42  # (node_id, identity)   that remote worker's connection closed (it died)
    LEASE_SPILL = 43  # (request_id, shape, name, node_id)   ask that node instead
    NODE_DEAD = 44  # (node_id, reason)   a node left or missed its heartbeats
    ALIVE = 45  # ()   node -> a driver connected to its gateway, every second
    LEASE_KILLED = 46  # (lease_id, reason)   node -> lease owner: its memory monitor kills that worker
    FETCHED = 47  # (request_id, {path: local path, or None if lost})   answers FETCH

    # caller <-> worker, directly (leased tasks and actor calls; a Unix link on one node, a
    # DirectLink over TCP between nodes): EXECUTE, CANCEL, FUNC (caller -> worker),
    #   DONE, LOG, REJECTED (worker -> caller)

    # node <-> head
    NODE_HELLO = 50  # (node_id, address, resources, pid, hostname)
    NODE_REPORT = 51  # (node_id, NodeReport-as-dict)   heartbeat + status
    ACTOR_EVENT = 52  # (actor_id, name, namespace, state, node_id, meta)
    CLUSTER_VIEW = 53  # (nodes)   head -> nodes, every second: [{node_id, gateway, total, available}]
    NODE_LEAVE = 54  # (node_id,)   node -> head: stopping on purpose
    REJOIN = 55  # ()   head -> a node it does not know (it restarted): say NODE_HELLO again
    TASK_EVENTS = 56  # (node_id, [(name, start, end, ok, kind, worker_pid), ...])   node -> head,
    #                   next to NODE_REPORT: tasks finished since the last one (at most 1,000)

    # node <-> node (each sends on its own DEALER to the other's gateway ROUTER)
    RELAY = 60  # (src_node, src_identity, dest_identity, batch)   see FORWARD
    DELIVER = 61  # (dest_identity, src_node, src_identity, batch)   back to a client of the receiver
    PULL = 62  # (src_node, request_id, path, move)   send me this segment's bytes
    CHUNK = 63  # (request_id, offset, total, data)   total < 0: the segment is gone
    CLOSED = 64  # (dest_identity, src_node, src_identity)   a relayed worker connection closed
    GONE = 65  # (src_node, identity)   a client of the sender left: drop what it held here
    FREED = 66  # (src_node, path)   a segment of the sender that the receiver pulled a copy of
    #             is freed: the copy can go (to the receiver's spare segments)


KIND_NAMES = {v: k for k, v in vars(Kind).items() if isinstance(v, int)}

# Task kinds
TASK = 0
ACTOR_CREATE = 1
ACTOR_CALL = 2


class TaskSpec(NamedTuple):
    """One unit of work: a task, an actor's creation, or an actor call."""

    task_id: bytes
    kind: int  # TASK / ACTOR_CREATE / ACTOR_CALL
    name: str  # what status and logs show: "f", "Counter.__init__", "Counter.incr"
    function_id: bytes  # function or class; for ACTOR_CALL the method name (utf-8)
    args: bytes | str  # pickled (args, kwargs), refs as placeholders; or a segment path
    deps: tuple  # object ids of top-level ObjectRef arguments, in order
    contained: tuple  # ids of refs (and actor ids) nested inside the arguments
    return_ids: tuple  # object ids of the results
    owner: bytes  # identity that receives the results
    resources: tuple  # ((name, amount), ...) sorted
    max_retries: int
    retry_exceptions: bool
    actor_id: bytes  # b"" for plain tasks
    ctx: Any  # output context of the submitter, inherited by children
    options: dict | None  # actor creation: max_restarts, max_concurrency, name, ...

    def __reduce__(self):
        # The class and its fields: a named tuple's default reduction (copyreg.__newobj__,
        # __getnewargs__) pickles ~0.5 µs slower. (An EXECUTE carries no TaskSpec: `spec_of`.)
        return (TaskSpec, tuple(self))


SPEC_FIELDS = len(TaskSpec._fields)
SPEC_ARGS = TaskSpec._fields.index("args")
_tuple_new = tuple.__new__


def spec_of(fields: Any) -> TaskSpec | None:
    """The TaskSpec an EXECUTE carries as a plain tuple of its fields; None if it is not one.

    Plain, because pickle names a class in every message it is in: pickling a
    TaskSpec cost ~3.3 µs and unpickling ~3.1 µs here against ~1.0 and ~1.5 for its
    fields (warm; a sync task pays both on a cold cache, once per round trip)."""
    if type(fields) is not tuple or len(fields) != SPEC_FIELDS:
        return None
    return _tuple_new(TaskSpec, fields)


REPLAY_WINDOW = 300.0  # seconds of clock difference tolerated between machines
_HEADER = struct.Struct("<8sQQ")  # sender, counter, time in ms
_LENGTHS = struct.Struct("<QQ")  # body and payload sizes, inside the MAC of a 4-frame message
_GCM_NONCE = bytes(12)  # payload tags: each under a key of its own, so one nonce does
AUTH_FAILED = b"NBCLUSTER-AUTH-FAILED"  # the one unsigned answer: "your key is wrong"


_signers: weakref.WeakSet = weakref.WeakSet()  # every Signer of this process


def _new_senders() -> None:
    """In a forked child: a sender id of its own for every Signer, so parent and child never
    sign two messages with the same header (a payload tag's key comes from it)."""
    for signer in list(_signers):
        signer.sender = os.urandom(8)


os.register_at_fork(after_in_child=_new_senders)


@functools.cache
def _aesgcm() -> type:
    """`cryptography`'s AES-GCM, imported on the first payload tag: ~55 ms of imports that only
    node daemons moving objects need, kept off `import runtime`."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


class Signer:
    """HMAC-SHA256 with the cluster key, as Jupyter and ipyparallel sign; replay checks."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a cluster key is required")
        proto = hmac.new(key, digestmod=hashlib.sha256)
        # The keyed state with each format's tag already in (see `sign`): one copy, one update
        # and one digest per message. OpenSSL's object itself where hmac has one: the Python
        # wrapper's copy() costs twice the hashing of a small message (~1 µs vs ~3.8 µs a sign).
        self._local = self._tagged(proto, b"L")
        self._batch = self._tagged(proto, b"B")
        self._data = self._tagged(proto, b"D")
        # Payload tags get keys of their own (`payload_tag`): HMAC-SHA256 of the message header
        # under a key derived from the cluster key, so the cluster key is used in one primitive.
        payload_key = hmac.new(key, b"nbcluster payload tag key", hashlib.sha256).digest()
        self._tag_key = self._tagged(hmac.new(payload_key, digestmod=hashlib.sha256), b"")
        self.dropped = 0
        self.replayed = 0
        self.sender = os.urandom(8)  # a forked child gets a new one (`_new_senders`)
        self.counter = 0
        _signers.add(self)
        self.seen: dict[bytes, tuple[int, float]] = {}  # sender -> (last counter, when)
        self.rejected: set[bytes] = set()  # peers told AUTH_FAILED (once each)
        self.auth_failed = False  # a server told us our key is wrong
        self.last_failure = ""

    @staticmethod
    def _tagged(proto, tag: bytes):
        h = proto.copy()
        h.update(tag)
        return getattr(h, "_hmac", None) or h

    def sign(self, body: bytes, header: bytes = b"") -> bytes:
        # The format comes first ("B" batch, "L" local frame, "D" with a payload), so no
        # message can be re-read as one of another format.
        if header:
            h = self._batch.copy()
            h.update(header)
        else:
            h = self._local.copy()  # a local (Unix socket) frame
        h.update(body)
        return h.digest()

    def payload_tag(self, header: bytes, data) -> bytes:
        """GMAC of a payload (any buffer) under the key of the message with `header`: 16 bytes
        that stand for the payload in the HMAC.

        The key is HMAC-SHA256(payload key, header), so every message (a header is never
        accepted twice, see `fresh`) has a key of its own and GCM's nonce can be fixed.
        Forging a payload means a second input with the same tag under a key the forger
        does not have (docs/security.md). GMAC runs at ~7 GB/s on one core here on
        8 MiB coming from memory, ~20 GB/s in cache (AES-NI, carry-less multiply), and
        leaves the GIL; keyed BLAKE3 ran at ~5 and ~7 GB/s, HMAC-SHA256 at ~1.2 GB/s.
        """
        h = self._tag_key.copy()
        h.update(header)
        return _aesgcm()(h.digest()).encrypt(_GCM_NONCE, b"", data)

    def sign_data(self, header: bytes, body: bytes, data) -> bytes:
        """Header, body and a payload frame's tag; lengths included, so frames cannot be re-cut."""
        h = self._data.copy()
        h.update(header)
        h.update(_LENGTHS.pack(len(body), memoryview(data).nbytes))
        h.update(body)
        h.update(self.payload_tag(header, data))
        return h.digest()

    def verify(self, sig: bytes, body: bytes, header: bytes = b"") -> bool:
        return hmac.compare_digest(sig, self.sign(body, header))

    def header(self) -> bytes:
        self.counter += 1
        return _HEADER.pack(self.sender, self.counter, int(time.time() * 1000))

    def fresh(self, header: bytes) -> bool:
        """Not a replay: a new counter from this sender, sent around now."""
        sender, counter, ms = _HEADER.unpack(header)
        now = time.time()
        if abs(now - ms / 1000) > REPLAY_WINDOW:
            return False
        last = self.seen.get(sender)
        if last is not None and counter <= last[0]:
            return False
        self.seen[sender] = (counter, now)
        if len(self.seen) > 10_000:  # forget senders quiet for longer than the window
            self.seen = {k: v for k, v in self.seen.items() if now - v[1] < REPLAY_WINDOW}
        return True

    def drop(self, why: str, source: str) -> None:
        self.dropped += 1
        if self.dropped <= 10 or self.dropped % 1000 == 0:
            log.warning("dropped %s%s (%d so far)", why, f" from {source}" if source else "", self.dropped)


def pack(signer: Signer, batch: list) -> list[bytes]:
    body = pickle.dumps(batch, PROTOCOL)
    header = signer.header()
    return [signer.sign(body, header), header, body]


def pack_data(signer: Signer, msg: tuple, data) -> list:
    """One message whose large payload travels as a frame of its own (no pickling, no copy).

    The signature covers header, body and the payload's tag; the
    receiver gets the message with the payload appended as its last field,
    after both checked out. `data` may be any buffer (a view of a mapped
    segment: sent with ``copy=False``, it is never copied in this process).
    """
    body = pickle.dumps([msg], PROTOCOL)
    header = signer.header()
    return [signer.sign_data(header, body, data), header, body, data]


def unpack(signer: Signer, frames: list[bytes], source: str = "") -> list | None:
    """The batch in `frames`, or None (logged, counted) if unsigned, wrongly signed or replayed."""
    signer.last_failure = ""
    if len(frames) == 4 and len(frames[0]) == 32 and len(frames[1]) == _HEADER.size:
        if hmac.compare_digest(frames[0], signer.sign_data(frames[1], frames[2], frames[3])):
            if not signer.fresh(frames[1]):
                signer.last_failure = "replay"
                signer.replayed += 1
                signer.drop("a replayed or stale message", source)
                return None
            batch = _loads(frames[2])
            if not batch or len(batch) != 1 or not isinstance(batch[0], tuple):
                return None
            return [(*batch[0], frames[3])]
    if (
        len(frames) != 3
        or len(frames[0]) != 32
        or len(frames[1]) != _HEADER.size
        or not signer.verify(frames[0], frames[2], frames[1])
    ):
        signer.drop("an unsigned or wrongly signed message", source)
        signer.last_failure = "signature"
        return None
    if not signer.fresh(frames[1]):
        signer.last_failure = "replay"
        signer.replayed += 1
        signer.drop("a replayed or stale message", source)
        return None
    return _loads(frames[2])


def unpack_local(signer: Signer, sig: bytes, body: bytes, source: str = "") -> list | None:
    """A frame from a local Unix socket (no replay header): the batch, or None."""
    if len(sig) != 32 or not signer.verify(sig, body):
        signer.drop("an unsigned or wrongly signed message", source)
        return None
    return _loads(body)


def unpack_session(
    signer: Signer, sig: bytes, body: bytes, header: bytes, source: str = "", opener: Callable | None = None
) -> list | None:
    """A frame of a direct link (`direct.py`): signed over `header`, which the receiver expects;
    `opener` decrypts the body of an encrypted link's frame, once its signature holds."""
    if len(sig) != 32 or not signer.verify(sig, body, header):
        signer.drop("an unsigned, wrongly signed or replayed frame", source)
        return None
    if opener is not None:
        try:
            body = opener(body)
        except Exception:  # InvalidTag: sealed under another key or nonce
            signer.drop("a frame that could not be decrypted", source)
            return None
    return _loads(body)


def _loads(body: bytes) -> list | None:
    try:
        batch = pickle.loads(body)
    except Exception:  # signed by a peer with the key but unreadable: a bug, not an attack
        log.exception("dropped a signed message that could not be read")
        return None
    if not isinstance(batch, list):
        return None
    # Only (Kind, ...) tuples: a peer with the key must not crash us with anything else.
    return [m for m in batch if type(m) is tuple and m and type(m[0]) is int]


def send(sock: zmq.Socket, signer: Signer, batch: list, identity: bytes | None = None) -> None:
    frames = pack(signer, batch)
    if identity is not None:
        frames.insert(0, identity)
    sock.send_multipart(frames, copy=True)


def tune(sock: zmq.Socket) -> zmq.Socket:
    """Settings every socket of ours gets: no silent drops, no hang at close."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 20)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
    return sock


def router(ctx: zmq.Context) -> zmq.Socket:
    """A listening ROUTER: a peer that reconnects with its fixed identity (after a dropped
    connection) takes its old place instead of being refused."""
    sock = tune(ctx.socket(zmq.ROUTER))
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    return sock


def curve_server(sock: zmq.Socket, keys: dict) -> None:
    """CurveZMQ: encrypt and authenticate this listening socket with the cluster's keys."""
    sock.curve_server = True
    sock.curve_secretkey = keys["secret"].encode()
    sock.curve_publickey = keys["public"].encode()


def curve_client(sock: zmq.Socket, server_public: str) -> None:
    """CurveZMQ: a fresh key pair for this connection; the server must hold `server_public`."""
    public, secret = zmq.curve_keypair()
    sock.curve_serverkey = server_public.encode()
    sock.curve_publickey = public
    sock.curve_secretkey = secret


class IdSource:
    """Unique ids: home node (4 bytes) + 6 random bytes per process + a counter.

    The first four bytes name the node that keeps the objects (and actor
    records) this process creates: any node can tell where to ask about
    an id without a directory.
    """

    def __init__(self) -> None:
        self._home = bytes(4)
        self.reset()

    def set_home(self, node_id: str) -> None:
        self._home = bytes.fromhex(node_id)[:4].ljust(4, b"\0")
        self.reset()

    def reset(self) -> None:
        self._prefix = self._home + os.urandom(6)
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        return self._prefix + self._n.to_bytes(6, "little")


ID_SIZE = 16  # bytes of a task id; object ids add the return index


def home_of(any_id: bytes) -> str:
    """The node id that keeps this object or actor (see IdSource)."""
    return any_id[:4].hex()


ids = IdSource()
os.register_at_fork(after_in_child=ids.reset)


def object_id_for(task_id: bytes, index: int) -> bytes:
    """The id of a task's `index`-th return value."""
    return task_id + bytes((index,)) if index < 256 else task_id + index.to_bytes(2, "little")


def recv_batches(sock: zmq.Socket, signer: Signer, router: bool, limit: int = 1000, payloads: bool = False):
    """Yield (identity, batch) for every message waiting on `sock` (non-blocking).

    `payloads`: a message of the payload shape keeps its payload in ZeroMQ's own
    buffer (a memoryview, no copy); the other frames are copied as always.
    """
    shape = 5 if router else 4
    for _ in range(limit):
        try:
            if payloads:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                frames = [f.bytes for f in parts[:-1]]
                frames.append(parts[-1].buffer if len(parts) == shape else parts[-1].bytes)
            else:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return
        ident = frames.pop(0) if router else None
        if not router and frames == [AUTH_FAILED]:
            signer.auth_failed = True
            continue
        batch = unpack(signer, frames, source=repr(ident) if ident else "")
        if batch is not None:
            yield ident, batch
        elif router and signer.last_failure == "signature" and ident not in signer.rejected:
            if len(signer.rejected) >= 1000:
                signer.rejected.clear()  # bounded: a peer may then hear it twice
            # Tell a client with the wrong key, once, so it can say so instead of timing out.
            signer.rejected.add(ident)
            try:
                sock.send_multipart([ident, AUTH_FAILED], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
