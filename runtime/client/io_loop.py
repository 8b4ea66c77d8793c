"""The I/O loop of a process's core: who reads the sockets, and the driver's I/O thread.

::

    user thread in get()/wait() ──want_read──▶ takes read_lock, reads every socket itself
        (leader/follower: no hand-off between threads on the hot path, ~80 µs each)
    I/O thread (drivers) ── reads while nobody waits: live output, futures, results
        ├─ wake pipe: a burst of sends (one wake per burst) ─▶ Client.flush
        ├─ the head's ZeroMQ socket (and a ZLink to a node's gateway): only this thread
        └─ every TICK (0.1 s) while leases, calls, backoffs or interrupts are pending, else
           every IDLE_TICK (0.5 s): Client.tick (idle leases, stats, keepalive)
    worker main thread ── no I/O thread: Client.pump reads between tasks
    worker "watch" thread ── while one task runs over 20 ms: read_now, then wait_readable
        (a moment with read_lock, never while the main thread wants it; the wait without it)

Every socket read ends in `Client.dispatch` (messages) or
`Client.on_peer_closed` / `Client.mark_dead` (connections gone).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable

import zmq

from ..exceptions import ConnectionFailedError
from ..wire import direct, protocol, transport
from .services import CoreServices


def poll(rlist: list, wlist: list, timeout: float) -> tuple[list, list]:
    """`zmq.select(rlist, wlist, [], timeout)`'s readable and writable lists (fds and ZeroMQ
    sockets), through `zmq.zmq_poll` itself: `zmq.select` costs ~6.7 µs a call here against
    ~1 µs, and the I/O thread polls on every turn (each burst it sends, each DONE it reads)."""
    flags: dict = dict.fromkeys(rlist, protocol.POLLIN)
    for s in wlist:
        flags[s] = flags.get(s, 0) | protocol.POLLOUT
    readable, writable = [], []
    for s, events in zmq.zmq_poll(list(flags.items()), protocol.poll_ms(timeout)):
        if events & protocol.POLLIN:
            readable.append(s)
        if events & protocol.POLLOUT:
            writable.append(s)
    return readable, writable


class IOLoop:
    """The wake pipe, the read lock and the I/O thread of one `Client`."""

    def __init__(self, core: CoreServices) -> None:
        self.core = core
        self.read_lock = threading.Lock()  # reading: whoever holds it
        self.want_read = 0  # user threads waiting to read: the I/O thread yields to them
        self.thread: threading.Thread | None = None  # drivers only
        self.listener: socket.socket | None = None  # a worker's socket for its callers
        self.direct_listener: socket.socket | None = None  # ... on other nodes (direct.py)
        self.direct_keys: direct.KeyPair | None = None  # ... sealing for them (an encrypted cluster)
        self.last_tick = time.monotonic()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.wake_pending = False

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="runtime-io", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass

    def read_or_wait(self, timeout: float, done: Callable[[], bool] | None = None) -> None:
        """Read the sockets if no other thread does; else wait for that thread's news.

        `done` is checked once the sockets are ours: another thread may have
        read what we wait for just before it let go.
        """
        core = self.core
        if core.remote_driver and threading.current_thread() is not self.thread:
            got = False  # only the I/O thread may touch a ZeroMQ socket
        elif self.thread is None and self.read_lock.acquire(blocking=False):
            got = True  # a worker's main thread; its other threads wait on the condition
        elif self.thread is None and threading.current_thread() is threading.main_thread():
            # A worker's watch thread reads for a moment (read_now): wait for it.
            got = self.read_lock.acquire(timeout=timeout)
        elif self.thread is not None:
            # The holder is the I/O thread (about to yield: want_read) or another
            # waiting thread, which releases within one read.
            got = self.read_lock.acquire(timeout=timeout)
        else:
            got = False
        if got:
            try:
                if done is None or not done():
                    self.read(timeout)
            finally:
                self.read_lock.release()
        else:
            with core.cv:
                core.cv.wait(timeout)

    def read_now(self) -> bool:
        """A worker's other thread: read what waits, unless a thread reads or wants to
        (its main thread, in get(): it keeps the sockets); False then."""
        if self.want_read or not self.read_lock.acquire(blocking=False):
            return False
        try:
            self.read(0)
        finally:
            self.read_lock.release()
        return True

    def wait_readable(self, timeout: float, extra: int) -> list | None:
        """A worker's watch thread: wait (no lock, no interpreter) until a socket or the fd
        `extra` has something, at most `timeout`; what is ready (`extra` as itself), or
        None if a socket closed meanwhile."""
        try:
            ready, _, _ = select.select([*self.socks(self.links()), extra], [], [], timeout)
        except (OSError, ValueError):
            return None
        return ready

    def links(self) -> list[transport.Link]:
        core = self.core
        links = list(core.peers.values())
        if core.link is not None and not core.link.closed and not core.remote_driver:
            links.append(core.link)
        return links

    def socks(self, links: list[transport.Link]) -> list:
        """What a read waits on: the links' sockets, and the listeners new callers come to."""
        socks: list = [link.sock for link in links]
        if self.listener is not None:
            socks.append(self.listener)
            if self.direct_listener is not None:
                socks.append(self.direct_listener)
        return socks

    def read(self, timeout: float, extra: list | None = None) -> list:
        """Wait up to `timeout` for any socket; dispatch what came (holding read_lock)."""
        core = self.core
        links = self.links()  # once a read: this runs twice per sync task (each side)
        socks = self.socks(links)
        writing = {link.sock: link for link in links if link.wants_write}
        try:
            if extra:  # the I/O thread: also the wake pipe and the head's ZeroMQ socket
                by_fd = {s.fileno(): s for s in socks}
                by_fd.update((s.fileno(), s) for s in writing)
                ready, writable = poll(
                    [s.fileno() for s in socks] + extra, [s.fileno() for s in writing], timeout
                )
                ready = [by_fd.get(s, s) if isinstance(s, int) else s for s in ready]
                writable = [by_fd[s] for s in writable]
            else:
                ready, writable, _ = select.select(socks, list(writing), [], timeout)
        except (OSError, ValueError, zmq.ZMQError):
            return []
        for sock in writable:  # output that did not fit in the socket earlier
            writing[sock].flush_out()
        if core.link is not None and core.link.sock in ready and ready[0] is not core.link.sock:
            # The node first: what it says of a worker (LEASE_KILLED) comes before its socket closes.
            ready = [core.link.sock] + [s for s in ready if s is not core.link.sock]
        rest = []
        outbox = core.outbox
        outbox.reader = threading.get_ident()
        try:
            self.dispatch_ready(ready, rest)
        finally:
            outbox.reader = 0
        if core.outq:
            core.flush()  # what handling those messages queued (next tasks, HOLDs)
        return rest

    def dispatch_ready(self, ready: list, rest: list) -> None:
        """Read and dispatch each ready socket; the I/O thread's ZeroMQ ones go to `rest`."""
        core = self.core
        for sock in ready:
            if core.link is not None and sock is core.link.sock:
                batches = core.link.recv()
                if batches is None:
                    if not core.closed:
                        core.mark_dead(
                            f"the cluster at {core.head_address} is gone: the connection to its "
                            "node daemon closed (the cluster was stopped, or crashed); results not "
                            "received are lost. Call init() again to start or join a cluster (in a "
                            "notebook: %cluster start or %cluster connect)."
                        )
                    continue
                for batch in batches:
                    core.dispatch(batch, None)
            elif sock is self.listener or sock is self.direct_listener:
                self.accept(sock)
            elif isinstance(sock, (int, zmq.Socket)):
                rest.append(sock)
            else:
                link = core.peers.get(sock.fileno())
                if link is None:
                    continue
                batches = link.recv()
                if batches is None:
                    if link.direct and core.arrivals.holding(link):
                        del core.peers[sock.fileno()]  # closes after what waits for our node
                        core.arrivals.close_after(link)
                        continue
                    core.on_peer_closed(link)
                    link.close()
                    continue
                for batch in batches:
                    if link.direct:
                        batch = core.arrivals.take(batch, link)
                        if batch is None:
                            continue
                    core.dispatch(batch, link)

    def listen(self, path: str) -> None:
        """A worker: accept callers (task owners, actor callers) on `path`."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(256)
        sock.setblocking(False)
        self.listener = sock

    def listen_direct(self, host: str, sealed: bool = False) -> tuple[int, bytes]:
        """A worker: also accept callers on other nodes, over TCP on `host`; (the port, the
        public key its callers seal frames for: an encrypted cluster's, else b"")."""
        self.direct_listener = direct.listen(host)
        if sealed:
            self.direct_keys = direct.KeyPair()
        return self.direct_listener.getsockname()[1], self.direct_keys.public if self.direct_keys else b""

    def accept(self, listener: socket.socket) -> None:
        """New callers on one of a worker's listeners: a link each (signed for a session on TCP)."""
        core = self.core
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of file descriptors: that caller's connect fails
            if listener is self.direct_listener:
                link = direct.accept(sock, core.signer, core.identity, self.direct_keys)
            else:
                link = transport.Link(None, core.signer, sock=sock)
            core.peers[sock.fileno()] = link

    def run(self) -> None:
        core = self.core
        try:
            extra = [self.wake_r]
            if core.head_sock is not None:
                extra.append(core.head_sock)
            if core.remote_driver:
                extra.append(core.link.sock)
            while not core.closed:
                # Read the sockets only while no user thread waits in get().
                holding = not self.want_read and self.read_lock.acquire(blocking=False)
                try:
                    # Asleep until the next tick is due (a wake pipe write ends it sooner).
                    interval = core.tick_interval()
                    wait = min(interval, max(0.0, self.last_tick + interval - time.monotonic()))
                    if holding:
                        rest = self.read(wait, extra)
                    else:
                        rest, _ = poll(extra, [], wait)
                    if self.wake_r in rest:
                        self.wake_pending = False  # before draining: a later wake writes again
                        try:
                            while os.read(self.wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                    self.flush_head()
                    core.flush()
                    if core.remote_driver:
                        core.link.flush_out()
                        if core.link.sock in rest:
                            for batch in core.link.recv():
                                core.last_heard = time.monotonic()
                                core.dispatch(batch, None)
                            core.flush()
                            core.link.flush_out()
                    if core.head_sock is not None and core.head_sock in rest:
                        for _, batch in protocol.recv_batches(core.head_sock, core.signer, False):
                            core.dispatch(batch, None)
                        if core.signer.auth_failed:  # say so now, not when the request times out
                            core.control.fail_all(ConnectionFailedError(core.auth_failed_message()))
                    now = time.monotonic()
                    if now - self.last_tick >= interval:
                        self.last_tick = now
                        core.tick()
                finally:
                    if holding:
                        self.read_lock.release()
        except zmq.ContextTerminated:
            pass
        except Exception as e:  # never die silently: waiters must learn about it
            core.mark_dead(f"the runtime's I/O thread failed: {e!r}")
            raise

    def flush_head(self) -> None:
        """Send what user threads queued for the head (ZeroMQ: only this thread may)."""
        core = self.core
        outbox = core.head_outbox
        if not outbox:
            return
        batch = []
        while outbox:
            batch.append(outbox.popleft())
        if core.head_sock is not None:
            protocol.send(core.head_sock, core.signer, batch)

    def close(self) -> None:
        for sock in (self.listener, self.direct_listener):
            if sock is not None:
                sock.close()
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
