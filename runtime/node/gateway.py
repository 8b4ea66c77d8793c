"""A node's door to the other nodes: relayed connections and object transfer.

Every node listens on one ZeroMQ ROUTER socket over TCP (the *gateway*,
CurveZMQ-encrypted when the cluster is) and sends to each other node on a
DEALER connected to that node's gateway. Processes on a machine never
touch the network: they hand their node a FORWARD, and the two nodes relay
it, so the Unix-socket fast path stays as it is and encryption lives in
one place per machine.

::

    client X (node A) ──FORWARD(B, W, batch)──▶ node A ──RELAY(A, X, W, batch)──▶ node B
                                                                      │ pull foreign segments
                                                                      ▼ (Stream keeps order)
                                            worker W ◀── Unix link (X, W) ── node B
    worker W ──DONE/LOG──▶ node B ──DELIVER(X, B, W, batch)──▶ node A ─┐ pull (move) the
                                                                       │ results' segments
    client X ◀──FORWARDED(B, W, batch)──────────────────────────────────┘

    RELAY(…, dest=b"")  requests to node B itself (leases, actors, objects)
    PULL(A, id, path)   ──▶ B ──CHUNK × n──▶ A writes a local segment; at
                        most MAX_PULLS at once, one pull per object per node

Values are never copied between machines unless a process there needs
them: a task's large arguments are pulled by the node that runs it, and a
task's large results are moved to the node of the task's owner (objects
live with their owner, so a node's loss loses only what its own processes
owned).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import zmq

from ..wire import paths, protocol, transport
from ..wire.protocol import Kind
from .transfer import Transfers, read_file

log = logging.getLogger("runtime.gateway")

PEER_KINDS = frozenset((Kind.RELAY, Kind.DELIVER, Kind.PULL, Kind.CHUNK, Kind.CLOSED, Kind.GONE, Kind.FREED))


class Stream:
    """Batches that must reach one destination in order, each after its transfers."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: deque[list] = deque()  # [batch, transfers left, {remote path: local path or None}]


class Peer:
    __slots__ = ("node_id", "address", "sock", "out")

    def __init__(self, node_id: str, address: str) -> None:
        self.node_id, self.address = node_id, address
        self.sock: zmq.Socket | None = None
        self.out: list = []


class GatewayHost(Protocol):
    """What the gateway needs of its node daemon (`daemon.Node` is one).

    The gateway depends on this interface, not on the daemon, so the two
    modules do not import each other.
    """

    node_id: str
    cluster_id: str
    cluster_dir: Path
    signer: protocol.Signer
    poller: zmq.Poller
    view: dict[str, dict]  # the cluster, from the head: node id -> summary
    remote: dict[bytes, str]  # clients of other nodes (and nodes, b"n"+id) -> node
    relayed_to: dict[bytes, set[str]]  # our clients -> nodes they talk to
    by_identity: dict[bytes, Any]  # our workers by identity
    handlers: dict[int, Callable[[bytes, tuple], None]]

    def emit(self, ident: bytes, msg: tuple) -> None: ...
    def tell_location(self, ident: bytes, actor_id: bytes) -> None: ...
    def on_direct(self, ident: bytes, msg: tuple) -> None: ...
    def on_peer_message(self, src_node: str, msg: tuple) -> None: ...
    def drop_process(self, ident: bytes) -> None: ...


