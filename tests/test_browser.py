"""Live widgets in a real browser: JupyterLab started by the test, driven by Playwright
in Debian's headless Chromium. The progress bar must grow while the cell is still busy."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from jupyter_app import Server, browser, server, write_notebook

CELLS = [
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


@pytest.fixture
def lab(no_leaks, tmp_path) -> Iterator[Server]:
    write_notebook(tmp_path / "progress.ipynb", CELLS)
    with server("jupyterlab", tmp_path, no_leaks) as s:
        yield s


def test_progress_bar_grows_while_the_cell_is_busy(lab):
    with browser() as b:
        page = b.new_page()
        page.goto(f"{lab.url}/lab/tree/progress.ipynb?token={lab.token}")
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
