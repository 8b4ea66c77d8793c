"""Fuzzing the cluster's doors: 10,000 bad frames while a legitimate driver keeps working.

A head and a joined node run on loopback, started with the CLI. The bad
frames go to every door a stranger (or a broken peer) can knock on: the
head's ROUTER, both nodes' gateway ROUTERs (TCP) and both nodes' Unix
sockets. What the doors must do: never deserialize anything that is not
signed with the cluster key and fresh, answer at most one unsigned
``AUTH_FAILED`` per ROUTER peer and nothing else, and keep serving the
driver, whose tasks keep running on both nodes in the meantime.

Set ``NBC_FUZZ_SEED`` to replay one run; the seed is printed.
"""

from __future__ import annotations

import os
import pickle
import random
import socket
import struct
import sys
import threading
import time

import psutil
import zmq
from conftest import wait_for
from test_multinode import Cluster

import runtime
from runtime import config
from runtime.wire import protocol, transport
from runtime.wire.protocol import Kind

TOTAL = 10_000  # bad frames, over all doors
HEADER = struct.Struct("<8sQQ")  # sender, counter, time in ms: as protocol._HEADER
U32 = struct.Struct("<I")  # length prefix of a Unix frame
WAIT = 15.0  # seconds: only ever reached when something is broken


