"""ObjectRef: a handle on a value that exists (or will) somewhere in the cluster."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from . import session
from .exceptions import ObjectLostError, TaskError
from .wire import serialization

if TYPE_CHECKING:
    from .client import Client


class ObjectRef:
    """A reference to a task's result or a `put` value.

    Pass it to other tasks (it is resolved to its value when it is a
    top-level argument), read it with `get`, `await` it in asyncio code,
    or turn it into a `concurrent.futures.Future` with `future()`.
    The value lives as long as some ObjectRef to it exists anywhere.

    Example::

        >>> ref = square.remote(4)
        >>> ray.get(ref)
        16
    """

    __slots__ = ("_id", "_client", "__weakref__")

    def __init__(self, object_id: bytes, client=None, announce: bool = True) -> None:
        self._id = object_id
        if client is None:
            client = session.client_or_none()
        self._client = client
        if client is not None:
            client.add_ref(object_id, announce)

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            try:
                client.remove_ref(self._id)
            except Exception:
                pass

    def __reduce__(self):
        if self._client is not None:
            self._client.share(self._id)  # may reach another process: its release waits the grace
        serialization.note_ref(self._id, self)
        return (_rebuild, (self._id,))

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> bytes:
        return self._id[:16]

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def future(self) -> Future:
        """A `concurrent.futures.Future` that completes with the value (or its error)."""
        fut: Future = Future()

        def done() -> None:
            try:
                current = session.client()
                current.fetch([self._id], None)
                fut.set_result(value_of(current, self))
            except BaseException as e:  # noqa: BLE001 - the future carries it
                fut.set_exception(e)

        client = self._client or session.client()
        client.add_callback(self._id, done)
        return fut

    def __await__(self) -> Any:
        import asyncio

        return asyncio.wrap_future(self.future()).__await__()


def _rebuild(object_id: bytes) -> ObjectRef:
    return ObjectRef(object_id)


def value_of(client: Client, ref: ObjectRef) -> Any:
    """The value of a ref whose wire value has arrived in `client`; a task's error is raised."""
    for _attempt in range(3):
        is_error, wire = client.memstore[ref._id]
        try:
            value = serialization.deserialize(wire)
        except FileNotFoundError:  # spilled or moved since we cached its path
            client.forget(ref._id)
            client.fetch([ref._id])
            continue
        if is_error:
            if isinstance(value, TaskError):
                raise value.as_instanceof_cause()
            raise value
        return value
    raise ObjectLostError(
        f"object {ref.hex()} is lost: its value at {wire} is gone (deleted outside the runtime?) and "
        "it cannot be rebuilt; compute or put it again"
    )
