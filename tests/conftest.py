"""Fixtures: real clusters, and a check after every test that nothing leaked.

Every test runs with its own ``NBCLUSTER_DIR`` (a temporary folder), so
the processes a test started can be found by that variable in their
environment, and must all be gone when it ends; so must every
shared-memory segment and every cluster folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nbcluster(*args: str, timeout: float = 90, check: bool = False) -> subprocess.CompletedProcess:
    """The command line, as a user runs it; with `check`, it must succeed."""
    out = subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def nbcluster_checked(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return nbcluster(*args, timeout=timeout, check=True)


def ours(marker: str) -> list[psutil.Process]:
    """Processes whose environment carries this test's NBCLUSTER_DIR."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get("NBCLUSTER_DIR") == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if _alive(p)]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> tuple[int, str, list[str] | str]:
    try:
        return (p.pid, p.name(), p.cmdline())
    except psutil.Error as e:  # exited meanwhile (a zombie has no cmdline)
        return (p.pid, "", type(e).__name__)


def shm_paths() -> list[str]:
    """Everything of this test in shared memory (each test has its own NBCLUSTER_SHM_DIR):
    objects' segments, and each node's folder of spare segments while it runs."""
    return sorted(str(p) for p in Path(os.environ["NBCLUSTER_SHM_DIR"]).glob("nbc-*"))


def segments() -> list[str]:
    """This test's objects' shared-memory segments (not the spares of freed ones)."""
    return [p for p in shm_paths() if not p.endswith("-spares")]


def spares() -> list[str]:
    """The spare segments of this test's nodes: the files of freed large objects, kept for
    the next ones (runtime/node/spares.py); "q-" ones wait until nobody maps them."""
    return sorted(str(f) for d in shm_paths() if d.endswith("-spares") for f in Path(d).glob("*"))


def wait_for(condition, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def no_leaks(request, tmp_path_factory, monkeypatch):
    """Give the test its own runtime dir; afterwards nothing of ours may remain.

    A module checks less by setting ``LEAK_CHECK``: ``"processes"`` (Ray's tests: they make
    no shared memory of ours, and other runs' runtime tests may make some meanwhile) or
    ``"none"`` (a module-wide kernel and cluster outlive each test; its fixtures check them).
    """
    import runtime

    d = tmp_path_factory.mktemp("nbc")
    monkeypatch.setenv("NBCLUSTER_DIR", str(d))
    check = getattr(request.module, "LEAK_CHECK", "all")
    if check != "all":
        yield str(d)
        if check == "processes":
            wait_for(lambda: not ours(str(d)), timeout=30, what="the test's processes to exit")
        return
    # Its own shared-memory folder: segments of anything else running on the machine
    # (another test run, a user's cluster) are not this test's leaks.
    shm = Path("/dev/shm" if Path("/dev/shm").is_dir() else d) / f"nbctest-{os.getpid()}-{d.name}"
    monkeypatch.setenv("NBCLUSTER_SHM_DIR", str(shm))
    before = set(shm_paths()) if shm.is_dir() else set()
    yield str(d)
    runtime.shutdown()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = ours(str(d))
        leaked = set(shm_paths()) - before
        clusters = [p for p in d.glob("*") if p.is_dir()]
        if not left and not leaked and not clusters:
            break
        time.sleep(0.05)
    described = [_describe(p) for p in left]  # before the kill: a killed process has no cmdline
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    shutil.rmtree(shm, ignore_errors=True)  # the test's own folder goes whatever it found
    assert not left, f"processes left running: {described}"
    assert not leaked, f"shared-memory segments left: {sorted(leaked)}"
    assert not clusters, f"cluster folders left: {clusters}"


@pytest.fixture
def ray():
    """A fresh local cluster with 2 CPUs and custom resources, owned by the test."""
    import runtime

    runtime.init(num_cpus=2, resources={"alice": 2})
    yield runtime
    runtime.shutdown()
