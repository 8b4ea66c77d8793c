"""Where a cluster keeps its files, and the connection file that finds it.

A cluster owns one directory, ``<runtime dir>/<cluster id>/`` (mode 0700),
holding its connection file, its ipc sockets, its logs and its spill
files. The runtime dir is ``$NBCLUSTER_DIR`` or ``/tmp/nbcluster-<uid>``.
Shared-memory segments are ``/dev/shm/nbc-<cluster id>-<object id>``, so
one glob finds everything a cluster ever made.

The connection file (mode 0600) carries the cluster key: whoever can read
it can run code on the cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path

# Values whose pickled size (with out-of-band buffers) is under this travel
# inline in messages; larger ones go to shared memory.
INLINE_THRESHOLD = 100 * 1024
DEFAULT_PORT = 6380
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "nbc-"


def runtime_dir() -> Path:
    """The per-user directory under which every cluster has its folder."""
    base = os.environ.get("NBCLUSTER_DIR")
    path = Path(base) if base else Path(f"/tmp/nbcluster-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():  # on a shared machine someone may have made it first
        raise PermissionError(
            f"{path} belongs to another user (uid {st.st_uid}); clusters keep their keys there. "
            "Set NBCLUSTER_DIR to a folder of yours, e.g. ~/.nbcluster"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def new_cluster_id() -> str:
    return secrets.token_hex(4)


def shm_dir() -> Path:
    """Where shared-memory segments live: ``NBCLUSTER_SHM_DIR`` if set (a tmpfs of your
    choice, or one folder per test run), else /dev/shm, else a folder of the runtime dir."""
    base = os.environ.get("NBCLUSTER_SHM_DIR", "")
    path = _shm_dirs.get(base)
    if path is None:
        path = Path(base) if base else (SHM_DIR if SHM_DIR.is_dir() else runtime_dir() / "shm")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _shm_dirs[base] = path
    return path


_shm_dirs: dict[str, Path] = {}


def shm_glob(cluster_id: str) -> list[Path]:
    """Every shared-memory segment (live or leaked) of one cluster."""
    return sorted(shm_dir().glob(f"{SHM_PREFIX}{cluster_id}-*"))


def remove_shm(path: Path) -> None:
    """Remove one of `shm_glob`'s paths: a segment, or a node's folder of spare segments."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def spill_dir(cluster_id: str, node_id: str) -> Path:
    """Where a node spills objects: ``$NBCLUSTER_SPILL_DIR/<cluster>-<node>`` (a big disk of
    your choice, as Ray's object_spilling_config), else the cluster's own folder."""
    base = os.environ.get("NBCLUSTER_SPILL_DIR", "")
    if base:
        return Path(base) / f"{cluster_id}-{node_id}"
    return runtime_dir() / cluster_id / "spill" / node_id


def store_full_marker(segment: str) -> str:
    """The file whose presence says a node's store is over capacity and cannot spill; next to
    the node's segments (`segment` is one of its segment paths, or the prefix ending in "-")."""
    return segment.rsplit("-", 1)[0] + "-full"


def direct_host(node_conf: dict) -> str:
    """Where a worker of this node listens for callers on other nodes ("": it does not).

    Direct links (``runtime/wire/direct.py``) are TCP with signed frames,
    also encrypted in an encrypted cluster; not with ``NBCLUSTER_DIRECT_LINKS=0``
    (then every call to another node's worker goes through the two nodes).
    """
    if os.environ.get("NBCLUSTER_DIRECT_LINKS", "1") == "0":
        return ""
    return node_conf.get("host") or "0.0.0.0"


def worker_socket(cluster_id: str, node_id: str, worker_id: int) -> str:
    """Where a worker listens for the owners of its tasks and the callers of its actor."""
    return str(runtime_dir() / cluster_id / f"{node_id}-w{worker_id}.sock")