class Boom:
    """Unpickling this would create a file: proof that a message was deserialized."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@runtime.remote
def square(x):
    return x * x, runtime.get_runtime_context().get_node_id()


# ------------------------------------------------------------------ bad frames
class Forge:
    """Makes bad frames of every kind; the right key only ever signs frames that are then broken."""

    def __init__(self, rng: random.Random, key: bytes, boom: str) -> None:
        self.rng = rng
        self.key = key
        self.right = protocol.Signer(key)
        self.wrong = protocol.Signer(os.urandom(32))
        self.boom = boom  # a folder: each Boom creates its own file in it
        self.kinds: dict[str, int] = {}
        self.door = self.kind = ""  # what is being made, for the name of its Boom
        self.labels: dict[str, str] = {}

    def count(self, kind: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def bomb(self) -> Boom:
        name = str(len(self.labels))
        self.labels[name] = f"{self.kind} frame to the {self.door}"
        return Boom(os.path.join(self.boom, name))

    def deserialized(self) -> list[str]:
        """The messages that were deserialized somewhere (none, or the test fails)."""
        return [self.labels.get(name, name) for name in sorted(os.listdir(self.boom))]

    def hint(self) -> str:
        """For the message of a failure: what was deserialized, if anything."""
        found = self.deserialized()
        return f" (deserialized: {found[:5]})" if found else ""

    # pieces
    def evil_batch(self) -> list:
        """What must never be read: it creates a file, or stops the cluster."""
        if self.rng.random() < 0.7:
            return [self.bomb()]
        return [(Kind.REQUEST, self.rng.randrange(1 << 30), "shutdown", ())]

    def evil(self) -> bytes:
        return pickle.dumps(self.evil_batch(), protocol.PROTOCOL)

    def noise(self) -> bytes:
        r = self.rng.random()
        if r < 0.6:
            n = self.rng.randrange(65)
        elif r < 0.9:
            n = self.rng.randrange(65, 4097)
        elif r < 0.99:
            n = self.rng.randrange(4097, 65537)
        else:
            n = self.rng.randrange(65537, 1 << 20)
        return self.rng.randbytes(n)

    def header(self, ms: int | None = None) -> bytes:
        ms = int(time.time() * 1000) if ms is None else ms
        return HEADER.pack(self.rng.randbytes(8), self.rng.randrange(1, 1 << 40), ms)

    def flip(self, data: bytes, start: int = 0) -> bytes:
        """`data` with one bit flipped at or after `start`: never equal to it."""
        i = self.rng.randrange(start, len(data))
        return data[:i] + bytes([data[i] ^ (1 << self.rng.randrange(8))]) + data[i + 1 :]

    def signed(self, ms: int | None = None, data: bytes | None = None) -> list[bytes]:
        """Signed with the right key, evil inside: only ever sent spoiled, or stale (`ms`).

        With `data`, a message with a payload frame (`protocol.pack_data`).
        """
        signer = protocol.Signer(self.key)
        header = self.header(ms)
        signer.header = lambda: header
        batch = self.evil_batch()
        return protocol.pack(signer, batch) if data is None else protocol.pack_data(signer, batch[0], data)

    # ZeroMQ messages: (kind, frames)
    def zmq_message(self) -> tuple[str, list[bytes]]:
        rng = self.rng
        kind = self.kind = rng.choice(
            ["random", "empty", "truncated", "wrong key", "tampered", "unsigned", "stale", "payload", "recut"]
        )
        if kind == "random":
            frames = [self.noise() for _ in range(rng.randint(1, 6))]
        elif kind == "empty":
            frames = [b""] * rng.randint(1, 4)
        elif kind == "truncated":
            frames = self.signed()
            how = rng.randrange(3)
            if how == 0:  # cut the signature, the header or the body
                i = rng.randrange(3)
                frames[i] = frames[i][: rng.randrange(len(frames[i]))]
            elif how == 1:  # frames missing
                frames = rng.choice([frames[:1], frames[:2], frames[1:], [frames[0], frames[2]]])
            else:  # one frame too many: an empty delimiter, as REQ sends, or a trailer
                frames = rng.choice([[b"", *frames], [*frames, self.noise()]])
        elif kind == "wrong key":
            frames = protocol.pack(self.wrong, [self.bomb()])
            if rng.random() < 0.3:
                frames = protocol.pack(self.wrong, [(Kind.REQUEST, 1, "shutdown", ())])
        elif kind == "tampered":  # signed with the right key, then changed
            frames = self.signed()
            how = rng.randrange(4)
            if how < 3:
                frames[how] = self.flip(frames[how])
            else:  # another body (or header) under the same signature
                i = rng.choice([1, 2])
                other = self.header() if i == 1 else self.evil()
                if other == frames[i]:
                    other = self.flip(other)
                frames[i] = other
        elif kind == "unsigned":
            body = pickle.dumps([self.bomb()], protocol.PROTOCOL)
            frames = rng.choice(
                [
                    [body],
                    [b"\0" * 32, self.header(), body],
                    [rng.randbytes(32), self.header(), body],
                    [self.header(), body],
                    [b"\0" * 32, body],
                ]
            )
        elif kind == "stale":  # right key, valid signature, sent long ago (or "in the future")
            frames = self.signed(ms=self.stale_ms())
        elif kind == "payload":  # a message with its payload in a frame of its own, spoiled
            data = self.noise() or b"\0"
            how = rng.choice(["wrong key", "tampered", "stale", "cut payload"])
            if how == "wrong key":
                frames = protocol.pack_data(self.wrong, self.evil_batch()[0], data)
            elif how == "stale":
                frames = self.signed(ms=self.stale_ms(), data=data)
            else:
                frames = self.signed(data=data)
                if how == "tampered":
                    i = rng.randrange(4)
                    frames[i] = self.flip(frames[i])
                else:
                    frames[3] = data[: rng.randrange(len(data))]
        else:  # recut: the same bytes, signed with the right key, cut into frames elsewhere
            data = self.noise() or b"\0"
            sig, header, body, *payload = self.signed(data=data if rng.random() < 0.5 else None)
            k = rng.randrange(1, len(body))
            if not payload:
                frames = rng.choice([[sig, header, body, b""], [sig, header, body[:k], body[k:]]])
            else:
                j = rng.randrange(1, len(data) + 1)
                frames = rng.choice(
                    [
                        [sig, header, body + data],
                        [sig, header, body + data[:j], data[j:]],
                        [sig, header, body[:k], body[k:] + data],
                    ]
                )
        return kind, frames

    def stale_ms(self) -> int:
        now = int(time.time() * 1000)
        return self.rng.choice(
            [0, 1, now - 3_600_000, now - 400_000, now + 400_000, now + 86_400_000, 2**64 - 1]
        )

    # Unix frames: bytes on the stream; "terminal" ones end the connection's protocol
    def unix_frame(self) -> tuple[str, bytes]:
        rng = self.rng
        kind = self.kind = rng.choice(["wrong key", "tampered", "unsigned", "empty", "cut signature"])
        if kind == "wrong key":
            batch = [self.bomb()] if rng.random() < 0.7 else [(Kind.BYE,)]
            frame = transport.encode(self.wrong, batch)
        elif kind == "tampered":
            frame = transport.encode(self.right, [self.bomb()])
            if rng.random() < 0.7:
                frame = self.flip(frame, start=4)  # in the signature or the body
            else:  # the signature of another body
                body = self.evil()
                harmless = pickle.dumps([(Kind.BYE,)], protocol.PROTOCOL)
                frame = U32.pack(32 + len(body)) + self.right.sign(harmless) + body
        elif kind == "unsigned":
            body = self.evil()
            frame = U32.pack(32 + len(body)) + rng.choice([b"\0" * 32, rng.randbytes(32)]) + body
        elif kind == "empty":  # a signature and no body
            frame = U32.pack(32) + rng.choice([b"\0" * 32, rng.randbytes(32)])
        else:  # a right signature cut short, the length fixed up to match
            full = transport.encode(self.right, [self.bomb()])
            sig, body = full[4:36][: rng.randrange(32)], full[36:]
            frame = U32.pack(len(sig) + len(body)) + sig + body
        return kind, frame

    def unix_terminal(self) -> tuple[str, bytes]:
        rng = self.rng
        kind = self.kind = rng.choice(
            ["random", "truncated", "oversized", "undersized", "raw pickle", "nothing"]
        )
        if kind == "random":
            frame = self.noise() or b"\0"
        elif kind == "truncated":  # the rest never comes
            full = transport.encode(self.right, [self.bomb()])
            frame = full[: rng.randrange(1, len(full))]
        elif kind == "oversized":
            length = rng.choice([0xFFFFFFFF, transport.MAX_FRAME + 1, transport.MAX_FRAME, 1 << 30])
            frame = U32.pack(length) + rng.randbytes(rng.randrange(4096))
        elif kind == "undersized":
            frame = U32.pack(rng.randrange(32)) + rng.randbytes(rng.randrange(64))
        elif kind == "raw pickle":
            frame = pickle.dumps([self.bomb()], protocol.PROTOCOL)
        else:  # connect and hang up
            frame = b""
        return kind, frame


# ------------------------------------------------------------------ doors
class RouterDoor:
    """A ROUTER (the head's or a gateway) and the sockets that knock on it."""

    def __init__(self, name: str, ctx: zmq.Context, endpoint: str, forge: Forge) -> None:
        self.name, self.ctx, self.endpoint, self.forge = name, ctx, endpoint, forge
        self.received: dict[zmq.Socket, list[list[bytes]]] = {}
        self.long: list[zmq.Socket] = []
        self.replay: zmq.Socket | None = None
        self.replay_frames: list[bytes] = []

    def dealer(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, int(WAIT * 1000))  # a door that stops reading fails, not hangs
        sock.connect(self.endpoint)
        self.received[sock] = []
        return sock

    def recv(self, sock: zmq.Socket, timeout: float = WAIT) -> list[bytes]:
        if not sock.poll(int(timeout * 1000)):
            raise AssertionError(f"{self.name}: no answer within {timeout} s{self.forge.hint()}")
        frames = sock.recv_multipart()
        self.received[sock].append(frames)
        return frames

    def drain(self, sock: zmq.Socket) -> None:
        while sock.poll(0):
            self.received[sock].append(sock.recv_multipart())

    def send(self, sock: zmq.Socket, kind: str, frames: list[bytes]) -> int:
        sock.send_multipart(frames)
        self.forge.count(kind)
        return 1

    def bad_signature(self, sock: zmq.Socket) -> int:
        """Every fuzzing socket starts with a wrong key: it must hear AUTH_FAILED once."""
        self.forge.door, self.forge.kind = self.name, "wrong key"
        return self.send(sock, "wrong key", protocol.pack(self.forge.wrong, [self.forge.bomb()]))

    def steps(self, budget: int, n_long: int, n_short: int, n_raw: int, n_replays: int):
        """Send `budget` bad messages, one at a time (a generator: yields how many it sent)."""
        rng = self.forge.rng
        per_short = 2
        plan = ["short"] * n_short + ["raw"] * n_raw + ["replay"] * n_replays
        plan += ["long"] * (budget - per_short * n_short - n_raw - n_replays - n_long)
        rng.shuffle(plan)
        self.long = [self.dealer() for _ in range(n_long)]
        for sock in self.long:
            yield self.bad_signature(sock)
        for step in plan:
            self.forge.door = self.name
            if step == "long":
                sock = rng.choice(self.long)
                if self.replay_frames and rng.random() < 0.05:
                    yield self.send(sock, "replay", self.replay_frames)
                else:
                    yield self.send(sock, *self.forge.zmq_message())
            elif step == "replay":
                yield self.send(self.replay, "replay", self.replay_frames)
            elif step == "short":
                yield self.short_lived(per_short)
            else:
                yield self.raw_tcp()

    def short_lived(self, n: int) -> int:
        sock = self.dealer()
        try:
            sent = self.bad_signature(sock)
            for _ in range(n - 1):
                sent += self.send(sock, *self.forge.zmq_message())
            assert self.recv(sock) == [protocol.AUTH_FAILED], self.received[sock]
            self.barrier(sock)
            self.drain(sock)
            self.check(sock, expect_auth_failed=1)
            return sent
        finally:
            sock.close()

    def barrier(self, sock: zmq.Socket) -> None:
        """Proof that this door has read everything `sock` sent (where the door can answer)."""

    def raw_tcp(self) -> int:
        """Not even ZeroMQ: bytes on a TCP connection, then hang up."""
        host, port = self.endpoint.removeprefix("tcp://").rsplit(":", 1)
        rng = self.forge.rng
        greeting = b"\xff" + b"\0" * 8 + b"\x7f\x03\x00NULL" + b"\0" * 16 + b"\0" * 32
        payload = rng.choice([b"", self.forge.noise(), greeting + self.forge.noise(), greeting[:10]])
        with socket.create_connection((host, int(port)), timeout=WAIT) as s:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):  # ZeroMQ's greeting at most; until it hangs up
                    pass
            except TimeoutError as e:
                raise AssertionError(f"{self.name} kept a garbage TCP connection open") from e
            except OSError:  # reset, or not connected any more: it hung up first
                pass
        self.forge.count("raw tcp")
        return 1

    def check(self, sock: zmq.Socket, expect_auth_failed: int) -> None:
        """What `sock` received, besides barrier replies: AUTH_FAILED alone, as often as expected."""
        got = [m for m in self.received[sock] if m != ["barrier"]]
        assert got == [[protocol.AUTH_FAILED]] * expect_auth_failed, f"{self.name} answered {got[:5]!r}"


