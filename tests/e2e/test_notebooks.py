"""The smoke profile end to end (papermill, every notebook), secrets, and the memory browser."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every notebook under papermill: minutes

pytest.importorskip("papermill")
pytest.importorskip("dlib")
pytest.importorskip("faster_whisper")

FAKE_KEY = "sk-test" + "Q" * 40  # what a real key looks like; it must be written nowhere


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    work = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "TASKMEM_CACHE": str(work / "cache.sqlite")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskmem_lab.cli",
            "reproduce",
            "--profile",
            "smoke",
            "--work",
            str(work),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


def test_every_notebook_runs_and_makes_its_figures(smoke):
    work, proc = smoke
    for name in ("01_audio", "02_faces", "03_episodic", "04_qa", "05_ablations", "06_paper"):
        nb = json.loads((work / f"{name}.ipynb").read_text())
        errors = [
            o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"
        ]
        assert not errors, (name, errors)
    figures = work / "figures"
    for stem in (
        "01_audio_timeline",
        "02_faces_gallery",
        "03_episodic_tokens",
        "04_qa_bars",
        "05_ablations",
        "06_paper_accuracy",
    ):
        assert (figures / f"{stem}.png").is_file() and (figures / f"{stem}.pdf").is_file()
        prov = json.loads((figures / f"{stem}.json").read_text())
        assert prov["notebook"] and "parameters" in prov and prov["taskmem_lab"]
    assert json.loads((figures / "03_episodic_tokens.json").read_text())["fake_model"] is True
    assert "fake model" in (figures / "06_paper_main_table.md").read_text()
    table = (figures / "06_paper_main_table.md").read_text()
    assert "67.9" in table and "reproduced" in table


def test_no_key_in_anything_smoke_wrote(smoke):
    work, proc = smoke
    assert FAKE_KEY not in proc.stdout + proc.stderr
    for path in work.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_memory_browser_widget_and_static_html(smoke):
    from taskmem_lab.lab.widgets import MemoryBrowser

    work, _ = smoke
    run = work / "runs" / "talk" / "memory" / "notebook"
    browser = MemoryBrowser(run)
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    html = bundle["text/html"]
    assert "fake model" in html and "<img" in html and "Tasks arrived by then" in html
    assert "[face_" in html  # identities on screen, from perception
    widget = browser.widget()
    slider = widget.children[0]
    slider.value = 1
    assert "Clip 1" in widget.children[2].children[1].value