class Gateway:
    def __init__(self, node: GatewayHost, ctx: zmq.Context, host: str, port: int, curve: dict | None) -> None:
        self.node = node
        self.ctx = ctx
        self.signer = node.signer
        self.curve = curve
        self.router = protocol.router(ctx)
        if curve:
            protocol.curve_server(self.router, curve)
        if port:
            self.router.bind(f"tcp://{host}:{port}")
        else:
            port = self.router.bind_to_random_port(f"tcp://{host}")
        self.port = port
        self.peers: dict[str, Peer] = {}
        self.links: dict[tuple[bytes, bytes], transport.Link] = {}  # (client, worker) -> Unix link
        self.by_fd: dict[int, tuple[bytes, str, bytes, transport.Link]] = {}
        self.streams: dict[tuple, Stream] = {}
        self.transfers = Transfers(
            node.node_id,
            node.cluster_id,
            node.cluster_dir,
            self.signer,
            self.send,
            self._socket_to,
            self._reachable,
        )
        self.serving = self.transfers.serving  # transfers we serve: the node pumps them every turn
        self.pump = self.transfers.pump
        self.written_fd = self.transfers.writer.fileno()  # the node polls it: then on_written()
        self.on_written = self.transfers.on_written
        self.tick = self.transfers.tick

    @property
    def bytes_in(self) -> int:
        return self.transfers.bytes_in

    @property
    def bytes_out(self) -> int:
        return self.transfers.bytes_out

    # ------------------------------------------------------------- sending
    def peer(self, node_id: str) -> Peer | None:
        peer = self.peers.get(node_id)
        if peer is None:
            info = self.node.view.get(node_id)
            if info is None or not info.get("alive", True):
                return None
            peer = self.peers[node_id] = Peer(node_id, info["gateway"])
        return peer

    def send(self, node_id: str, msg: tuple) -> bool:
        peer = self.peer(node_id)
        if peer is None:
            return False
        peer.out.append(msg)
        return True

    def socket(self, peer: Peer) -> zmq.Socket:
        if peer.sock is None:
            sock = protocol.tune(self.ctx.socket(zmq.DEALER))
            if self.curve:
                protocol.curve_client(sock, self.curve["public"])
            sock.connect(peer.address)
            peer.sock = sock
        return peer.sock

    def flush(self) -> None:
        for peer in self.peers.values():
            if peer.out:
                batch, peer.out = peer.out, []
                protocol.send(self.socket(peer), self.signer, batch)

    def _socket_to(self, node_id: str) -> zmq.Socket | None:
        """The socket to a node, with what was queued for it sent first; None if it is gone."""
        peer = self.peer(node_id)
        if peer is None:
            return None
        self.flush()
        return self.socket(peer)

    def _reachable(self, node_id: str) -> bool:
        return self.peer(node_id) is not None

    def forget_peer(self, node_id: str) -> None:
        peer = self.peers.pop(node_id, None)
        if peer is not None and peer.sock is not None:
            peer.sock.close(linger=0)

    # ------------------------------------------------- from local processes
    def forward(self, ident: bytes, node_id: str, dest: bytes, batch: list) -> None:
        """A local client sends `batch` to `dest` on node `node_id` (b"": the node itself)."""
        if node_id == self.node.node_id:
            self.on_relay(self.node.node_id, ident, dest, batch)
            return
        if not self.send(node_id, (Kind.RELAY, self.node.node_id, ident, dest, batch)):
            # That node is gone: the client retries elsewhere when it hears so.
            self.node.emit(ident, (Kind.NODE_DEAD, node_id, "it is not part of the cluster (any more)"))
            for msg in batch if not dest else ():
                if msg[0] == Kind.REQUEST and msg[2] == "actor_location":
                    self.node.tell_location(ident, msg[3][0])
            return
        self.node.relayed_to.setdefault(ident, set()).add(node_id)

    # ---------------------------------------------------------- receiving
    def read(self) -> None:
        # At most ~50 ms per loop turn: a burst of 8 MiB chunks must not keep the node from
        # its heartbeat (the head declared a node busy pulling 320 MB on a loaded machine
        # dead). What is left stays in the socket, which polls readable again at once.
        deadline = time.monotonic() + 0.05
        for ident, batch in protocol.recv_batches(self.router, self.signer, True, payloads=True):
            for msg in batch:
                try:
                    if msg[0] in PEER_KINDS:
                        self.handle(msg)
                    else:  # a driver on a machine without a node uses us as its node
                        self.node.on_direct(ident, msg)
                except Exception:
                    log.exception("error handling %s", protocol.KIND_NAMES.get(msg[0], msg[0]))
            if time.monotonic() > deadline:
                break

    def send_direct(self, ident: bytes, batch: list) -> None:
        """To a driver connected straight to our gateway: segments go inline, it cannot map them."""
        out = []
        for msg in batch:
            kind = msg[0]
            if kind == Kind.RESULT and isinstance(msg[3], str):
                msg = (kind, msg[1], msg[2], read_file(msg[3], False), *msg[4:])
            elif kind == Kind.FORWARDED:
                inner = []
                for m in msg[3]:
                    if m[0] == Kind.DONE:
                        results = [
                            (oid, err, read_file(v, True) if isinstance(v, str) else v, size, contained)
                            for oid, err, v, size, contained in m[2]
                        ]
                        m = (m[0], m[1], results, *m[3:])
                    inner.append(m)
                msg = (kind, msg[1], msg[2], inner)
            out.append(msg)
        try:
            self.router.send_multipart([ident, *protocol.pack(self.signer, out)], zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.warning("could not send to driver %r: %s", ident, e)

    def handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == Kind.RELAY:
            _, src_node, src_ident, dest, batch = msg
            self.on_relay(src_node, src_ident, dest, batch)
        elif kind == Kind.DELIVER:
            _, dest, src_node, src_ident, batch = msg
            self.on_deliver(dest, src_node, src_ident, batch)
        elif kind == Kind.CLOSED:
            _, dest, src_node, src_ident = msg
            key = (dest, src_node, src_ident)
            stream = self.streams.get(key)
            if stream is not None and stream.items:
                stream.items.append([None, 0, {}])  # after what is still being moved
            else:
                self.node.emit(dest, (Kind.PEER_CLOSED, src_node, src_ident))
        elif kind == Kind.GONE:
            _, src_node, ident = msg
            self.drop_client(ident)
            self.node.drop_process(ident)
        elif kind == Kind.PULL:
            self.transfers.serve_pull(*msg[1:])
        elif kind == Kind.CHUNK:
            self.transfers.on_chunk(*msg[1:])
        elif kind == Kind.FREED:
            self.transfers.on_freed(*msg[1:])
        else:
            log.warning("unexpected %s on the gateway", protocol.KIND_NAMES.get(kind, kind))

    def on_relay(self, src_node: str, src_ident: bytes, dest: bytes, batch: list) -> None:
        node = self.node
        ident = src_ident or b"n" + src_node.encode()
        if src_node != node.node_id:
            node.remote[ident] = src_node
        key = (ident, dest)
        if dest:
            target = node.by_identity.get(dest)
            if target is None:
                node.emit(ident, (Kind.PEER_CLOSED, node.node_id, dest))
                return
        self.enqueue(key, batch, src_node)

    def on_deliver(self, dest: bytes, src_node: str, src_ident: bytes, batch: list) -> None:
        self.enqueue((dest, src_node, src_ident), batch, src_node)

    # ------------------------------------------------------ ordered delivery
    def enqueue(self, key: tuple, batch: list, src_node: str) -> None:
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream()
        wanted = paths.foreign_paths(batch, self.node.node_id)
        item = [batch, len(wanted), {}]
        stream.items.append(item)
        for path, move in wanted:
            self.transfers.fetch(
                path, move, lambda local, p=path, it=item, k=key: self._fetched(k, it, p, local)
            )
        self.drain(key)

    def _fetched(self, key: tuple, item: list, path: str, local: str | None) -> None:
        item[2][path] = local
        item[1] -= 1
        self.drain(key)

    def drain(self, key: tuple) -> None:
        stream = self.streams.get(key)
        if stream is None:
            return
        while stream.items and stream.items[0][1] == 0:
            batch, _, mapping = stream.items.popleft()
            if batch is None:  # a CLOSED that waited for earlier deliveries
                self.node.emit(key[0], (Kind.PEER_CLOSED, key[1], key[2]))
                continue
            if mapping:
                batch = paths.rewrite(batch, mapping)
            self.dispatch(key, batch)
        if not stream.items:
            del self.streams[key]

    def dispatch(self, key: tuple, batch: list) -> None:
        node = self.node
        if len(key) == 3:  # DELIVER: to a local client, or to this node
            dest, src_node, src_ident = key
            if dest:
                node.emit(dest, (Kind.FORWARDED, src_node, src_ident, batch))
            else:
                for msg in batch:
                    node.on_peer_message(src_node, msg)
            return
        ident, dest = key
        if not dest:
            for msg in batch:
                handler = node.handlers.get(msg[0])
                if handler is None or msg[0] == Kind.HELLO:
                    log.warning("unexpected relayed %s", protocol.KIND_NAMES.get(msg[0], msg[0]))
                    continue
                try:
                    handler(ident, msg)
                except Exception:
                    log.exception("error handling relayed %s", protocol.KIND_NAMES.get(msg[0], msg[0]))
            return
        link = self.links.get(key)
        if link is None or link.closed:
            w = node.by_identity.get(dest)
            if w is None:
                node.emit(ident, (Kind.PEER_CLOSED, node.node_id, dest))
                return
            try:
                link = transport.Link(w.path, self.signer, identity=dest)
            except OSError:
                node.emit(ident, (Kind.PEER_CLOSED, node.node_id, dest))
                return
            src_node = node.remote.get(ident, node.node_id)
            self.links[key] = link
            self.by_fd[link.fileno()] = (ident, src_node, dest, link)
            node.poller.register(link.fileno(), zmq.POLLIN)
            link.send([(Kind.HELLO, "relay", os.getpid(), 0, 0, [], ident, 0)])
        link.send(batch)
        if link.wants_write:
            node.poller.modify(link.fileno(), zmq.POLLIN | zmq.POLLOUT)

    # ------------------------------------------- relayed worker connections
    def on_link_event(self, fd: int, ev: int) -> None:
        entry = self.by_fd.get(fd)
        if entry is None:
            return
        ident, src_node, worker_ident, link = entry
        if ev & protocol.POLLOUT:
            link.flush_out()
            if not link.wants_write:
                self.node.poller.modify(fd, zmq.POLLIN)
        if not ev & (protocol.POLLIN | protocol.POLLERR):
            return
        batches = link.recv()
        if batches is None:
            self.close_link(fd)
            self.reply(ident, src_node, (Kind.CLOSED, ident, self.node.node_id, worker_ident), worker_ident)
            return
        for batch in batches:
            for msg in batch:
                if msg[0] == Kind.DONE:
                    self.transfers.note_transit([r[2] for r in msg[2] if isinstance(r[2], str)])
            self.reply(
                ident, src_node, (Kind.DELIVER, ident, self.node.node_id, worker_ident, batch), worker_ident
            )

    def reply(self, ident: bytes, src_node: str, msg: tuple, worker_ident: bytes) -> None:
        """To a client of another node (or of this one, for a remote driver of ours)."""
        if src_node == self.node.node_id:
            if msg[0] == Kind.DELIVER:
                self.node.emit(ident, (Kind.FORWARDED, self.node.node_id, worker_ident, msg[4]))
            else:
                self.node.emit(ident, (Kind.PEER_CLOSED, self.node.node_id, worker_ident))
            return
        self.send(src_node, msg)

    def close_link(self, fd: int) -> None:
        entry = self.by_fd.pop(fd, None)
        if entry is None:
            return
        ident, _, worker_ident, link = entry
        self.links.pop((ident, worker_ident), None)
        try:
            self.node.poller.unregister(fd)
        except KeyError:
            pass
        link.close()

    def drop_client(self, ident: bytes) -> None:
        """A client of another node left: close its connections to our workers."""
        for fd, entry in list(self.by_fd.items()):
            if entry[0] == ident:
                self.close_link(fd)

    def drop_node(self, node_id: str) -> None:
        """A node died: forget its clients, connection and transfers."""
        self.forget_peer(node_id)
        for fd, entry in list(self.by_fd.items()):
            if entry[1] == node_id:
                self.close_link(fd)
        self.transfers.drop_node(node_id)
        for key in [k for k in self.streams if len(k) == 3 and k[1] == node_id]:
            stream = self.streams[key]
            if stream.items and stream.items[-1][0] is not None:
                stream.items.append([None, 0, {}])

    def close(self) -> None:
        self.transfers.close()
        for fd in list(self.by_fd):
            self.close_link(fd)
        for peer in self.peers.values():
            if peer.sock is not None:
                peer.sock.close(linger=0)
        self.router.close(linger=0)
