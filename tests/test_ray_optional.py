"""Ray stays optional: kernel_ext never imports it unless asked, and says how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_kernel_ext_does_not_import_ray():
    out = run("""
        import sys
        import kernel_ext, kernel_ext.magics, kernel_ext.engines
        kernel_ext.engines.get("runtime")
        print("ray" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_asking_for_ray_where_it_is_missing_says_what_to_install():
    out = run("""
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed: `import ray` raises ImportError
        from kernel_ext import engines
        try:
            engines.get("ray")
        except engines.EngineError as e:
            print(e)
    """)
    assert out.returncode == 0, out.stderr
    assert 'pip install "nbcluster[ray]"' in out.stdout, out.stdout


def test_a_version_mismatch_is_one_sentence_saying_what_to_install():
    out = run("""
        from ray._private.utils import check_version_info
        from kernel_ext.engines.ray_engine import mismatch_advice
        try:  # Ray's own check, as ray.init runs it, against a cluster of other versions
            check_version_info({"ray_version": "2.9.3", "python_version": "3.10.14"}, "this kernel")
        except RuntimeError as e:
            print(mismatch_advice(str(e)))
    """)
    assert out.returncode == 0, out.stderr
    sentence = out.stdout.strip()
    assert sentence.startswith("The Ray cluster runs Ray 2.9.3 on Python 3.10.14"), sentence
    assert 'pip install "ray[default]==2.9.3"' in sentence and "Python 3.10 environment" in sentence


def test_a_ray_client_server_failure_says_the_servers_reason():
    out = run("""
        import traceback
        from kernel_ext.engines.ray_engine import reason, server_side_start_failure
        try:  # what Ray Client's proxy sends back when the head cannot start this client's server
            raise RuntimeError("Starting Ray client server failed. See ray_client_server_23001.err")
        except RuntimeError:
            e = ConnectionAbortedError(f"Initialization failure from server:\\n{traceback.format_exc()}")
        print(reason(e))
        print(server_side_start_failure(e))
        refused = ConnectionAbortedError("Initialization failure from server:\\nAuthenticationError: bad token")
        print(server_side_start_failure(refused))
    """)
    assert out.returncode == 0, out.stderr
    said, retry, retry_refused = out.stdout.strip().splitlines()
    assert said.startswith(
        "Initialization failure from server: RuntimeError: Starting Ray client server failed"
    )
    assert retry == "True" and retry_refused == "False"


def test_infeasible_demands_are_those_no_alive_node_can_ever_run():
    from kernel_ext.engines.ray_status import infeasible

    nodes = [{"CPU": 2.0, "memory": 8e9}, {"CPU": 1.0, "second": 1.0}]
    shapes = [
        ({"CPU": 2.0}, 3),  # waits for free CPUs: feasible
        ({"CPU": 1.0, "second": 1.0}, 1),  # fits the second node only: feasible
        ({"CPU": 1.0, "GPU": 1.0}, 2),  # no node has a GPU
        ({"CPU": 2.0, "second": 1.0}, 1),  # each part exists, never on one node
    ]
    names = {(("CPU", 1.0), ("GPU", 1.0)): ["train", "train"]}
    assert infeasible(shapes, nodes, names) == (
        {"name": "train", "resources": {"CPU": 1.0, "GPU": 1.0}, "count": 2},
        {"name": "task or actor", "resources": {"CPU": 2.0, "second": 1.0}, "count": 1},
    )
    assert infeasible(shapes, [{"CPU": 4.0, "GPU": 1.0, "second": 1.0}]) == ()
