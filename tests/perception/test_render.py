"""Annotated frames: boxes with local ids, speaker-prefixed subtitles, fonts, no mutation."""

from __future__ import annotations

import io

import numpy as np
import pytest

from taskmem_lab.media.video import Frame, encode_mp4
from taskmem_lab.perception import render
from taskmem_lab.perception.records import FaceDetection, Segment
from taskmem_lab.perception.render import annotate, subtitle_texts, wrap

W, H = 320, 180
GREY = 90
IDS = {"[face_7]": "<face_1>", "[face_3]": "<face_2>"}


def frames(times=(0.0, 1.0, 2.0, 3.0)) -> list[Frame]:
    return [Frame(t, np.full((H, W, 3), GREY, np.uint8)) for t in times]


def face(t: float, identity: str, box=(0.1, 0.3, 0.3, 0.7)) -> FaceDetection:
    return FaceDetection(t, box, 0.9, 0.9, np.ones(4, np.float32), identity=identity)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def test_inputs_are_never_mutated_and_times_are_kept():
    src = frames()
    before = [f.image.copy() for f in src]
    src[0].jpeg()  # a cached encoding of the clean frame must not leak into the annotated one
    out = annotate(src, [face(1.0, "[face_7]")], [Segment(0.0, 0.5, "hi", "[face_3]")], IDS)
    assert [f.time for f in out] == [f.time for f in src]
    assert all(np.array_equal(f.image, b) for f, b in zip(src, before, strict=True))
    assert all(o is not s for o, s in zip(out, src, strict=True))
    assert changed(out[0].image, before[0]).any() and changed(out[1].image, before[1]).any()
    assert out[0].jpeg() != src[0].jpeg()
    # nothing to draw at 2 s and 3 s: the same pixels, not a copy
    assert out[2].image is src[2].image and not changed(out[3].image, before[3]).any()


def test_boxes_are_drawn_on_the_frame_with_the_detections_time():
    src = frames()
    out = annotate(
        src,
        [face(1.0004, "[face_7]"), face(2.01, "[face_7]")],  # within 1 ms; 10 ms off
        [],
        IDS,
    )
    diff1 = changed(out[1].image, src[1].image)
    assert diff1.any() and not changed(out[2].image, src[2].image).any()
    ys, xs = np.nonzero(diff1)
    # The box edges lie on the detection's box (normalized coordinates scaled to the frame).
    assert abs(xs.min() - 0.1 * W) <= 3 and abs(xs.max() - 0.3 * W) <= 30  # label may be wider
    assert abs(ys.max() - 0.7 * H) <= 3
    # Pixels inside the box are untouched.
    assert not diff1[int(0.45 * H), int(0.2 * W)]


def test_label_colour_follows_the_local_id_and_unknown_faces_are_not_drawn():
    src = frames((0.0,))
    one = annotate(src, [face(0.0, "[face_7]")], [], IDS)[0].image
    two = annotate(src, [face(0.0, "[face_3]")], [], IDS)[0].image
    edge = (int(0.5 * H), int(0.1 * W))  # the box's left edge
    assert tuple(one[edge]) == render._PALETTE[0] and tuple(two[edge]) == render._PALETTE[1]
    stranger = annotate(src, [face(0.0, "[face_99]"), face(0.0, "")], [], IDS)[0]
    assert stranger.image is src[0].image


def test_subtitle_texts_are_speaker_prefixed_and_never_leak_global_ids():
    segs = [
        Segment(0.2, 1.4, " hello there ", "[face_3]"),
        Segment(0.0, 0.9, "first", "[face_7]"),
        Segment(0.5, 0.8, "who", "unknown"),
        Segment(0.5, 0.8, "off window", "[face_42]"),
        Segment(0.3, 0.6, "   ", "[face_7]"),
        Segment(1.0, 2.0, "later", "[face_7]"),
        Segment(0.6, 0.9, "heard only", "[voice_2]"),
    ]
    texts = subtitle_texts(0.0, 1.0, segs, IDS)
    assert texts == [
        "<face_1>: first",
        "<face_2>: hello there",
        "unknown: who",
        "unknown: off window",
        "[voice_2]: heard only",  # a voice-only speaker keeps its label, as in the prompt
    ]
    assert not any("[face_" in t for t in texts)
    # a segment between two frames of a 1 fps grid still shows on the earlier one
    assert subtitle_texts(3.0, 1.0, [Segment(3.2, 3.7, "brief", "[face_7]")], IDS) == [
        "<face_1>: brief"
    ]
    assert subtitle_texts(4.0, 1.0, [Segment(3.2, 3.7, "brief", "[face_7]")], IDS) == []


