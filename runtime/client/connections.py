"""Connections: this process's connections to the workers it sends work to, and its callers.

::

    LEASE_GRANT / ACTOR_LOCATION ─▶ link(identity, path, node, direct)
        a worker of our node: a Unix socket of its own (Link), HELLO first
        a worker of another node that listens for direct links (sealed: "ip:port/key"):
            DirectLink: TCP to the worker itself (wire/direct.py); what it carries
            that names another node's segment waits for our node's copy (arrivals.py)
        any other worker of another node (or any, for a driver without a node), and one
        whose address could not be reached (remembered per node):
            RemoteLink ──FORWARD──▶ our node ══ gateways ══▶ its node ──▶ the worker
    a caller connects to us (a worker): IOLoop.accept ─▶ peers{fd: Link}
    socket closed, PEER_CLOSED (through the gateways) ─▶ closed(link):
        Leases.peer_closed (retry or fail its tasks), ActorCalls.peer_closed
    NODE_DEAD ─▶ node_dead: close the links to its workers (as above), void its lease requests
    cancel(force) ─▶ signal: SIGINT / SIGKILL to the worker (through its node if remote)
"""

from __future__ import annotations

import logging
import os
import signal as signals

from ..wire import direct, transport
from ..wire.protocol import Kind
from .records import Lease
from .services import CoreServices

log = logging.getLogger("runtime.client")


class Connections:
    """The links to workers by identity, and every direct socket by fd (the I/O loop reads them)."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core  # our node's link, who we are, the lock, leases and actor calls
        self.workers_by_identity: dict[bytes, transport.Link] = {}
        self.peers: dict[int, transport.Link] = {}  # fd -> link (workers we use, callers of ours)
        self.unreachable: set[str] = set()  # nodes whose workers' direct addresses failed us

    def link(
        self, identity: bytes, path: str, node_id: str = "", address: str = ""
    ) -> transport.Link | transport.RemoteLink | None:
        """A connection to a worker (of ours, or of another node: directly at `address`, or
        through our node); None if gone."""
        core = self.core
        link = self.workers_by_identity.get(identity)
        if link is not None and not link.closed:
            return link
        remote = core.remote_driver or (node_id and node_id != core.node_id)
        if remote and address and not core.remote_driver and node_id not in self.unreachable:
            try:
                return self.connect_direct(identity, node_id, address)
            except ConnectionRefusedError:
                return None  # its machine says nobody listens there: the worker is gone
            except OSError as e:
                # A firewall between the machines, or an address we cannot reach: the nodes'
                # relay still works. Try no other worker of that node directly.
                self.unreachable.add(node_id)
                log.warning(
                    "cannot reach %s directly (%s): calls to node %s go through the nodes",
                    address,
                    e,
                    node_id,
                )
        if remote:
            # Through our node (a driver without a node: through the one it uses).
            if core.link is None:
                return None
            link = transport.RemoteLink(node_id or core.node_id, identity, core.link)
            self.workers_by_identity[identity] = link
            return link
        try:
            link = transport.Link(path, core.signer, identity=identity)
        except OSError:
            return None
        return self.opened(link)

    def connect_direct(self, identity: bytes, node_id: str, address: str) -> direct.DirectLink:
        core = self.core
        return self.opened(direct.DirectLink.connect(address, core.signer, identity, node_id))

    def opened(self, link: transport.Link) -> transport.Link:
        """A new link to a worker: say who we are first; the I/O loop reads it from now on."""
        core = self.core
        link.send([(Kind.HELLO, core.role, os.getpid(), core.job_id, core.worker_id, [], core.identity, 0)])
        self.workers_by_identity[link.identity] = link
        self.peers[link.sock.fileno()] = link
        return link

    def drop_silent(self, now: float) -> None:
        """A worker: close direct connections that sent no valid HELLO within `direct.HELLO_WAIT`
        (anyone who can reach the port can open one; only a caller with the key gets further)."""
        for fd, link in list(self.peers.items()):
            if link.direct and link.reader.nonce is None and now - link.opened > direct.HELLO_WAIT:
                del self.peers[fd]
                link.close()

    def closed(self, link: transport.Link) -> None:
        """A worker we send work to is gone: retry its tasks, fail its actor's calls."""
        core = self.core
        with core.lock:
            if isinstance(link, transport.Link):
                self.peers.pop(link.sock.fileno(), None)
            if self.workers_by_identity.get(link.identity) is link:
                del self.workers_by_identity[link.identity]
            core.arrivals.forget(link)
            core.leases.peer_closed(link)
            core.actor_calls.peer_closed(link)

    def node_dead(self, node_id: str) -> None:
        """Another node is gone: its workers' tasks are retried, its lease requests void."""
        core = self.core
        with core.lock:
            for link in [
                x for x in self.workers_by_identity.values() if getattr(x, "node_id", "") == node_id
            ]:
                link.close()
                self.closed(link)
            core.leases.on_node_dead(node_id)

    def signal(self, lease: Lease, force: bool) -> None:
        """Interrupt the task running on a leased worker: SIGINT (KeyboardInterrupt), or SIGKILL."""
        signum = signals.SIGKILL if force else signals.SIGINT
        if lease.node:
            self.core.to_node(lease.node, (Kind.SIGNAL, lease.link.identity, signum))
        else:
            try:
                os.kill(lease.pid, signum)
            except ProcessLookupError:
                pass
