"""JupyterLab in headless Chromium: run 03_episodic and see the memory browser render.

Marked `browser`; skipped unless Debian's chromium, playwright (the Python package, driven with
`executable_path`, so no browser download) and jupyterlab are installed.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
if CHROMIUM is None:
    pytest.skip("chromium not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    shutil.copy(ROOT / "notebooks" / "03_episodic.ipynb", tmp_path / "03_episodic.ipynb")
    port, token = free_port(), "taskmem-test-token"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--allow-root",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TASKMEM_CACHE": str(tmp_path / "c.sqlite")},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/lab/tree/03_episodic.ipynb?token={token}", tmp_path
    proc.terminate()
    proc.wait(timeout=30)


def test_episodic_notebook_runs_in_jupyterlab_and_shows_the_browser(lab):
    url, work = lab
    shot = work / "memory_browser.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        page.get_by_role("menuitem", name="Run").first.click()
        page.get_by_text("Run All Cells", exact=True).click()
        page.wait_for_selector(".widget-slider, .jupyter-widgets .widget-hslider", timeout=240_000)
        page.wait_for_timeout(2000)
        page.locator(".widget-slider, .widget-hslider").first.scroll_into_view_if_needed()
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert shot.is_file() and shot.stat().st_size > 10_000