def test_subtitles_shown_while_spoken_and_stacked_without_overlap():
    src = frames()
    segs = [Segment(0.5, 2.5, "one", "[face_7]"), Segment(1.5, 1.8, "two", "[face_3]")]
    out = annotate(src, [], segs, IDS)
    bands = []
    for o, s in zip(out, src, strict=True):
        rows = np.flatnonzero(changed(o.image, s.image).any(axis=1))
        bands.append(rows)
    assert bands[0].size and bands[2].size and not bands[3].size
    assert bands[0].min() > H / 2  # at the bottom
    # two segments at 1 s: two separate text rows (twice the height of one)
    assert bands[1].max() - bands[1].min() > 1.7 * (bands[2].max() - bands[2].min())


def test_many_long_subtitles_stay_within_the_bottom_of_the_frame():
    src = frames((0.0,))
    long = "a rather long sentence that certainly needs wrapping onto more lines " * 3
    segs = [Segment(0.0, 1.0 + k, f"{k} {long}", "[face_7]") for k in range(8)]
    out = annotate(src, [], segs, IDS)[0]
    rows = np.flatnonzero(changed(out.image, src[0].image).any(axis=1))
    assert rows.min() >= H * (1 - render.RenderStyle().max_subtitle_height) - 2


def test_wrap_breaks_words_and_unspaced_text_within_the_width():
    font = render._font(render.latin_font_path(), 14)
    lines = wrap("the quick brown fox jumps over the lazy dog " * 4, font, 120)
    assert len(lines) > 2 and all(font.getlength(x) <= 120 for x in lines)
    cjk = render._font_for("我们", 14)
    lines = wrap("我们今天去哪里吃饭这是一个很长的中文句子需要换行显示", cjk, 80)
    assert len(lines) > 1 and all(cjk.getlength(x) <= 80 for x in lines)
    assert wrap("", font, 50) == [""]


def test_cjk_and_emoji_text_do_not_crash():
    src = frames((0.0,))
    segs = [Segment(0.0, 1.0, "你好，世界！こんにちは 안녕하세요 🙂", "[face_7]")]
    out = annotate(src, [face(0.0, "[face_7]")], segs, IDS)
    assert changed(out[0].image, src[0].image).any()


def test_fonts_fall_back_to_matplotlib_then_pillow(monkeypatch):
    render.latin_font_path.cache_clear()
    render._font.cache_clear()
    try:
        monkeypatch.setattr(render, "_LATIN_FONTS", ("/nonexistent/DejaVuSans.ttf",))
        bundled = render.latin_font_path()
        if bundled is not None:
            assert bundled.endswith("DejaVuSans.ttf") and "matplotlib" in bundled
        render.latin_font_path.cache_clear()
        monkeypatch.setattr(render, "_bundled_font", lambda: None)
        assert render.latin_font_path() is None
        src = frames((0.0,))
        out = annotate(src, [face(0.0, "[face_7]")], [Segment(0, 1, "hi", "[face_7]")], IDS)
        assert changed(out[0].image, src[0].image).any()  # Pillow's own font still draws
    finally:
        render.latin_font_path.cache_clear()
        render._font.cache_clear()


def test_system_dejavu_is_preferred_when_installed():
    render.latin_font_path.cache_clear()
    path = render.latin_font_path()
    if path is None:
        pytest.skip("no DejaVu font on this system and no matplotlib")
    assert path.endswith("DejaVuSans.ttf")


def test_annotated_window_encodes_to_h264():
    av = pytest.importorskip("av")
    src = [Frame(float(t), np.full((H + 1, W + 1, 3), 60, np.uint8)) for t in range(3)]
    out = annotate(src, [face(1.0, "[face_7]")], [Segment(0, 3, "subtitle", "[face_3]")], IDS)
    data = encode_mp4(out, fps=1)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = list(container.decode(stream))
    assert len(decoded) == 3 and (decoded[0].width, decoded[0].height) == (W, H)
