"""The format of a shared-memory segment: one object, written once, mapped read-only.

A segment is one file: a 16-byte header (magic, buffer count, data
length), a table of (offset, length) per buffer, the pickle stream, then
each out-of-band buffer at a 64-byte aligned offset. Unlinking a segment
while a reader still maps it is safe: the memory goes when the last
mapping does (numpy views keep the mapping alive).

Every process writes and reads segments (`serialization.py`); the node's
`ObjectTable` (``runtime/node/object_store.py``) owns their lifetime.
"""

from __future__ import annotations

import mmap
import os
import struct

_MAGIC = b"NBC1"
_HEAD = struct.Struct("<4sIQ")  # magic, nbuffers, data length
_ENTRY = struct.Struct("<QQ")  # offset, length
_ALIGN = 64


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def write_segment(path: str, data: bytes, buffers: list[memoryview]) -> str:
    """Write one object to a new file at `path` (mode 0600); return `path`."""
    table_end = _HEAD.size + _ENTRY.size * len(buffers)
    offset = _align(table_end + len(data))
    entries = []
    for buf in buffers:
        entries.append((offset, buf.nbytes))
        offset = _align(offset + buf.nbytes)
    header = _HEAD.pack(_MAGIC, len(buffers), len(data)) + b"".join(_ENTRY.pack(o, n) for o, n in entries)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Left by an earlier attempt of the same task whose worker died before its owner
        # heard of it (a retry makes the same object id): nobody knows that file, replace it.
        os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, max(offset, 1))
        pwrite_all(fd, header + data, 0)
        for (off, _), buf in zip(entries, buffers, strict=True):
            pwrite_all(fd, buf, off)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


def pwrite_all(fd: int, data, offset: int) -> int:
    """Write the whole buffer `data` at `offset` of `fd`; its size in bytes."""
    view = memoryview(data).cast("B")
    size = view.nbytes
    while view.nbytes:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
    return size


def read_segment(path: str) -> tuple[memoryview, list[memoryview]]:
    """Map a segment read-only: (pickle stream, out-of-band buffers), no copies."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    return parse_segment(memoryview(mm), path)


def is_segment_bytes(value) -> bool:
    """A segment's bytes sent inline (to a driver on a machine without a node)."""
    return isinstance(value, bytes) and value[:4] == _MAGIC


def parse_segment(view: memoryview, what: str = "value") -> tuple[memoryview, list[memoryview]]:
    view = memoryview(view)
    magic, nbuf, data_len = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError(f"{what} is not an object segment")
    buffers = []
    pos = _HEAD.size
    for _ in range(nbuf):
        off, n = _ENTRY.unpack_from(view, pos)
        pos += _ENTRY.size
        buffers.append(view[off : off + n])
    return view[pos : pos + data_len], buffers
