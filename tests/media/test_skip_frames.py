"""The forward reader skips non-reference frames between the times it is asked for, and still
returns exactly the frame a full decode shows at each time (YouTube-style x264 encodes)."""

import random
import shutil
import subprocess

import numpy as np
import pytest

from taskmem_lab.media.video import _PyAVReader

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")


@pytest.fixture(scope="module")
def b_frame_video(tmp_path_factory):
    """12 s of moving test pattern, 30 fps, x264 `medium` with B-frames and a GOP of 250."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    out = tmp_path_factory.mktemp("bframes") / "medium.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=96x64:rate=30", "-t", "12", "-c:v", "libx264", "-preset", "medium",
         "-bf", "3", "-g", "250", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def _full_decode(path):
    """Every frame's (time, RGB array, picture type), decoding everything."""
    import av

    with av.open(str(path)) as container:
        return [
            (float(f.time), f.to_ndarray(format="rgb24"), _kind(f.pict_type))
            for f in container.decode(video=0)
        ]


def _shown_at(frames, t: float) -> np.ndarray:
    """The frame a full decode shows at `t`: the last one starting at or before it."""
    before = [a for when, a, _ in frames if when <= t + 1e-6]
    return before[-1] if before else frames[0][1]


def test_skipping_returns_the_frames_a_full_decode_shows(b_frame_video):
    frames = _full_decode(b_frame_video)
    kinds = [k for _, _, k in frames]
    assert kinds.count("B") > len(frames) / 2 and kinds.count("I") <= 2  # a real B-frame GOP
    rng = random.Random(7)
    # times as the memorizer asks them, forward: a 1 fps grid, odd times between frames,
    # times on B-frames exactly and just after, runs of neighbouring frames, the last frame
    b_times = [when for when, _, k in frames if k == "B"]
    times = [float(t) for t in range(12)] + [rng.uniform(0, 12) for _ in range(12)]
    times += [b_times[40], b_times[41], b_times[41] + 0.001, *b_times[200:203]]
    times += [11.0 + i / 30 for i in range(6)] + [11.99]
    times = sorted(times)
    asks = [times[k : k + 3] for k in range(0, len(times), 3)]
    reader = _PyAVReader(b_frame_video, 1000)
    try:
        for times in asks:
            got = reader.frames_at(times)
            for t, a in zip(times, got, strict=True):
                assert np.array_equal(a, _shown_at(frames, t)), f"frame at {t:.4f}s differs"
        assert reader.seeks == 0  # all forward: one pass
        assert reader.decoded < len(frames) * 0.75  # non-reference frames were skipped
    finally:
        reader.close()


def test_every_frame_asked_decodes_every_frame(b_frame_video):
    frames = _full_decode(b_frame_video)
    reader = _PyAVReader(b_frame_video, 1000)
    try:
        times = [when for when, _, _ in frames]
        for k in range(0, len(times), 7):
            got = reader.frames_at(times[k : k + 7])
            assert all(np.array_equal(a, frames[k + i][1]) for i, a in enumerate(got)), (
                f"a frame in {times[k]:.3f}-{times[min(k + 6, len(times) - 1)]:.3f}s differs"
            )
        assert reader.decoded == len(frames)  # nothing skippable: nothing skipped
    finally:
        reader.close()


def _kind(pict_type: object) -> str:
    """ "I", "P" or "B" (PyAV gives an enum or, in some versions, its integer: 1, 2, 3)."""
    name = getattr(pict_type, "name", None)
    return name if isinstance(name, str) else {1: "I", 2: "P", 3: "B"}.get(int(pict_type), "?")
