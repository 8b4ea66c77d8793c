"""Separate "machines" on one host, for integration tests: Linux network namespaces.

``Machines(n)`` creates ``n`` network namespaces joined by a Linux bridge, so
processes started in them have their own loopback, their own IP address and
can reach each other only over the bridge, as if they were hosts on one LAN::

      root namespace ("the host")
      +------------------------------------------------------------------+
      |  bridge  nbc<tok>b   10.X.Y.254/24   (no forwarding, no NAT)     |
      |     |                 |                       |                  |
      |  nbc<tok>v0        nbc<tok>v1     ...      nbc<tok>v<n-1>        |
      +-----|-----------------|-----------------------|------------------+
            | veth            | veth                  | veth
      +-----|------+    +-----|------+          +-----|------+
      | eth0       |    | eth0       |          | eth0       |
      | 10.X.Y.1   |    | 10.X.Y.2   |   ...    | 10.X.Y.n   |
      | lo 127.0.0.1    | lo 127.0.0.1          | lo 127.0.0.1
      +------------+    +------------+          +------------+
       nbc-<tok>-0       nbc-<tok>-1             nbc-<tok>-<n-1>

``<tok>`` is random per ``Machines`` and ``10.X.Y.0/24`` is a random /24 of
10.0.0.0/8 that no local address or route overlaps, so concurrent test runs
do not collide.  The namespaces have only the on-link route of that /24: no
default route, no NAT, and nothing here turns on IP forwarding, so their
traffic can only reach each other, the host's bridge address, or their own
loopback.  Each namespace's ``127.0.0.1`` is its own: a server bound to
loopback in machine 0 is *not* reachable from machine 1.

Usage::

    from netns import Machines, netns_available

    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with Machines(3) as m:
        server = m.popen(0, [sys.executable, "-m", "http.server", "--bind", m.ips[0], "8000"])
        m.run(2, ["curl", f"http://{m.ips[0]}:8000/"], check=True)
    # every process still inside the namespaces has been SIGKILLed and reaped
    # (if we started it), and the bridge, the veths and the namespaces are gone.

What is NOT separate (``ip netns exec`` only adds a network namespace and a
mount namespace with a private ``/sys``): the filesystem, the PID namespace,
users, and hence Unix-domain sockets bound to paths, ``/dev/shm`` (POSIX shared
memory), files in ``/tmp``, and the ability to signal any process by pid are all
shared between the "machines".  The runtime must not rely on any of these for
things that would cross machines on a real cluster; these tests can only catch
reliance on *network* locality (loopback addresses, local ports).

Commands used (all through the ``ip`` binary of iproute2; needs root)::

    ip netns add nbc-<tok>-<i>
    ip link add nbc<tok>b type bridge stp_state 0 forward_delay 0
    ip addr add 10.X.Y.254/24 dev nbc<tok>b ; ip link set nbc<tok>b up
    ip link add nbc<tok>v<i> type veth peer name eth0 netns nbc-<tok>-<i>
    ip link set nbc<tok>v<i> master nbc<tok>b ; ip link set nbc<tok>v<i> up
    ip -n nbc-<tok>-<i> link set lo up
    ip -n nbc-<tok>-<i> addr add 10.X.Y.<i+1>/24 dev eth0 ; ip -n nbc-<tok>-<i> link set eth0 up
    ip netns exec nbc-<tok>-<i> <argv...>                      # popen / run
    ip netns pids nbc-<tok>-<i>  -> kill -9 each              # cleanup, repeated until empty
    ip link del nbc<tok>v<i> ; ip link del nbc<tok>b ; ip netns del nbc-<tok>-<i>

The bridge netfilter sysctl ``net.bridge.bridge-nf-call-iptables`` is left
alone: it only matters if the host has iptables rules that drop bridged
traffic, and changing it would affect the whole host.

Cleanup happens on leaving the ``with`` block, if setup fails halfway, and at
interpreter exit for a ``Machines`` that was never closed; only a SIGKILLed
test run leaves namespaces behind (``ip netns list | grep ^nbc-`` finds them).
The first ``ip netns add`` on a host creates the ``/run/netns`` mount point;
that stays, as it would with any use of ``ip netns``.
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["Machines", "NetnsError", "netns_available", "need_netns"]

_TIMEOUT = 30.0  # seconds for any single `ip` command
_MAX_MACHINES = 253  # .1 .. .253 in the /24; .254 is the bridge


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or cleanup left something behind."""


