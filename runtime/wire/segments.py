"""The format of a shared-memory segment: one object, written once, mapped read-only.

A segment is one file: a 16-byte header (magic, buffer count, data
length), a table of (offset, length) per buffer, the pickle stream, then
each out-of-band buffer at a 64-byte aligned offset. Unlinking a segment
while a reader still maps it is safe: the memory goes when the last
mapping does (numpy views keep the mapping alive).

Every process writes and reads segments (`serialization.py`); the node's
`ObjectTable` (``runtime/node/object_store.py``) owns their lifetime. A
value of RECYCLE_MIN bytes or more is written into the file of a freed
object that nobody maps any more: first one this process wrote and kept
mapped (``arena.py``: one copy into mapped pages), else a spare segment of
the node (``runtime/node/spares.py``): its pages exist, so the kernel does
not allocate and zero them again.
"""

from __future__ import annotations

import mmap
import os
import struct

from .arena import ARENA

_MAGIC = b"NBC1"
_HEAD = struct.Struct("<4sIQ")  # magic, nbuffers, data length
_ENTRY = struct.Struct("<QQ")  # offset, length
_ALIGN = 64
RECYCLE_MIN = 1 << 20  # bytes: segments this big are written into spares, and kept as spares


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
    parts = [(0, memoryview(header)), (len(header), memoryview(data).cast("B"))]
    parts += [(off, memoryview(buf).cast("B")) for (off, _), buf in zip(entries, buffers, strict=True)]
    if offset >= RECYCLE_MIN and ARENA.write(path, offset, parts):  # one copy into mapped pages
        return path
    fd = take_spare(path, offset)
    if fd is None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Left by an earlier attempt of the same task whose worker died before its owner
            # heard of it (a retry makes the same object id): nobody knows that file, replace it.
            os.unlink(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, max(offset, 1))
        for off, part in parts:
            pwrite_all(fd, part, off)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    if offset >= RECYCLE_MIN:
        ARENA.keep(path, fd, offset)  # our next value of its size: one copy (arena.py)
    else:
        os.close(fd)
    return path


def spare_dir(segment: str) -> str:
    """The folder of a node's spare segments, next to its segments (`segment`: one of its
    segment paths, or their prefix ending in "-")."""
    return segment.rsplit("-", 1)[0] + "-spares"


def quarantine_path(segment: str) -> str:
    """Where the node puts the file of the freed object at `segment` until nobody maps it
    (spares.offer); its writer takes it back from there (arena.py)."""
    return os.path.join(spare_dir(segment), "q-" + segment.rsplit("-", 1)[1])


def take_spare(path: str, size: int) -> int | None:
    """A file descriptor for writing `size` bytes at `path`, which becomes the smallest spare
    segment of at least that size (at most twice: a bigger one waits for a bigger value);
    None if there is none, or the value is under RECYCLE_MIN. The node published it once
    no process mapped it."""
    if size < RECYCLE_MIN:
        return None
    folder = spare_dir(path)
    try:
        names = sorted(os.listdir(folder))  # "<size, 16 digits>-<id>"; quarantined: "q-<id>"
    except OSError:
        return None
    for name in names:
        have = name.split("-", 1)[0]
        if not have.isdigit() or int(have) < size:
            continue
        if int(have) > 2 * size:
            return None
        try:
            os.rename(os.path.join(folder, name), path)  # atomic: one writer gets it
        except OSError:
            continue
        try:
            return os.open(path, os.O_RDWR)
        except OSError:
            return None
    return None


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