class HeadDoor(RouterDoor):
    """The head answers signed requests: a signed request after the bad ones is a barrier."""

    def barrier(self, sock: zmq.Socket) -> None:
        req = self.forge.rng.randrange(1 << 30)
        sock.send_multipart(
            protocol.pack(protocol.Signer(self.forge.key), [(Kind.REQUEST, req, "nodes", ())])
        )
        while True:  # what comes before the reply stays recorded, for `check`
            frames = self.recv(sock)
            reply = protocol.unpack(protocol.Signer(self.forge.key), frames) if len(frames) == 3 else None
            if reply is not None and reply[0][:2] == (Kind.REPLY, req):
                assert reply[0][2] is True, reply
                self.received[sock][-1] = ["barrier"]
                return

    def setup_replay(self) -> None:
        """One real request, signed with the right key: answered once, then replayed."""
        self.replay = self.dealer()
        signer = protocol.Signer(self.forge.key)
        self.replay_frames = protocol.pack(signer, [(Kind.REQUEST, 7, "nodes", ())])
        self.replay.send_multipart(self.replay_frames)
        reply = protocol.unpack(protocol.Signer(self.forge.key), self.recv(self.replay))
        assert reply is not None and reply[0][:3] == (Kind.REPLY, 7, True), reply
        self.received[self.replay][-1] = ["reply"]


