"""Shared fixtures: generated media, a real local OpenAI-compatible server and its config."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from taskmem_lab.testing.fake_openai_server import FakeOpenAIServer, write_config
from taskmem_lab.testing.media import index_video, test_video

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")


class LazyMedia(Mapping[str, Path]):
    """Generated test videos, each made on first use (a test run makes only those it needs)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._made: dict[str, Path] = {}
        self._makers: dict[str, Callable[[Path], Path]] = {
            "tone_27_3": lambda d: test_video(d / "tone_27_3.mp4", 27.3),
            "silent": lambda d: test_video(d / "silent.mp4", 12, audio=False),
            "rotated": lambda d: test_video(d / "rotated.mp4", 4, rotate=90),
            "three_min": lambda d: test_video(d / "three_min.mp4", 180, size="96x64", fps=5),
            "index": lambda d: index_video(d / "index.mp4", [i * 0.1 for i in range(100)]),
            "vfr": lambda d: index_video(d / "vfr.mp4", [0, 0.5, 0.6, 0.7, 2.0, 2.1, 3.5, 5.0]),
            "corrupt": _corrupt_video,
        }

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            self._made[name] = self._makers[name](self.folder)
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


def _corrupt_video(folder: Path) -> Path:
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    return corrupt


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> LazyMedia:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    return LazyMedia(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def group_photo_path() -> Path:
    """insightface's six-person group photo (t1.jpg), fetched once from PyPI into the cache."""
    from taskmem_lab.errors import VideoError
    from taskmem_lab.testing.media import group_photo

    try:
        return group_photo()
    except VideoError as exc:
        pytest.skip(f"group photo unavailable: {exc}")


@pytest.fixture()
def server():
    with FakeOpenAIServer(hang_s=2.0) as srv:
        yield srv


@pytest.fixture()
def api_config(tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points `openai:local-vlm` at the local server, with fast retries and a short timeout."""
    path = tmp_path / "endpoints.yaml"
    write_config(str(path), server, timeout=1.0, max_retries=3, backoff_s=0.01)
    monkeypatch.setenv("TASKMEM_API_CONFIG", str(path))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMEM_CACHE", str(tmp_path / "cache.sqlite"))


EGOLIFE_SAMPLE = Path(__file__).resolve().parents[1] / "benchmarks" / "egolife" / "sample"


@pytest.fixture()
def egolife_memories(tmp_path: Path) -> Path:
    """A JSONL memory of the EgoLife sample's A1_JAKE in which, answered by the `fake` model with
    the full context, question 1's strawberries are in memory but a later cola misleads it (an
    answering miss), question 2's scissors and question 5's shopping list were never written
    (memorization misses), and questions 3 and 4 are answered right."""
    import json

    from taskmem_lab.bench.egolife import stream_time as t

    entries = [
        (t("DAY1", "08301000"), "Jake brews a cup of coffee in the kitchen."),
        (t("DAY1", "11094000"), "Jake puts strawberries in the fridge."),
        (t("DAY1", "11300000"), "Jake drinks a cola on the sofa."),
        (t("DAY1", "11595000"), "Jake checks his phone."),
        (t("DAY1", "17095500"), "Lucia trims flowers at the table."),
        (t("DAY2", "13120500"), "Katrina carries a box upstairs with Jake."),
    ]
    folder = tmp_path / "mem"
    folder.mkdir()
    with open(folder / "A1_JAKE.jsonl", "w") as fh:
        for i, (start, text) in enumerate(entries):
            fh.write(
                json.dumps({"clip": i, "start": start, "end": start + 10, "text": text}) + "\n"
            )
    return folder
