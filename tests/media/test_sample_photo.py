"""The group photo of the smoke run and the face tests is found, never fetched; without it the
error is one plain line that names both ways out."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from taskmem_lab.errors import VideoError
from taskmem_lab.lab.reproduce import one_line
from taskmem_lab.testing import media


def no_subprocess(*args, **kwargs):
    raise AssertionError(f"group_photo ran a subprocess: {args}")


def test_the_photo_comes_from_the_environment_first(tmp_path, monkeypatch):
    photo = tmp_path / "t1.jpg"
    photo.write_bytes(b"any photo")
    monkeypatch.setenv("TASKMEM_FACE_PHOTO", str(photo))
    assert media.group_photo() == photo
    monkeypatch.setenv("TASKMEM_FACE_PHOTO", str(tmp_path / "missing.jpg"))
    with pytest.raises(VideoError, match="TASKMEM_FACE_PHOTO=.*is not a file"):
        media.group_photo()


def test_without_the_samples_extra_it_says_what_to_do_and_fetches_nothing(monkeypatch):
    monkeypatch.delenv("TASKMEM_FACE_PHOTO", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    with pytest.raises(VideoError) as caught:
        media.group_photo()
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message
    assert "TASKMEM_FACE_PHOTO" in message and "taskmem_lab[samples]" in message
    assert "docs/install.md, section 'Sample media'" in message


def test_the_installed_photo_is_checked():
    if importlib.util.find_spec("insightface") is None:
        pytest.skip("the samples extra is not installed")
    path = media.group_photo()
    assert path.name == "t1.jpg" and path.stat().st_size > 100_000


def test_a_notebook_error_reaches_the_console_as_one_plain_line():
    colour = (
        "\x1b[0;31mVideoError\x1b[0m: cannot read\nthe photo; set \x1b[1mTASKMEM_FACE_PHOTO\x1b[0m"
    )
    assert one_line(colour) == "VideoError: cannot read the photo; set TASKMEM_FACE_PHOTO"
    assert len(one_line("x" * 5000)) == 600
