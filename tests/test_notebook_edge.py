"""Bad input at the notebook's edge: each case gets a clear message, and the kernel and its
cluster carry on (a real kernel through jupyter_client; one cluster for the module)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import ours, wait_for
from kernel_harness import Kernel
from ray_cluster import free_port

LEAK_CHECK = "none"  # conftest.no_leaks: the module's kernel and cluster outlive each test


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    marker = str(tmp_path_factory.mktemp("edge"))
    shm = f"/dev/shm/nbctest-edge-{os.getpid()}" if os.path.isdir("/dev/shm") else f"{marker}/shm"
    k = Kernel(dict(os.environ, NBCLUSTER_DIR=marker, NBCLUSTER_SHM_DIR=shm))
    k.execute("%load_ext kernel_ext")
    k.execute("%cluster start -n 2")
    k.execute("import runtime")
    k.shm = shm
    yield k
    k.shutdown()
    wait_for(lambda: not ours(marker), timeout=30, what="the kernel and its cluster to exit")
    left = sorted(p.name for p in Path(shm).glob("nbc-*"))
    shutil.rmtree(shm, ignore_errors=True)
    assert not left, f"shared-memory segments left: {left}"


def said(kernel: Kernel, code: str) -> str:
    """Run a cell that must not fail the kernel; what it printed (stdout, stderr, errors)."""
    msg_id = kernel.execute(code)
    errors = "".join(e["ename"] + ": " + e["evalue"] for e in kernel.errors(msg_id))
    return kernel.stream(msg_id) + errors


def unharmed(kernel: Kernel) -> None:
    assert kernel.value("runtime.get(runtime.remote(lambda x: x * 2).remote(21))") == "42"
    assert kernel.value("len(runtime.nodes())") == "1"


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("%cluster start -n many", "invalid float value: 'many'"),
        ("%cluster start --resources '{\"alice\": }'", "not JSON"),
        ("%cluster start --bogus 3", "unrecognized arguments: --bogus 3"),
        ("%cluster launch", "invalid choice: 'launch'"),
        ("%cluster connect", "the following arguments are required: address"),
        ("%%remote --num-cpus lots\nx = 1", "invalid float value: 'lots'"),
        ("%%remote --resources nope\nx = 1", "JSON"),
        ("%%remote --wat\nx = 1", "unrecognized arguments: --wat"),
        ("%%remote\nx = (", "SyntaxError"),
    ],
)
def test_malformed_options_say_what_is_wrong(kernel, cell, message):
    out = said(kernel, cell)
    assert message in out, out
    assert "Traceback" not in out or "SyntaxError" in message, out
    unharmed(kernel)


def test_an_unknown_engine_names_the_choices(kernel):
    out = said(kernel, "%cluster start --engine warp")
    assert "invalid choice: 'warp'" in out and "'runtime'" in out and "'ray'" in out, out
    out = said(kernel, "%cluster connect 127.0.0.1:1 --engine warp")
    assert "invalid choice: 'warp'" in out, out
    unharmed(kernel)


def test_an_unreachable_address_says_what_to_check(tmp_path):
    marker = str(tmp_path / "alone")
    nobody = free_port()
    k = Kernel(dict(os.environ, NBCLUSTER_DIR=marker))  # a kernel with no cluster in use
    try:
        k.execute("%load_ext kernel_ext")
        out = said(k, f"%cluster connect 127.0.0.1:{nobody}")
        assert f"127.0.0.1:{nobody}" in out and "nbcluster start --head" in out, out
        assert "Traceback" not in out, out
        assert k.value("1 + 1") == "2"
    finally:
        k.shutdown()
    wait_for(lambda: not ours(marker), timeout=30, what="the kernel to exit")


def test_a_one_gigabyte_value_goes_through_remote_and_back(kernel):
    said(kernel, "import numpy as np\nbig = np.ones(2**27)")  # 1 GiB
    out = said(kernel, "%%remote\ntotal = float(big.sum())\nhalf = big[: 2**26] * 2")
    assert "Traceback" not in out and "Error" not in out, out
    assert kernel.value("total") == str(float(2**27))
    assert kernel.value("(float(half.sum()), half.nbytes)") == f"({float(2**27)}, {2**29})"
    said(kernel, "del big, half")
    unharmed(kernel)
