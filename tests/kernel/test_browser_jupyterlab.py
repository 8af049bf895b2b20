"""JupyterLab in headless Chromium opens a notebook on the secure kernel, runs cells (output, a
denied operation, a widget) and shows the outputs. Skipped only when Chromium, Playwright or
JupyterLab is not installed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import KERNEL, kernel_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="Playwright is not installed (pip install playwright)")
pytest.importorskip("jupyterlab", reason="JupyterLab is not installed (pip install jupyterlab)")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

CELLS = [
    "print('hello from the sandbox')",
    "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=3)",
    "import ipywidgets as widgets\nslider = widgets.IntSlider(value=5, description='level')\n"
    "slider",
    "6 * 7",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def lab(data_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    notebook = {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": [],
                           "execution_count": None} for c in CELLS],
                "metadata": {"kernelspec": {"name": KERNEL, "display_name": "AgentiCraft Secure",
                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (root / "tour.ipynb").write_text(json.dumps(notebook))
    env = kernel_env(tmp_path)
    env.update(JUPYTER_PATH=str(data_dir), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               HOME=str(tmp_path))
    port, token = free_port(), "agenticraft-test-token"
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
         "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
            time.sleep(0.2)  # polling a server that has no readiness event to wait on
    try:
        yield f"{base}/lab/tree/tour.ipynb?token={token}", tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_jupyterlab_runs_cells_on_secure_kernel(lab: tuple[str, Path]) -> None:
    url, tmp = lab
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(90_000)
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_selector(".jp-KernelName:has-text('AgentiCraft Secure')")
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            page.locator(".jp-Notebook .jp-Cell").first.click()
            for index in range(len(CELLS)):
                page.keyboard.press("Shift+Enter")
                cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
                cell.locator(".jp-InputPrompt:not(:has-text('[*]')):has-text('[')").wait_for()
                page.wait_for_function(
                    "i => !document.querySelectorAll('.jp-Notebook .jp-CodeCell')[i]"
                    ".querySelector('.jp-InputPrompt').textContent.includes('*')", arg=index)
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            assert "hello from the sandbox" in cells.nth(0).locator(".jp-OutputArea").inner_text()
            error = cells.nth(1).locator(".jp-OutputArea").inner_text()
            assert "PermissionError" in error and "Operation not permitted" in error
            slider = cells.nth(2).locator(".widget-slider, .jupyter-widgets.widget-inline-hbox")
            try:
                slider.first.wait_for(timeout=30_000)
            finally:
                page.screenshot(path=str(tmp / "jupyterlab.png"))  # kept with the test's tmp
            assert "level" in cells.nth(2).locator(".jp-OutputArea").inner_text()
            assert "42" in cells.nth(3).locator(".jp-OutputArea").inner_text()
            # the widget works both ways: move the slider in the page, read it in the kernel
            cells.nth(2).locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_selector(".widget-readout:has-text('6')")
            cells.nth(4).locator(".jp-InputArea-editor").click()
            page.keyboard.type("slider.value * 100")
            page.keyboard.press("Shift+Enter")
            page.wait_for_selector(".jp-OutputArea-output:has-text('600')")
        finally:
            browser.close()
    records = [json.loads(line) for line in (tmp / "audit.jsonl").read_text().splitlines()]
    assert any(r["type"] == "violation" and r["limit"] == "network_access" for r in records)