class GatewayDoor(RouterDoor):
    """A gateway answers nobody but its peer nodes: replays of a harmless signed message."""

    def setup_replay(self) -> None:
        self.replay = self.dealer()
        # A chunk of a transfer nobody asked for: read and ignored.
        chunk = (Kind.CHUNK, (1 << 62) + self.forge.rng.randrange(1 << 20), 0, -1, b"")
        self.replay_frames = protocol.pack(protocol.Signer(self.forge.key), [chunk])
        self.replay.send_multipart(self.replay_frames)


class UnixDoor:
    """A node's Unix socket; each connection is short-lived and ends with proof it was all read."""

    def __init__(self, name: str, path: str, forge: Forge) -> None:
        self.name, self.path, self.forge = name, path, forge

    def steps(self, budget: int):
        rng = self.forge.rng
        left = budget
        while left:
            self.forge.door = self.name
            n = min(left, rng.randint(1, 25))
            left -= n
            frames = [self.forge.unix_frame() for _ in range(n)]
            if rng.random() < 0.7:
                frames[-1] = self.forge.unix_terminal()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(WAIT)
            try:
                s.connect(self.path)
            except OSError as e:
                raise AssertionError(f"{self.name} is gone: {e!r}{self.forge.hint()}") from e
            try:
                for i, (kind, frame) in enumerate(frames):
                    self.forge.count(kind)
                    try:
                        s.sendall(frame)
                    except (BrokenPipeError, ConnectionResetError):
                        # It hung up on garbage: only ever on the last frame.
                        assert i == len(frames) - 1, (
                            f"{self.name} hung up on a {kind!r} frame{self.forge.hint()}"
                        )
                    yield 1
                # Hang up our side: the node reads to the end, drops us, and we see its EOF.
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                got = b""
                while True:
                    try:
                        data = s.recv(65536)
                    except ConnectionResetError:
                        break
                    except TimeoutError as e:
                        raise AssertionError(f"{self.name} never closed a connection") from e
                    if not data:
                        break
                    got += data
                assert got == b"", f"{self.name} answered {got[:100]!r}"
            finally:
                s.close()