def _ip_binary() -> str:
    path = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise NetnsError("the `ip` command (iproute2) is not installed")
    return path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip <args>``; on failure (if ``check``) raise ``NetnsError("ip <args> failed: <stderr>")``."""
    try:
        proc = subprocess.run(
            [_ip_binary(), *args], capture_output=True, text=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        if check:
            raise NetnsError(f"ip {' '.join(args)} timed out after {_TIMEOUT:g}s") from e
        return subprocess.CompletedProcess(e.cmd, -1, "", "timed out")
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise NetnsError(f"ip {' '.join(args)} failed: {err}")
    return proc


def _netns_names() -> set[str]:
    out = _ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 address and route prefix of the root namespace (``default`` excluded)."""
    nets = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        for line in _ip(*args, check=False).stdout.splitlines():
            words = line.split()
            for word in words[:4]:  # `addr`: "2: eth0 inet 1.2.3.4/24 ..."; `route`: "[type] 1.2.3.0/24 ..."
                try:
                    nets.append(ipaddress.IPv4Network(word, strict=False))
                except ValueError:
                    continue
    return [n for n in nets if n.prefixlen > 0]


def _pick_subnet() -> ipaddress.IPv4Network:
    used = _used_ipv4_networks()
    rng = random.SystemRandom()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError("found no free /24 in 10.0.0.0/8")


