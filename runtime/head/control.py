"""The head: the cluster's address and its control store. Never on a task's path.

::

    drivers ──REQUEST(hello | nodes | snapshot | events | register_name | lookup_name | shutdown)─┐
              (release_names: a driver that ends lets go of its actors' names)                    │
    nodes   ──NODE_HELLO, NODE_REPORT + TASK_EVENTS (every second), ACTOR_EVENT (named actors)────┤
                                                                                         ▼
                          ROUTER tcp://host:port ─▶ nodes{}, names{}, jobs ─▶ REPLY / EXIT / REJOIN
                                                        │ every change that matters, before the reply
                                                        │ (task events: a ring of the last minute,
                                                        │  in memory only, events.py)
                                                        ▼
                                       control.db (store.py) ─▶ read back by a head started again
    every second ─▶ CLUSTER_VIEW to each live node (membership.forgotten: long-dead ones dropped)
    a node silent for node_timeout s (membership.silent) ─▶ node_dead ─▶ NODE_DEAD to the
        other live nodes (membership.told); its later reports get EXIT (restore.on_report)

Who is alive is decided apart from I/O in `membership.py` (and, after a
restart, whom to trust in `restore.py`); this module keeps the socket, the
clock and the state.

The head process also forks the head machine's node daemon at start-up
(before any ZeroMQ context exists), so ``nbcluster start --head`` and an
embedded ``init()`` cost one Python start-up. Its life is tied to its
owner: an embedded head (started by ``init()``) exits when its driver's
pipe closes, even after ``kill -9`` of the driver; the node it forked
exits with it; the node's zygote takes the workers and the shared memory
with it. The node of ``nbcluster start --head`` outlives its head instead,
so that a head started again finds it (`lifetime.py`; `restore.py` decides
what a restarted head trusts).

Start-up protocol: the launcher writes one JSON line of settings to the
head's stdin; the head answers one JSON line (the connection info) on
stdout once its node has registered, then writes only to its log file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import secrets
import signal
import socket
import sys
import time
from typing import Any

import zmq

from .. import config as cfg
from ..prctl import set_process_name
from ..wire import protocol
from ..wire.protocol import Kind
from . import membership, restore
from .events import EventRing, valid
from .lifetime import fork_node, remove_folder, wait_node
from .membership import FORGET, NODE_TIMEOUT
from .store import ControlStore, Stored, path_in

log = logging.getLogger("runtime.head")
MAX_MESSAGE = 64 << 20  # bytes; larger messages to the head are refused by ZeroMQ


class Head:
    def __init__(self, conf: dict, info: cfg.ConnectionInfo, store: ControlStore | None = None) -> None:
        self.conf = conf
        self.info = info
        self.signer = protocol.Signer(bytes.fromhex(info.key))
        self.nodes: dict[str, dict[str, Any]] = {}
        self.node_idents: dict[str, bytes] = {}
        self.names: dict[tuple[str, str], dict[str, Any]] = {}
        self.next_job = 1
        self.running = True
        self.out: dict[bytes, list] = {}
        self.node_timeout = float(conf.get("node_timeout", NODE_TIMEOUT))
        self.next_view = 0.0
        self.view_due = False  # membership changed this turn: send the view once, after it
        self.store = store  # every change that matters is written there before it is answered
        self.restored: Stored | None = None
        self.events = EventRing()  # the task stream of every node: the last minute

    def restore(self, stored: Stored) -> None:
        """Take back what a head of this cluster stored before it died (`restore.trusted_nodes`)."""
        self.restored = stored
        self.nodes = restore.trusted_nodes(
            stored.nodes, time.monotonic(), time.time(), self.node_timeout, FORGET
        )
        self.names = dict(stored.names)
        self.next_job = stored.next_job
        log.info(
            "restored %d nodes (%d alive), %d named actors, %d jobs; next job %d",
            len(self.nodes),
            sum(n["alive"] for n in self.nodes.values()),
            len(self.names),
            len(stored.jobs),
            self.next_job,
        )

    def persist(self, op: str, *args: Any) -> None:
        """Write a change to the control store (a no-op without one); raises if the disk refuses."""
        if self.store is not None:
            getattr(self.store, op)(*args)

    def send_view(self, sock: zmq.Socket) -> None:
        """Every second (and after a membership change, once per turn): each node learns
        what the others have, for spillback and actors. Pickled once, signed per node."""
        now = time.monotonic()
        self.next_view = now + 1.0
        self.view_due = False
        for node_id in membership.forgotten(self.nodes, now):
            del self.nodes[node_id]  # dead for long: out of every view
            self.node_idents.pop(node_id, None)
            self.persist("forget_node", node_id)
        self.flush(sock)  # what was emitted before (NODE_DEAD) goes first
        view = [
            {
                "node_id": n["node_id"],
                "gateway": n["gateway"],
                "ip": n["ip"],
                "alive": n["alive"],
                "dead_reason": n.get("dead_reason", ""),
                "resources_total": n["resources_total"],
                "resources_available": n["resources_available"],
            }
            for n in self.nodes.values()
        ]
        body = pickle.dumps([(Kind.CLUSTER_VIEW, view)], protocol.PROTOCOL)
        for node_id, ident in self.node_idents.items():
            if self.nodes[node_id]["alive"]:
                header = self.signer.header()
                try:
                    sock.send_multipart([ident, self.signer.sign(body, header), header, body])
                except zmq.ZMQError as e:
                    log.warning("could not send the view to %s: %s", node_id, e)

    def node_dead(self, node_id: str, reason: str) -> None:
        node = self.nodes[node_id]
        node["alive"] = False
        node["dead_reason"] = reason
        log.warning("node %s is gone: %s", node_id, reason)
        self.persist("node_dead", node_id, reason)
        for other in membership.told(node_id, self.node_idents, self.nodes):
            self.emit(self.node_idents[other], (Kind.NODE_DEAD, node_id, reason))
        self.view_due = True

    def emit(self, ident: bytes, msg: tuple) -> None:
        self.out.setdefault(ident, []).append(msg)

    def serve(
        self, sock: zmq.Socket, extra_fds: list[int], on_ready, node_pid: int = 0, on_fail=None
    ) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        for fd in extra_fds:
            poller.register(fd, zmq.POLLIN)
        ready_sent = False
        next_check = time.monotonic() + 1.0
        while self.running:
            # Asleep until the next membership check or view is due (it woke 5 times a second).
            due = min(next_check, self.next_view) if ready_sent else time.monotonic() + 0.2
            events = dict(poller.poll(protocol.poll_ms(max(0.0, due - time.monotonic()))))
            if sock in events:
                for ident, batch in protocol.recv_batches(sock, self.signer, True):
                    for msg in batch:
                        try:
                            self.handle(ident, msg)
                        except Exception:
                            log.exception("error handling %s", protocol.KIND_NAMES.get(msg[0], msg[0]))
            for fd in extra_fds:
                if fd in events and not os.read(fd, 4096):
                    log.info("owner or node is gone; shutting down")
                    self.running = False
            if not ready_sent and any(n["report"] for n in self.nodes.values()):
                ready_sent = True
                on_ready()
            now = time.monotonic()
            if now >= next_check:
                next_check = now + membership.check_interval(self.node_timeout)
                if not ready_sent and node_pid and os.waitpid(node_pid, os.WNOHANG)[0]:
                    on_fail()  # this machine's node could not start (e.g. its gateway port is taken)
                    self.running = False
                for dead in membership.silent(self.nodes.values(), now, self.node_timeout):
                    self.node_dead(dead.node_id, dead.reason)
            if self.view_due or now >= self.next_view:
                self.send_view(sock)
            self.flush(sock)
        for node_id, ident in self.node_idents.items():
            if self.nodes[node_id]["alive"]:
                self.emit(ident, (Kind.EXIT,))
        self.flush(sock)

    def flush(self, sock: zmq.Socket) -> None:
        if self.out:
            out, self.out = self.out, {}
            for ident, batch in out.items():
                try:
                    protocol.send(sock, self.signer, batch, ident)
                except zmq.ZMQError as e:
                    log.warning("could not send to %r: %s", ident, e)

    def handle(self, ident: bytes, msg: tuple) -> None:
        kind = msg[0]
        if kind == Kind.NODE_HELLO:
            _, node_id, address, resources, pid, hostname, ip, gateway = msg
            known, known_ident = self.nodes.get(node_id), self.node_idents.get(node_id)
            if known is not None and known_ident is not None and known_ident != ident:
                log.error("a second node calls itself %s (from %s); told to stop", node_id, ip)
                self.emit(ident, (Kind.EXIT,))  # ids are random: start it again for a new one
                return
            self.node_idents[node_id] = ident
            self.nodes[node_id] = {
                "node_id": node_id,
                "address": address,
                "resources_total": resources,
                "resources_available": dict(resources),
                "pid": pid,
                "hostname": hostname,
                "ip": ip,
                "alive": True,
                "last_seen": time.monotonic(),
                "report": None,
                "gateway": gateway,
                "joined_at": time.time(),
            }
            log.info("node %s joined from %s (%s) with %s", node_id, ip, gateway, resources)
            self.view_due = True
            self.persist("node_joined", self.nodes[node_id])
        elif kind == Kind.NODE_REPORT:
            node = self.nodes.get(msg[1])
            action = restore.on_report(node, self.node_idents.get(msg[1]), ident)
            if action == restore.REJOIN:  # unknown: a head that died before storing its HELLO
                self.emit(ident, (Kind.REJOIN,))
            elif action == restore.EXIT:
                # Declared dead (its work was re-run elsewhere): it must not come back as is.
                self.emit(ident, (Kind.EXIT,))
            else:
                if action == restore.ADOPT:  # a new connection (this head restarted, or it reconnected)
                    log.info("node %s is back on a new connection", msg[1])
                    self.node_idents[msg[1]] = ident
                    self.view_due = True
                node["report"] = msg[2]
                node["resources_available"] = msg[2]["resources_available"]
                # Totals change too: a placement group's bundles add resources to a node.
                node["resources_total"] = msg[2].get("resources_total", node["resources_total"])
                node["last_seen"] = time.monotonic()
        elif kind == Kind.TASK_EVENTS:
            node = self.nodes.get(msg[1])
            # Only a node we know, on its own connection (restore.on_report decides the rest).
            if node is not None and node["alive"] and self.node_idents.get(msg[1]) == ident:
                self.events.add(msg[1], valid(msg[2]), time.monotonic())
        elif kind == Kind.NODE_LEAVE:
            node = self.nodes.get(msg[1])
            if node is not None and node["alive"]:
                self.node_dead(msg[1], "it was stopped")
        elif kind == Kind.ACTOR_EVENT:
            _, actor_id, name, namespace, state, node_id, _meta = msg
            key = (namespace, name)
            entry = self.names.get(key)
            if state == "dead":
                if entry is not None and entry["actor_id"] == actor_id:
                    del self.names[key]
                    self.persist("name_removed", namespace, name)
            elif entry is not None and entry["actor_id"] == actor_id:
                entry["state"] = state
                entry["node_id"] = node_id
                self.persist("name_moved", namespace, name, state, node_id)
        elif kind == Kind.REQUEST:
            _, req_id, op, args = msg
            try:
                payload = getattr(self, f"op_{op}")(ident, *args)
                self.emit(ident, (Kind.REPLY, req_id, True, payload))
            except Exception as e:  # the caller re-raises it
                self.emit(ident, (Kind.REPLY, req_id, False, e))

    # -- requests ---------------------------------------------------------
    def op_hello(self, ident: bytes, hostname: str, addresses: list | None = None) -> dict:
        job_id = self.next_job
        self.persist("job_started", job_id, hostname)  # before the driver hears its id
        self.next_job += 1
        # A node "on this machine" shares the driver's host name and one of its addresses.
        local = [
            n
            for n in self.nodes.values()
            if n["alive"] and n["hostname"] == hostname and (addresses is None or n["ip"] in addresses)
        ]
        return {
            "job_id": job_id,
            "cluster_id": self.info.cluster_id,
            "node": local[0] if local else None,
            "nodes": list(self.nodes.values()),
        }

    def op_cluster_info(self, ident: bytes) -> dict:
        """What `nbcluster start --address` needs before it starts a node."""
        return {"cluster_id": self.info.cluster_id, "nodes": sum(n["alive"] for n in self.nodes.values())}

    def op_nodes(self, ident: bytes) -> list[dict]:
        return [dict(n, report=None) for n in self.nodes.values()]

    def op_snapshot(self, ident: bytes) -> dict:
        return {
            "cluster_id": self.info.cluster_id,
            "head_address": self.info.head_address,
            "started_at": self.info.started_at,
            "nodes": [
                dict(n["report"] or n, alive=n["alive"], gateway=n["gateway"]) for n in self.nodes.values()
            ],
            "named_actors": [
                {"name": name, "namespace": ns, **{k: v for k, v in e.items() if k != "meta"}}
                for (ns, name), e in self.names.items()
            ],
        }

    def op_events(self, ident: bytes, since: float = 0.0) -> list[dict]:
        """Tasks of every node that finished after `since` (the last minute at most)."""
        hosts = {node_id: n["hostname"] for node_id, n in self.nodes.items()}
        return self.events.since(float(since), time.monotonic(), hosts)

    def op_register_name(self, ident, name, namespace, actor_id, meta, get_if_exists) -> Any:
        key = (namespace, name)
        entry = self.names.get(key)
        if entry is not None:
            if get_if_exists:
                return (entry["actor_id"], entry["meta"])
            raise ValueError(
                f"an actor named {name!r} already exists in namespace {namespace!r}; pick another "
                "name, kill it first, or pass get_if_exists=True to reuse it"
            )
        entry = {"actor_id": actor_id, "meta": meta, "state": "pending", "node_id": ""}
        self.persist("name_registered", namespace, name, entry)  # before the caller hears it is taken
        self.names[key] = entry
        return None

    def op_lookup_name(self, ident, name, namespace) -> tuple:
        entry = self.names.get((namespace, name))
        if entry is None:
            raise ValueError(
                f"Failed to look up actor with name {name!r} in namespace {namespace!r}: no such "
                "actor is alive. Named actors live in their creator's namespace; pass "
                "namespace=... (or init(namespace=...)) to look in another one."
            )
        return (entry["actor_id"], entry["meta"])

    def op_release_names(self, ident, owned: list) -> int:
        """A driver that ends lets go of its non-detached actors' names (a new driver must not find them)."""
        released = 0
        for namespace, name, actor_id in owned:
            entry = self.names.get((namespace, name))
            if entry is not None and entry["actor_id"] == actor_id:
                del self.names[(namespace, name)]
                self.persist("name_removed", namespace, name)
                released += 1
        return released

    def op_shutdown(self, ident: bytes) -> bool:
        self.running = False
        return True


