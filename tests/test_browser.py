"""Live widgets in a real browser: JupyterLab started by the test, driven by Playwright
in Debian's headless Chromium. The progress bar must grow while the cell is still busy."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import wait_for
from jupyter_app import BROWSER_ARGS, CHROMIUM
from jupyter_app import free_port as _port


def _notebook(path: Path) -> None:
    cells = [
        "%load_ext kernel_ext\n%cluster start -n 2",
        "import runtime as ray, kernel_ext, time\n"
        "bar = kernel_ext.ProgressBar(total=20, description='browser')\n"
        "@ray.remote\n"
        "def step(bar):\n"
        "    time.sleep(0.3)\n"
        "    bar.update(1)\n"
        "    return 1\n"
        "total = sum(ray.get([step.remote(bar) for _ in range(20)]))\n"
        "print('finished', total)",
    ]
    nb = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
            for c in cells
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


@pytest.fixture
def lab(no_leaks, tmp_path):
    port, token = _port(), secrets.token_hex(16)
    _notebook(tmp_path / "progress.ipynb")
    env = dict(os.environ, NBCLUSTER_DIR=no_leaks)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--LabApp.news_url=None",
            "--ServerApp.open_browser=False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )

    def up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return True
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what="JupyterLab to answer")
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_progress_bar_grows_while_the_cell_is_busy(lab):
    from playwright.sync_api import sync_playwright

    url, token = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}/lab/tree/progress.ipynb?token={token}")
            page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_selector("text=| Idle", timeout=60_000)  # the kernel is up
            page.click(".jp-Notebook .jp-Cell >> nth=0")
            page.keyboard.press("Escape")
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".nbcluster-cluster", timeout=60_000)
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".nbcluster-progress .progress-bar", timeout=60_000)
            widths, busy_widths = [], []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                width = page.eval_on_selector(".nbcluster-progress .progress-bar", "e => e.style.width")
                prompt = page.inner_text(".jp-Notebook .jp-Cell >> nth=1 >> .jp-InputPrompt")
                value = float(width.rstrip("%") or 0)
                widths.append(value)
                if "*" in prompt:
                    busy_widths.append(value)
                elif value >= 100:
                    break
                time.sleep(0.1)
            distinct_busy = sorted(set(busy_widths))
            assert len(distinct_busy) >= 3, f"the bar did not move while busy: {busy_widths}"
            assert 0 < distinct_busy[1] < 100, busy_widths
            assert busy_widths == sorted(busy_widths), "the bar went backwards"
            assert widths[-1] == 100.0, widths
            page.wait_for_selector("text=finished 20", timeout=30_000)
        finally:
            browser.close()