@dataclasses.dataclass
class ConnectionInfo:
    """What a driver or a node needs to join a cluster."""

    cluster_id: str
    head_address: str  # host:port of the head
    key: str  # hex HMAC key
    node_address: str = ""  # the head machine's node daemon (ipc:// or tcp://)
    head_pid: int = 0
    started_at: float = 0.0
    embedded: bool = False  # owned by a driver (init() / %cluster start)
    owner_pid: int = 0
    curve_public: str = ""  # CurveZMQ server key, when encryption is on
    curve_secret: str = ""  # held by the head and every node: they all serve with it
    role: str = "head"  # "node": a node that joined a head on another machine (or port)
    node_pid: int = 0  # the head machine's node daemon (it may outlive a head started by the CLI)

    @property
    def directory(self) -> Path:
        return runtime_dir() / self.cluster_id

    @property
    def path(self) -> Path:
        return self.directory / "connection.json"

    def write(self) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.directory / ".connection.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)
        os.replace(tmp, self.path)
        return self.path

    @classmethod
    def read(cls, path: str | Path) -> ConnectionInfo:
        with open(path) as f:
            data = json.load(f)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def alive(self) -> bool:
        return pid_alive(self.head_pid)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def local_addresses() -> list[str]:
    """IPv4 addresses of this machine (of this network namespace)."""
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET:
                out.append(a.address)
    return out


def default_ip() -> str:
    """The address other machines most likely reach us at: the first non-loopback IPv4."""
    for address in local_addresses():
        if not is_loopback(address):
            return address
    return "127.0.0.1"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def list_clusters(include_dead: bool = False) -> list[ConnectionInfo]:
    """Clusters on this machine, newest first."""
    found = []
    for path in runtime_dir().glob("*/connection.json"):
        try:
            info = ConnectionInfo.read(path)
        except (OSError, ValueError, TypeError):
            continue
        if include_dead or info.alive():
            found.append(info)
    found.sort(key=lambda i: i.started_at, reverse=True)
    return found


def find_cluster(address: str | None = None) -> ConnectionInfo | None:
    """The cluster at `address` ("host:port"), or the newest one for "auto"/None.

    Clusters started with ``nbcluster start`` win over ones embedded in a
    driver, as Ray's "auto" finds the cluster started with ``ray start``.
    """
    clusters = list_clusters()
    if address in (None, "", "auto"):
        clusters.sort(key=lambda i: (not i.embedded, i.started_at), reverse=True)
        return clusters[0] if clusters else None
    host, _, port = address.rpartition(":")
    for info in clusters:
        h, _, p = info.head_address.rpartition(":")
        if p == port and (h == host or _same_host(h, host)):
            return info
    return None


def headless_cluster(port: int = 0) -> ConnectionInfo | None:
    """A cluster of this machine whose head died but whose node still runs and waits for it
    (the newest, or the one on `port`): `nbcluster start --head` on its port restores it."""
    found = [
        info
        for info in list_clusters(include_dead=True)
        if not info.alive() and pid_alive(info.node_pid) and not info.embedded
    ]
    if port:  # one head listens on a port of this machine, whatever its interface
        found = [i for i in found if i.head_address.rpartition(":")[2] == str(port)]
    return found[0] if found else None


def _same_host(a: str, b: str) -> bool:
    local = {"127.0.0.1", "localhost", "0.0.0.0", "::1", ""}
    return a in local and b in local


def remove_stale_clusters(keep: str = "") -> None:
    """Delete folders and segments of clusters whose head is gone (killed -9), unless their
    node still runs (it waits for the head to come back, see `headless_cluster`) or it is `keep`."""
    for info in list_clusters(include_dead=True):
        if info.alive() or pid_alive(info.node_pid) or info.cluster_id == keep:
            continue
        if time.time() - info.started_at < 5:
            continue
        for seg in shm_glob(info.cluster_id):
            remove_shm(seg)
        shutil.rmtree(info.directory, ignore_errors=True)
