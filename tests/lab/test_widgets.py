"""MemoryBrowser: frames on demand, a bounded static view, moved or missing videos, perception
drawn on the frame, and a live slider that changes frame, entry and transcript."""

import json
import shutil

import numpy as np
import pytest

from taskmem_lab.lab.widgets import MemoryBrowser
from taskmem_lab.params import MemorizeParams
from taskmem_lab.pipeline import build_memory
from taskmem_lab.store import perception_dir

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from taskmem_lab.testing.media import test_video

    root = tmp_path_factory.mktemp("browser")
    (root / "media").mkdir()
    video = test_video(root / "media" / "clip.mp4", 25, size="96x64", fps=5, audio=False)
    run = build_memory(
        video,
        "fake",
        MemorizeParams(interval=5, context_duration=5),
        tag="t",
        out=root,
        cache=False,
        progress=False,
    )
    return run.path


def test_frames_are_decoded_on_demand_and_the_static_view_is_bounded(run):
    browser = MemoryBrowser(run, thumbnails=2, max_entries=3)
    assert len(browser.records) == 5 and browser._frames == {}
    html = browser.static_html()
    assert html.count("class='taskmem-frame'") == 2  # first and last clip only
    assert sorted(browser._frames) == [0, 4]
    assert html.count("class='taskmem-entry'") == 3 and "2 more entries" in html
    assert "[fake model]" in html and "Written by a fake model" in html


def test_moved_video_shows_a_message_and_opens_with_video(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    moved = tmp_path / "moved.mp4"
    shutil.copy(manifest["source"][0]["path"], moved)
    manifest["source"][0]["path"] = str(tmp_path / "gone" / "clip.mp4")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    lost = MemoryBrowser(copy)
    assert lost.missing_video and lost.frame(0) is None
    html = lost.static_html()
    assert "Video not found" in html and "MemoryBrowser(run, video=...)" in html
    assert "taskmem-frame" not in html
    found = MemoryBrowser(copy, video=moved)
    assert not found.missing_video and found.frame(0) is not None


def test_stored_relative_path_is_found_beside_the_run(run, tmp_path):
    copy = tmp_path / "out" / "runs" / "clip" / "memory" / "t"
    shutil.copytree(run, copy)
    (tmp_path / "out" / "runs" / "media").mkdir()
    manifest = json.loads((copy / "manifest.json").read_text())
    shutil.copy(manifest["source"][0]["path"], tmp_path / "out" / "runs" / "media" / "clip.mp4")
    manifest["source"][0]["path"] = "out/runs/media/clip.mp4"  # relative to where it was made
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert not MemoryBrowser(copy).missing_video


def test_frame_shows_the_runs_perception(run, tmp_path):
    root = tmp_path / "runs"
    copy = root / "clip" / "memory" / "t"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["perception"] = {"hash": "abc", "settings": {}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    stored = perception_dir(root, "clip", "abc")
    stored.mkdir(parents=True)
    face = {
        "time": 3.0,
        "box": [0.1, 0.1, 0.6, 0.9],
        "score": 0.9,
        "quality": 0.9,
        "identity": "[face_1]",
    }
    line = {"start": 2.5, "end": 3.5, "text": "hello there", "speaker": "[face_1]"}
    record = {"clip": 0, "start": 0, "end": 5, "faces": [face], "transcript": [line]}
    (stored / "clips.jsonl").write_text(json.dumps(record) + "\n")
    plain = MemoryBrowser(copy, annotate=lambda image, t, rec: image)
    drawn = MemoryBrowser(copy)
    assert drawn.frame_time(0) == 3.0 and drawn.frame_time(1) == 9.0
    assert not np.array_equal(plain.frame(0), drawn.frame(0))  # boxes and subtitles drawn
    assert np.array_equal(plain.frame(1), drawn.frame(1))  # nothing found there


def test_slider_changes_frame_entry_and_transcript(run):
    pytest.importorskip("ipywidgets")
    browser = MemoryBrowser(run)
    view = browser.widget()
    slider, frame, details = (
        view.children[0],
        view.children[2].children[0],
        view.children[2].children[1],
    )
    before = (frame.value, details.value)
    slider.value = 3
    assert frame.value != before[0] and details.value != before[1]
    assert "Clip 3" in details.value
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "<img" in bundle["text/html"]
