"""Shared fixtures: generated media, a real local OpenAI-compatible server and its config.

Every test runs with a home and a temp folder of the session's own (nothing is written to the
real $HOME or the system temp folder) and fails when a `taskmem-*` thread it started outlives it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
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
    """insightface's six-person group photo (t1.jpg), from the `samples` extra."""
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


# How long a test's `taskmem-*` threads may take to end after it (pools end when idle for 0.5 s).
THREAD_GRACE_S = 3.0


@pytest.fixture(scope="session", autouse=True)
def _private_home_and_temp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$HOME, the XDG folders and $TMPDIR point into the session's temp folder, so caches,
    Ray's auth token, Jupyter's runtime files and stray temp files stay there."""
    root = tmp_path_factory.mktemp("home")
    names = {
        "HOME": root,
        "XDG_CACHE_HOME": root / ".cache",
        "XDG_CONFIG_HOME": root / ".config",
        "XDG_DATA_HOME": root / ".local" / "share",
        "XDG_RUNTIME_DIR": root / "run",
        "MPLCONFIGDIR": root / ".config" / "matplotlib",
        "IPYTHONDIR": root / ".ipython",
        "TMPDIR": root / "tmp",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, folder in names.items():
            folder.mkdir(parents=True, exist_ok=True)
            mp.setenv(name, str(folder))
        mp.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
        yield root


@pytest.fixture(scope="session", autouse=True)
def _no_tqdm_monitor() -> Iterator[None]:
    """tqdm's monitor thread lives until every bar of the process is closed; tests need none."""
    from tqdm import tqdm

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tqdm, "monitor_interval", 0)
        yield


@pytest.fixture(autouse=True)
def _no_thread_outlives_its_test() -> Iterator[None]:
    """Fails the test when a `taskmem-*` thread that it started is still alive
    `THREAD_GRACE_S` seconds after it ended (a pool, server or stream left running)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    new = [t for t in threading.enumerate() if t not in before and t.name.startswith("taskmem-")]
    for thread in new:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = sorted(t.name for t in new if t.is_alive())
    if left:
        pytest.fail(f"threads outlived the test: {', '.join(left)}", pytrace=False)
