"""Binder's build, replayed: the quickstart runs in a fresh environment made from binder/.

repo2docker, seeing a ``binder/`` folder with a ``requirements.txt``, runs
``pip install -r binder/requirements.txt`` from the repository's root in the
image's Python, and does not install the repository otherwise; the notebook
kernel is that same Python. Here: a new venv, the same pip command from the
same folder, a kernel spec pointing at the venv's Python, and the quickstart
executed with it, checking that it imported nbcluster from the venv.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbclient
import nbformat
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
KERNEL = "nbcluster-binder"


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_binder_folder_is_what_repo2docker_reads():
    files = sorted(p.name for p in BINDER.iterdir())
    assert files == ["requirements.txt"], files  # no postBuild needed
    lines = [
        line.strip()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(re.fullmatch(r"(-e )?\.(\[.*\])?", line) for line in lines), lines  # the repo itself


def test_quickstart_runs_in_an_environment_built_from_binder(tmp_path, no_leaks, monkeypatch):
    venv = tmp_path / "venv"
    start = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = str(venv / "bin" / "python")
    # as repo2docker does: from the repository's root
    run([python, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], timeout=600, cwd=ROOT)
    run(
        [python, "-m", "ipykernel", "install", "--prefix", str(venv), "--name", KERNEL],
        timeout=120,
    )
    built = time.monotonic() - start
    print(f"venv + install: {built:.1f} s")
    # the Clusters sidebar comes with it: its front end and its server side are enabled
    jupyter = str(venv / "bin" / "jupyter")
    lab = run([jupyter, "labextension", "list"], timeout=120)
    assert "nbcluster-labextension" in lab.stdout + lab.stderr, lab.stdout + lab.stderr
    server = run([jupyter, "server", "extension", "list"], timeout=120)
    assert "kernel_ext.lab" in server.stdout + server.stderr, server.stdout + server.stderr

    monkeypatch.setenv("JUPYTER_PATH", str(venv / "share" / "jupyter"))
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    nb.cells.append(
        new_code_cell("import sys, runtime, kernel_ext\nprint(sys.prefix)\nprint(runtime.__file__)")
    )
    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=120,
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    )
    start = time.monotonic()
    client.execute(env=dict(os.environ, NBCLUSTER_DIR=no_leaks))
    print(f"01_quickstart.ipynb in the binder environment: {time.monotonic() - start:.1f} s")

    def printed(marker: str) -> str:
        (cell,) = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    where = printed("print(sys.prefix)").split()
    assert Path(where[0]) == venv  # the kernel ran in the venv ...
    assert Path(where[1]).is_relative_to(venv)  # ... and imported nbcluster installed there
    assert re.search(r"bubble sort speed-up: [\d.]+x", printed("bubble_sort_remote.remote(numbers)"))
    assert re.search(r"fibonacci speed-up: [\d.]+x", printed("fibonacci_distributed.remote"))
    assert "Cluster stopped." in printed("%cluster stop")