def _listen(host: str, port: int) -> socket.socket:
    """The head's TCP listener, bound (port 0: any free one) and listening before the node is forked.

    ZeroMQ takes it over at ``bind`` (``USE_FD``). Picking a free port and
    binding it later would leave a window in which the node's gateway, or any
    other program, could take the port.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ's own listeners do
        s.bind((host, port))
        s.listen(256)
    except OSError:
        s.close()
        raise
    return s


def _say_error(message: str) -> None:
    print(json.dumps({"error": message}), flush=True)


def main() -> None:
    """``python -m runtime.head``: settings as one JSON line on stdin.

    With ``durable`` (``nbcluster start --head``) this machine's node does not
    die with this process: it waits for a head to come back (``head_silence``
    seconds), and follows the owner's pipe instead in ``--block`` mode. With
    ``restore`` (the old connection info of a cluster whose head died) this
    head takes that cluster's id, key and port, reloads its control store, and
    forks a node only if the old one is gone.
    """
    conf = json.loads(sys.stdin.readline())
    set_process_name("nbc-head")
    old = conf.get("restore") or {}
    cluster_id = old.get("cluster_id") or conf.get("cluster_id") or cfg.new_cluster_id()
    key = old.get("key") or conf.get("key") or secrets.token_hex(32)
    host = conf.get("host", "127.0.0.1")
    port = int(old.get("head_address", "").rpartition(":")[2] or conf.get("port") or 0)
    try:
        listener = _listen(host, port)
    except OSError as e:
        _say_error(
            f"cannot listen on {host}:{port}: {e.strerror or e}. Is another cluster running there? "
            "Pick another --port or stop it with `nbcluster stop`."
        )
        return
    port = listener.getsockname()[1]
    durable = bool(conf.get("durable"))
    cluster_dir = cfg.runtime_dir() / cluster_id
    (cluster_dir / "logs").mkdir(parents=True, exist_ok=True)
    os.chmod(cluster_dir, 0o700)
    connect_host = conf.get("node_ip") or (cfg.default_ip() if host in ("0.0.0.0", "") else host)
    curve = None
    if old.get("curve_public"):
        curve = {"public": old["curve_public"], "secret": old["curve_secret"]}
    elif not old and conf.get("encrypt", not cfg.is_loopback(host)):
        public, secret = zmq.curve_keypair()
        curve = {"public": public.decode(), "secret": secret.decode()}
    node_pid = int(old.get("node_pid") or 0)
    keep_node = bool(old) and cfg.pid_alive(node_pid)  # the old head's node waits for us
    node_id = secrets.token_hex(4)
    node_conf = {
        "cluster_id": cluster_id,
        "node_id": node_id,
        "key": key,
        "node_address": old["node_address"] if keep_node else f"{cluster_dir}/node-{node_id}.sock",
        "head_address": f"{connect_host}:{port}",
        "resources": conf["resources"],
        "object_store_memory": conf["object_store_memory"],
        "ip": connect_host,
        "host": host,
        "curve": curve,
        "gateway_port": int(conf.get("gateway_port") or 0),
        "memory_usage_threshold": conf.get("memory_usage_threshold"),
        "survive_head": durable,
        "head_silence": conf.get("head_silence"),
    }
    # Fork the node before this process creates any ZeroMQ context or thread.
    from .. import (
        node,  # noqa: F401 - imported before the fork, so workers inherit it
        worker,  # noqa: F401
    )

    w = -1
    if not keep_node:
        node_pid, w = fork_node(node_conf, durable, bool(conf.get("embedded")), close=listener.fileno())

    logging.basicConfig(
        filename=str(cluster_dir / "logs" / "head.log"),
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    info = cfg.ConnectionInfo(
        cluster_id=cluster_id,
        head_address=f"{connect_host}:{port}",
        key=key,
        node_address=node_conf["node_address"],
        head_pid=os.getpid(),
        started_at=float(old.get("started_at") or time.time()),
        embedded=bool(conf.get("embedded")),
        owner_pid=int(conf.get("owner_pid") or 0),
        curve_public=curve["public"] if curve else "",
        curve_secret=curve["secret"] if curve else "",
        node_pid=node_pid,
    )
    if old and not path_in(cluster_dir).exists():
        log.warning("no control store in %s: nodes are asked to say hello again; names are lost", cluster_dir)
    store = ControlStore(path_in(cluster_dir))
    head = Head(conf, info, store)
    if old:
        head.restore(store.load())
        log.info("restarted the head of cluster %s (its node %s)", cluster_id, "kept" if keep_node else "new")
    ctx = zmq.Context()
    sock = protocol.router(ctx)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)  # control messages only: a stranger cannot make us hold more
    if curve:
        protocol.curve_server(sock, curve)
    try:
        sock.setsockopt(zmq.USE_FD, listener.detach())  # ZeroMQ owns (and closes) it from here
        sock.bind(f"tcp://{host}:{port}")
    except zmq.ZMQError as e:
        _say_error(f"cannot listen on {host}:{port}: {e}")
        store.close()
        if w >= 0:  # ours: it goes; a restored cluster's node stays, waiting for its head
            os.kill(node_pid, signal.SIGKILL)
            wait_node(node_pid, child=True, timeout=2.0)
        if not old:
            remove_folder(cluster_dir)
        return

    def on_ready() -> None:
        info.write()
        restored = None
        if head.restored is not None:
            restored = {
                "nodes": sum(n["alive"] for n in head.nodes.values()),
                "named_actors": len(head.names),
            }
        print(json.dumps({"info": info.__dict__, "node_pid": node_pid, "restored": restored}), flush=True)
        logfd = os.open(cluster_dir / "logs" / "head.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.close(logfd)

    watch = [sys.stdin.fileno()] if conf.get("embedded") else []
    signal.signal(signal.SIGTERM, lambda *_: setattr(head, "running", False))
    signal.signal(signal.SIGINT, lambda *_: setattr(head, "running", False))
    try:

        def on_fail() -> None:
            try:  # the cluster folder goes away with this process: quote the log
                with open(cluster_dir / "logs" / f"node-{node_id}.log") as f:
                    tail = "".join(f.readlines()[-3:]).strip()
            except OSError:
                tail = ""
            _say_error(f"this machine's node daemon could not start (is --gateway-port taken?): {tail}")

        head.serve(sock, watch, on_ready, node_pid if w >= 0 else 0, on_fail)
    finally:
        sock.close(linger=200)
        ctx.term()
        store.close()
        if w >= 0:
            os.close(w)  # a node that follows this process sees EOF and shuts down
        wait_node(node_pid, child=w >= 0)
        for seg in cfg.shm_glob(cluster_id):
            cfg.remove_shm(seg)
        remove_folder(cluster_dir)
