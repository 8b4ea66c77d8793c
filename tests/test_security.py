"""Signed messages: anything unsigned or signed with another key is dropped
before it is deserialized, and the cluster keeps serving."""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import stat

import zmq

from runtime import config
from runtime.wire import protocol, transport
from runtime.wire.protocol import Kind


class Boom:
    """Unpickling this would create a file: proof that a message was deserialized."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _info():
    return config.find_cluster("auto")


@contextlib.contextmanager
def _dealer(info):
    """A raw ZeroMQ connection to the head, as a stranger (or a peer) would open one."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{info.head_address}")
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def test_bad_messages_to_the_head_are_dropped(ray, tmp_path):
    info = _info()
    evil = tmp_path / "deserialized"
    body = pickle.dumps([(Kind.REQUEST, 1, "shutdown", ())])
    with _dealer(info) as sock:
        sock.send_multipart([b"\0" * 32, body])  # unsigned
        wrong = protocol.Signer(os.urandom(32))
        sock.send_multipart(protocol.pack(wrong, [(Kind.REQUEST, 2, "shutdown", ())]))
        sock.send_multipart(protocol.pack(wrong, [Boom(str(evil))]))
        sock.send_multipart([b"garbage"])
        sock.send_multipart([b"x" * 32, b"y", b"z"])
        # The only answer: one unsigned "authentication failed", carrying nothing.
        assert sock.poll(2000)
        assert sock.recv_multipart() == [protocol.AUTH_FAILED]
        assert sock.poll(300) == 0
    assert not evil.exists()
    assert ray.nodes()[0]["Alive"]

    @ray.remote
    def f():
        return 1

    assert ray.get(f.remote()) == 1


def test_bad_frames_to_the_node_are_dropped(ray, tmp_path):
    info = _info()
    evil = tmp_path / "deserialized"
    wrong = protocol.Signer(os.urandom(32))
    for payload in (
        transport.encode(wrong, [Boom(str(evil))]),
        transport.encode(wrong, [(Kind.BYE,)]),
        b"\x05\x00\x00\x00hello",  # a length below the signature size
        os.urandom(4096),
    ):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(info.node_address)
        s.sendall(payload)
        s.close()
    assert not evil.exists()

    @ray.remote
    def f():
        return 2

    assert ray.get(f.remote()) == 2


def test_replayed_messages_are_dropped(ray):
    info = _info()
    right = protocol.Signer(bytes.fromhex(info.key))
    with _dealer(info) as sock:
        frames = protocol.pack(right, [(Kind.REQUEST, 7, "nodes", ())])
        sock.send_multipart(frames)
        assert sock.poll(5000)
        reply = protocol.unpack(protocol.Signer(bytes.fromhex(info.key)), sock.recv_multipart())
        assert reply[0][:3] == (Kind.REPLY, 7, True)
        sock.send_multipart(frames)  # the same signed bytes again: a replay
        old = protocol.Signer(bytes.fromhex(info.key))
        old.header = lambda: protocol._HEADER.pack(old.sender, 1, 0)  # signed in 1970
        sock.send_multipart(protocol.pack(old, [(Kind.REQUEST, 8, "nodes", ())]))
        assert sock.poll(500) == 0


def test_wrong_key_cannot_connect(ray):
    info = _info()
    # the fixture's cluster keeps running; a second client tries a bad key
    bad = config.ConnectionInfo(**{**info.__dict__, "key": os.urandom(32).hex()})
    from runtime.client import Client
    from runtime.exceptions import ConnectionFailedError

    client = Client(
        cluster_id=bad.cluster_id,
        key=bytes.fromhex(bad.key),
        node_address=None,
        head_address=bad.head_address,
        node_id="",
    )
    try:
        try:
            client.request("hello", "x", timeout=1.0)
        except ConnectionFailedError as e:
            assert "authentication failed" in str(e)
        else:
            raise AssertionError("a client with the wrong key got an answer")
    finally:
        client.close(say_bye=False)


def test_connection_file_and_sockets_are_private(ray):
    info = _info()
    assert stat.S_IMODE(os.stat(info.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(info.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(info.node_address).st_mode) == 0o600
    host = info.head_address.rsplit(":", 1)[0]
    assert host == "127.0.0.1"  # loopback unless asked


def test_signed_nonsense_does_not_crash_the_head(ray):
    """A peer with the key sending malformed batches: logged and ignored, the head serves on."""
    info = _info()
    right = protocol.Signer(bytes.fromhex(info.key))
    with _dealer(info) as sock:
        for batch in ([42], [()], [("x",)], [(Kind.REQUEST,)], [(Kind.NODE_REPORT, "nope")], {"a": 1}):
            sock.send_multipart(protocol.pack(right, batch))
        sock.send_multipart(protocol.pack(right, [(Kind.REQUEST, 9, "nodes", ())]))
        heard = []
        reader = protocol.Signer(bytes.fromhex(info.key))
        while not any(m[0] == Kind.REPLY for m in heard):
            assert sock.poll(5000), heard
            heard += protocol.unpack(reader, sock.recv_multipart())
        # The report of a node it does not know is answered with REJOIN (say hello first):
        # a restarted head asks that of nodes it lost; nothing else came back but the reply.
        assert [m for m in heard if m[0] != Kind.REJOIN] == [heard[-1]]
        assert heard[-1][:3] == (Kind.REPLY, 9, True)
    assert ray.get(ray.put(3)) == 3
