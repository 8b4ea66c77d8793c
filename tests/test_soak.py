"""The chaos soak, short: a mixed workload on three nodes while workers, the actor, a node and the
head are killed."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_short_chaos_soak_loses_nothing_unexplained_and_leaves_nothing(no_leaks, tmp_path):
    out_file = tmp_path / "soak.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--duration", "60", "--json", str(out_file)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(out.stdout)
    assert out_file.exists(), out.stdout + out.stderr
    result = json.loads(out_file.read_text())
    assert result["wrong"] == 0 and result["hung"] == 0, out.stdout
    assert result["unexplained"] == [], out.stdout
    assert result["left_behind"] == {"processes": [], "segments": []}, out.stdout
    lost = sum(result["lost"].values())
    assert result["correct"] + lost == result["submitted"] > 0, out.stdout
    faults = result["faults"]
    assert faults.get("worker killed", 0) >= 1, out.stdout
    assert (
        faults.get("actor process killed", 0) >= 1
        and faults.get("node killed (daemon, gateway, workers)", 0) >= 1
    )
    assert faults.get("connection dropped", 0) >= 1, out.stdout
    # The head was killed -9 and started again; the work went on and nothing was lost to it.
    assert faults.get("head killed (and started again)", 0) >= 1, out.stdout
    assert len(result["head_back_s"]) == faults["head killed (and started again)"], out.stdout
    assert len(result["node_death_detected_s"]) == faults["node killed (daemon, gateway, workers)"], (
        out.stdout
    )
    assert result["actor_incarnations"] >= 2, out.stdout  # the actor was really restarted
    # The progress actor restarts from zero, but a quiet last round after the faults is counted.
    assert result["progress_counted"] >= result["last_round_values"] > 0, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