class Machines:
    """``n`` network namespaces on one bridge; see the module docstring.

    ``names[i]`` is the namespace of machine ``i`` and ``ips[i]`` its address
    (``10.X.Y.<i+1>``, on interface ``eth0`` inside it); ``host_ip`` is the
    bridge's address in the root namespace, reachable from every machine.
    """

    def __init__(self, n: int) -> None:
        if not 1 <= n <= _MAX_MACHINES:
            raise ValueError(f"Machines(n) needs 1 <= n <= {_MAX_MACHINES}, got {n}")
        self.n = n
        self.token = self._fresh_token()
        self.names: list[str] = [f"nbc-{self.token}-{i}" for i in range(n)]
        self.bridge = f"nbc{self.token}b"
        self.host_veths: list[str] = [f"nbc{self.token}v{i}" for i in range(n)]  # <= 15 chars (IFNAMSIZ)
        self.subnet: ipaddress.IPv4Network | None = None
        self.ips: list[str] = []
        self.host_ip: str | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[tuple[str, str]] = []  # ("netns" | "link", name), in creation order
        self._started = False
        self._closed = False

    @staticmethod
    def _fresh_token() -> str:
        netns = _netns_names()
        for _ in range(20):
            token = secrets.token_hex(4)
            taken = any(name.startswith(f"nbc-{token}-") for name in netns)
            if not taken and not _link_exists(f"nbc{token}b"):
                return token
        raise NetnsError("could not find an unused namespace name")

    # -- setup ---------------------------------------------------------------------------------------

    def start(self) -> Machines:
        """Create namespaces, bridge and veths.  On any failure, undo what was done and raise."""
        if self._started:
            raise RuntimeError("Machines already started")
        self._started = True
        atexit.register(self._atexit)
        try:
            self._setup()
        except BaseException:
            self.close(raise_errors=False)
            raise
        return self

    def _setup(self) -> None:
        self.subnet = _pick_subnet()
        hosts = list(self.subnet.hosts())  # .1 .. .254
        self.ips = [str(hosts[i]) for i in range(self.n)]
        self.host_ip = str(hosts[-1])
        prefix = self.subnet.prefixlen

        # Recorded before each attempt, so that a half-done command is still undone; the names
        # were checked to be unused, so cleanup never touches anything that is not ours.
        for name in self.names:
            self._created.append(("netns", name))
            _ip("netns", "add", name)
        self._created.append(("link", self.bridge))
        _ip("link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip("addr", "add", f"{self.host_ip}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for name, veth, ip in zip(self.names, self.host_veths, self.ips, strict=True):
            self._created.append(("link", veth))
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")

    def __enter__(self) -> Machines:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Do not let a cleanup problem hide the test's own exception.
        self.close(raise_errors=exc_type is None)

    # -- running things ------------------------------------------------------------------------------

    def argv(self, i: int, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside machine ``i``: ``ip netns exec <name> *argv``."""
        if not self._started or self._closed:
            raise RuntimeError("Machines is not running (use `with Machines(n) as m:`)")
        if not 0 <= i < self.n:
            raise IndexError(f"machine {i} out of range 0..{self.n - 1}")
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a sequence of arguments, not a string")
        return [_ip_binary(), "netns", "exec", self.names[i], *map(str, argv)]

    def popen(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """``subprocess.Popen(argv, **kw)`` inside machine ``i``.

        ``env``, ``cwd``, ``stdout``/``stderr`` etc. are passed through (``ip netns exec``
        keeps the environment and execs ``argv``, so the returned pid is ``argv``'s own).
        The process is killed and reaped when the ``Machines`` closes, if still running.
        """
        proc = subprocess.Popen(self.argv(i, argv), **kw)
        self._procs.append(proc)
        return proc

    def run(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run(argv, **kw)`` inside machine ``i``."""
        return subprocess.run(self.argv(i, argv), **kw)

    def pids(self, i: int) -> list[int]:
        """Pids of the (non-zombie) processes currently inside machine ``i``."""
        return _netns_pids(self.names[i])

    # -- cleanup -------------------------------------------------------------------------------------

    def close(self, raise_errors: bool = True) -> None:
        """Kill every process in the namespaces, delete veths, bridge and namespaces.

        Idempotent.  Every step is tried even if earlier ones fail; then what we created is
        checked to be gone, and if not, ``NetnsError`` is raised (or, with ``raise_errors=False``,
        a warning is issued).
        """
        if self._closed or not self._started:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        problems: list[str] = []

        namespaces = [name for kind, name in self._created if kind == "netns"]
        links = [name for kind, name in self._created if kind == "link"]
        existing = _netns_names()
        for name in namespaces:
            if name in existing:
                problems += _kill_all_in(name)
        for proc in self._procs:  # reap our children (killed above, or exited already)
            try:
                proc.kill()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired) as e:
                problems.append(f"pid {proc.pid} not reaped: {e!r}")
        for name in reversed(links):  # veths first, then the bridge
            _ip("link", "del", "dev", name, check=False)
        for name in namespaces:
            _ip("netns", "del", name, check=False)

        left = _netns_names()
        problems += [f"namespace {name} still exists" for name in namespaces if name in left]
        problems += [f"interface {name} still exists" for name in links if _link_exists(name)]
        if problems:
            msg = f"Machines {self.token} cleanup: " + "; ".join(problems)
            if raise_errors:
                raise NetnsError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def _atexit(self) -> None:
        self.close(raise_errors=False)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "new"
        return f"<Machines {self.token} n={self.n} {self.subnet} {state}>"


def _netns_pids(name: str) -> list[int]:
    out = _ip("netns", "pids", name, check=False).stdout
    return [int(w) for w in out.split() if w.isdigit()]


def _kill_all_in(name: str, timeout: float = 10.0) -> list[str]:
    """SIGKILL every process in namespace ``name`` until none is left (they may be forking)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _netns_pids(name)  # zombies are not listed: they have left their namespaces
        if not pids:
            return []
        if time.monotonic() > deadline:
            return [f"processes {pids} survive in {name}"]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


@functools.cache
def netns_available() -> str | None:
    """``None`` if ``Machines`` works on this host, else a short reason why not.

    Really tries: creates and deletes a one-machine ``Machines`` (namespace, bridge, veth).
    The answer is cached for the life of the process.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return f"network namespaces need root (euid is {os.geteuid()})"
    try:
        _ip_binary()
        with Machines(1):
            pass
    except (NetnsError, OSError) as e:
        return str(e)
    return None


def need_netns() -> None:
    """In a test or fixture: skip unless ``netns_available()``."""
    reason = netns_available()
    if reason is not None:
        import pytest

        pytest.skip(f"no network namespaces: {reason}")
