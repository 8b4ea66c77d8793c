"""The wire: what every process of a cluster says to every other, and how.

- `protocol`: message kinds, task specs, ids, HMAC signing, ZeroMQ framing.
- `transport`: signed batches over Unix sockets (the per-task fast path).
- `serialization`: cloudpickle with out-of-band buffers; inline or shared memory.
- `segments`: the file format of one object in shared memory.

Nothing here knows about process roles: the client, node, head and worker
all stand on it.
"""