# ------------------------------------------------------------------ the test
def _alive(procs: dict[str, psutil.Process]) -> dict[str, bool]:
    out = {}
    for name, p in procs.items():
        try:
            out[name] = p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            out[name] = False
    return out


def test_fuzzing_every_door(no_leaks, tmp_path):
    seed = int(os.environ.get("NBC_FUZZ_SEED") or random.randrange(1 << 32))
    print(f"\nNBC_FUZZ_SEED={seed}")
    rng = random.Random(seed)
    boom = tmp_path / "deserialized"
    boom.mkdir()
    cluster = Cluster(1, {"fz_head": 4})
    ctx = zmq.Context()
    stop = threading.Event()
    driver: threading.Thread | None = None
    try:
        node_id = cluster.add_node("node", 1, {"fz_node": 4})
        runtime.init(address=cluster.address)
        head_id = runtime.get_runtime_context().get_node_id()
        info = config.find_cluster(cluster.address)
        nodes = {n["node_id"]: n for n in cluster.status()["nodes"]}
        assert set(nodes) == {head_id, node_id}
        assert nodes[head_id]["address"] == info.node_address
        procs = {
            "head": psutil.Process(info.head_pid),
            "head's node": psutil.Process(nodes[head_id]["pid"]),
            "joined node": psutil.Process(nodes[node_id]["pid"]),
        }

        # The legitimate driver: tasks on both nodes, every result checked, until told to stop.
        rounds: list[int] = []
        errors: list[str] = []

        def drive() -> None:
            i = 0
            try:
                while not stop.is_set():
                    where = [("fz_node", node_id) if k % 2 else ("fz_head", head_id) for k in range(8)]
                    refs = [
                        square.options(resources={res: 1}).remote(i + k) for k, (res, _) in enumerate(where)
                    ]
                    got = runtime.get(refs, timeout=60)
                    want = [((i + k) ** 2, node) for k, (_, node) in enumerate(where)]
                    if got != want:
                        errors.append(f"round {len(rounds)}: got {got}, want {want}")
                    rounds.append(len(refs))
                    i += len(refs)
            except BaseException as e:  # reported by the test
                errors.append(f"driver failed: {e!r}")

        driver = threading.Thread(target=drive, name="legit-driver", daemon=True)
        driver.start()
        wait_for(lambda: rounds or errors, 60, what="the driver's first tasks")

        forge = Forge(rng, bytes.fromhex(info.key), str(boom))
        head = HeadDoor("head", ctx, f"tcp://{info.head_address}", forge)
        gateway = GatewayDoor("joined node's gateway", ctx, nodes[node_id]["gateway"], forge)
        head_gateway = GatewayDoor("head node's gateway", ctx, nodes[head_id]["gateway"], forge)
        head.setup_replay()
        gateway.setup_replay()
        head_gateway.setup_replay()
        unix = UnixDoor("head node's Unix socket", info.node_address, forge)
        unix_joined = UnixDoor("joined node's Unix socket", nodes[node_id]["address"], forge)

        # 10,000 bad frames, the doors' turns interleaved at random.
        plans = [
            head.steps(3400, n_long=3, n_short=60, n_raw=80, n_replays=200),
            gateway.steps(3000, n_long=3, n_short=50, n_raw=100, n_replays=100),
            head_gateway.steps(600, n_long=1, n_short=25, n_raw=50, n_replays=50),
            unix.steps(2000),
            unix_joined.steps(1000),
        ]
        sent = 0
        started, before = time.monotonic(), len(rounds)
        while plans:
            plan = rng.choice(plans)
            try:
                sent += next(plan)
            except StopIteration:
                plans.remove(plan)
        assert sent == TOTAL, forge.kinds
        after = len(rounds)
        assert not forge.deserialized(), f"deserialized: {forge.deserialized()}"
        assert _alive(procs) == dict.fromkeys(procs, True)

        # Every ROUTER peer heard AUTH_FAILED exactly once; the head has read all of it.
        for sock in head.long:
            head.barrier(sock)
            head.check(sock, expect_auth_failed=1)
        # The replay: its first copy was answered, none of the others.
        head.barrier(head.replay)
        assert head.received[head.replay] == [["reply"], ["barrier"]], head.received[head.replay][:5]
        for door in (gateway, head_gateway):
            for sock in door.long:
                door.recv(sock)  # its AUTH_FAILED (checked below)
        fuzz_seconds = time.monotonic() - started

        # The driver kept going through it all, and still does.
        wait_for(lambda: len(rounds) > after + 1 or errors, 60, what="the driver's tasks after the fuzzing")
        stop.set()
        driver.join(90)
        assert not driver.is_alive()
        assert not errors, errors[:5]
        refs = [square.options(resources={"fz_node": 1}).remote(x) for x in range(20)]
        refs += [square.options(resources={"fz_head": 1}).remote(x) for x in range(20)]
        assert runtime.get(refs, timeout=60) == [(x * x, node_id) for x in range(20)] + [
            (x * x, head_id) for x in range(20)
        ]

        # Nothing died, nothing was deserialized, nobody heard anything but AUTH_FAILED.
        assert _alive(procs) == dict.fromkeys(procs, True)
        status = {n["node_id"]: n for n in cluster.status()["nodes"]}
        assert {k: (n["alive"], n["pid"]) for k, n in status.items()} == {
            k: (True, n["pid"]) for k, n in nodes.items()
        }
        assert not forge.deserialized(), f"deserialized: {forge.deserialized()}"
        for door in (gateway, head_gateway):  # no barrier there: a last look at what came in
            zmq.select([*door.long, door.replay], [], [], 0.3)
            for sock in [*door.long, door.replay]:
                door.drain(sock)
            for sock in door.long:
                door.check(sock, expect_auth_failed=1)
            door.check(door.replay, expect_auth_failed=0)
        print(f"{sent} bad frames in {fuzz_seconds:.1f} s; {after - before} rounds of tasks meanwhile")
        print(f"kinds: {forge.kinds}")
    finally:
        failing = sys.exc_info()[1] is not None
        stop.set()
        if driver is not None:
            driver.join(5 if failing else 90)  # a dead node holds it in get() for a minute
        ctx.destroy(linger=0)
        try:
            cluster.stop()
        except AssertionError:
            if not failing:  # else the cluster died of the fuzzing: the first error says more
                raise


