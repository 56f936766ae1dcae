"""JupyterLab in headless Chromium: open 03_episodic, wait for the kernel, Run All with smoke
parameters (faces and ASR on), move the MemoryBrowser slider, and see frame, entry and
transcript change; open 04_qa (smoke, EgoLife only), Run All, and filter the ResultsBrowser by
outcome and error class.

Marked `browser` and `slow`; skipped unless Debian's chromium, the playwright Python package
(driven with `executable_path`, so no browser download) and jupyterlab are installed, which
`.ci/run` does. JupyterLab's settings, workspaces and runtime files live in a temporary folder.
A screenshot is kept on failure (`$TASKMEM_TEST_ARTIFACTS`, else the test's temporary folder).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
pytest.importorskip("dlib")
pytest.importorskip("faster_whisper")
if CHROMIUM is None:
    pytest.skip("chromium not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "taskmem-test-token"
SMOKE = {
    "03_episodic": lambda f: {"end": 24.0, "out": str(f / "runs"), "figures": str(f / "figures")},
    "04_qa": lambda f: {
        "benchmarks": ["egolife"],
        "memories": str(f / "runs"),
        "figures": str(f / "figures"),
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_copy(folder: Path, name: str = "03_episodic") -> Path:
    """A notebook with smoke parameters written into its parameters cell."""
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    values = SMOKE[name](folder)
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            lines = "".join(cell["source"]).splitlines()
            for i, line in enumerate(lines):
                key = line.split(":", 1)[0]
                if key in values:
                    kind = line.split(":", 1)[1].split("=", 1)[0].strip()
                    lines[i] = f"{key}: {kind} = {values[key]!r}"
            cell["source"] = "\n".join(lines)
    path = folder / f"{name}.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


@pytest.fixture()
def lab(tmp_path):
    for name in SMOKE:
        smoke_copy(tmp_path, name)
    port = free_port()
    home = tmp_path / "jupyter"
    settings = home / "settings" / "@jupyterlab"
    for extension, name, value in [
        ("apputils-extension", "notification", '{"fetchNews": "false"}'),
        ("notebook-extension", "tracker", '{"autoStartDefaultKernel": true}'),
    ]:
        (settings / extension).mkdir(parents=True, exist_ok=True)
        (settings / extension / f"{name}.jupyterlab-settings").write_text(value)
    env = {
        **os.environ,
        "TASKMEM_CACHE": str(tmp_path / "c.sqlite"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log = open(tmp_path / "jupyterlab.log", "wb")  # noqa: SIM115 - closed after the server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={TOKEN}",
            f"--ServerApp.root_dir={tmp_path}",
            "--allow-root",
        ],
        stdout=log,
        stderr=log,
        env=env,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}/lab/tree/{{}}.ipynb?token={TOKEN}", tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def wait_idle(page, timeout_ms: int) -> None:
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached", timeout=timeout_ms
    )


def accept_kernel_dialog(page) -> None:
    """Answer JupyterLab's "Select Kernel" dialog with the notebook's own kernel, if it asks."""
    dialog = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        dialog.wait_for(state="visible", timeout=3_000)
    except sync_api.TimeoutError:
        return
    dialog.click()


def launch(pw):
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-component-update",
            "--disable-background-networking",
            "--disable-sync",
        ],
    )


def run_all(page, url: str) -> None:
    """Open a notebook, wait for its kernel and choose Run > Run All Cells."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    accept_kernel_dialog(page)
    wait_idle(page, 120_000)  # the kernel has started and answered
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    item = page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
    item.wait_for(state="visible", timeout=30_000)
    item.click()
    accept_kernel_dialog(page)


@contextmanager
def notebook_page(lab: tuple[str, Path], notebook: str, failure_png: str) -> Iterator[Any]:
    """A browser page on `notebook` in JupyterLab after Run All; a screenshot when the test fails."""
    url, work = lab
    shots = Path(os.environ.get("TASKMEM_TEST_ARTIFACTS", work))
    with sync_api.sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            run_all(page, url.format(notebook))
            yield page
        except Exception:
            page.screenshot(path=str(shots / failure_png), full_page=True)
            raise
        finally:
            browser.close()


def test_run_all_in_jupyterlab_and_move_the_slider(lab):
    with notebook_page(lab, "03_episodic", "jupyterlab_failure.png") as page:
        slider = page.locator(".widget-slider").first
        slider.wait_for(state="visible", timeout=300_000)
        wait_idle(page, 240_000)
        frame = page.locator("img.taskmem-frame").first
        entry = page.locator(".widget-html .taskmem-entry").first
        transcript = page.locator(".widget-html .taskmem-transcript").first
        before = (frame.get_attribute("src"), entry.inner_text(), transcript.inner_text())
        assert frame.get_attribute("data-clip") == "0"
        slider.scroll_into_view_if_needed()
        page.locator(".widget-slider .noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_selector("img.taskmem-frame[data-clip='1']", timeout=60_000)
        after = (frame.get_attribute("src"), entry.inner_text(), transcript.inner_text())
        assert after[0] != before[0], "the frame did not change"
        assert after[1] != before[1], "the entry did not change"
        assert after[2] != before[2], "the transcript did not change"


def test_results_browser_filters_in_jupyterlab(lab):
    with notebook_page(lab, "04_qa", "jupyterlab_results_failure.png") as page:
        details = page.locator(".widget-html .taskmem-result").first
        details.wait_for(state="visible", timeout=300_000)
        wait_idle(page, 240_000)
        outcome, _, error_class, question = (
            page.locator(".taskmem-filter select").nth(i) for i in range(4)
        )
        assert details.locator(".taskmem-question").get_attribute("data-id") == "A1_JAKE_1"
        # fake:reader on the generated stand-in memories answers the TaskMaster question
        # right, question 1 wrong and abstains on 2-4; every error is a memorization miss
        # (nothing the questions ask about was written)
        outcome.select_option("correct")
        page.wait_for_selector(".taskmem-question[data-id='A1_JAKE_5']", timeout=60_000)
        assert question.locator("option").all_inner_texts() == ["A1_JAKE_5"]
        error_class.select_option("memorization_miss")
        page.wait_for_selector("text=no question matches", timeout=60_000)
        outcome.select_option("wrong")
        page.wait_for_selector(".taskmem-question[data-id='A1_JAKE_1']", timeout=60_000)
        assert "memorization miss" in details.inner_text()
        assert "Context the answerer saw" in details.inner_text()
        outcome.select_option("abstained")
        page.wait_for_selector(".taskmem-question[data-id='A1_JAKE_2']", timeout=60_000)
        assert question.locator("option").all_inner_texts() == [
            "A1_JAKE_2",
            "A1_JAKE_3",
            "A1_JAKE_4",
        ]
        question.select_option("A1_JAKE_4")
        page.wait_for_selector(".taskmem-question[data-id='A1_JAKE_4']", timeout=60_000)
        assert "Replies of fake:reader" in details.inner_text()