class Mark:
    """Like Boom, but what unpickling it leaves behind is a folder, not an open file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_signed_frames_cannot_be_recut(tmp_path):
    """Moving where a signed message's frames begin and end must void its signature.

    (Commit 3947d8e signed a payload frame as HMAC(header + body + payload): any cut of
    those bytes into frames verified, and the head unpickled a signed body sent with an
    extra empty frame.)
    """
    key = os.urandom(32)
    signer = protocol.Signer(key)
    extra = protocol.pack(signer, [Mark(str(tmp_path / "extra"))])
    split = protocol.pack(signer, [Mark(str(tmp_path / "split"))])
    glued = protocol.pack_data(signer, Mark(str(tmp_path / "glued")), b"0123456789")
    sig, header, body, data = protocol.pack_data(signer, (Kind.CHUNK, 7, 0, 10), b"0123456789")
    reframed = {
        "an empty frame added": [*extra, b""],
        "the body cut in two frames": [*split[:2], split[2][:-3], split[2][-3:]],
        "the payload glued to the body": [*glued[:2], glued[2] + glued[3]],
        "payload bytes moved into the body": [sig, header, body + data[:4], data[4:]],
    }
    accepted = {}
    for how, frames in reframed.items():
        batch = protocol.unpack(protocol.Signer(key), frames)  # a receiver that has seen nothing
        if batch is not None:
            accepted[how] = batch
    deserialized = sorted(p.name for p in tmp_path.iterdir())
    assert not accepted and not deserialized, f"accepted: {accepted}; deserialized: {deserialized}"
