"""Draw what perception found onto the window's frames: face boxes with local ids, subtitles.

Floor 3 (perception). The VLM sees the window's sampled frames with each face boxed and labelled
by its local id (`<face_2>`) and the speech under way shown as speaker-prefixed subtitles
(`<face_2>: text`). Drawing happens on copies; the inputs are never changed. Frames with nothing
to draw are passed through (same pixels, same JPEG cache). Fonts: DejaVu Sans from the system
(Debian: `fonts-dejavu-core`), else the copy bundled with matplotlib, else Pillow's own default
font; a CJK font is used for lines with CJK characters when one is installed (otherwise those
glyphs render as boxes, never as an error). `video.encode_mp4` turns the result into the clip's
H.264 video for backends that take video.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskmem_lab.media.video import Frame
from taskmem_lab.perception.records import FaceDetection, Segment

UNKNOWN_LABEL = "unknown"
TIME_TOLERANCE = 1e-3  # a detection belongs to a frame whose time is within this many seconds

_LATIN_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian/Ubuntu: fonts-dejavu-core
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora (newer)
    "/Library/Fonts/DejaVuSans.ttf",
    "C:/Windows/Fonts/DejaVuSans.ttf",
)
_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # fonts-wqy-zenhei
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
# Distinct, readable box colours; a local id keeps its colour within a window.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)


@dataclass(frozen=True)
class RenderStyle:
    """Sizes as fractions of the frame height, so every resolution looks alike.

    Attributes:
        label_size: height of id labels.
        subtitle_size: height of subtitle text.
        max_subtitle_height: subtitles never cover more than this fraction of the frame; the
            oldest lines give way first.
        box_width: line width of face boxes.
        subtitle_alpha: opacity (0..255) of the band behind subtitle lines.
    """

    label_size: float = 1 / 24
    subtitle_size: float = 1 / 20
    max_subtitle_height: float = 0.45
    box_width: float = 1 / 180
    subtitle_alpha: int = 160


def _bundled_font() -> str | None:
    """matplotlib's DejaVuSans.ttf, located without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if p.is_file():
            return str(p)
    return None


@functools.lru_cache(maxsize=1)
def latin_font_path() -> str | None:
    """The first DejaVu Sans found (system, then matplotlib's copy); None: Pillow's default."""
    for p in _LATIN_FONTS:
        if Path(p).is_file():
            return p
    return _bundled_font()


@functools.lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    for p in _CJK_FONTS:
        if Path(p).is_file():
            return p
    return None


@functools.lru_cache(maxsize=64)
def _font(path: str | None, size: int) -> Any:
    from PIL import ImageFont

    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass  # unreadable or not a font: fall through to Pillow's default
    try:
        return ImageFont.load_default(size)  # scalable where Pillow has FreeType
    except TypeError:  # Pillow < 10.1 takes no size
        return ImageFont.load_default()


def _has_cjk(text: str) -> bool:
    return any(
        "\u2e80" <= ch <= "\u9fff"
        or "\uac00" <= ch <= "\ud7af"
        or "\uf900" <= ch <= "\ufaff"
        or "\uff00" <= ch <= "\uffef"
        for ch in text
    )


def _font_for(text: str, size: int) -> Any:
    if _has_cjk(text) and cjk_font_path() is not None:
        return _font(cjk_font_path(), size)
    return _font(latin_font_path(), size)


def _width(font: Any, text: str) -> float:
    return float(font.getlength(text))


def wrap(text: str, font: Any, max_width: float) -> list[str]:
    """Greedy line breaking on spaces; words (or unspaced CJK runs) wider than a line are
    broken between characters."""
    lines: list[str] = []
    current = ""
    tokens: list[str] = []
    for word in text.split(" "):
        if _width(font, word) <= max_width:
            tokens.append(word)
            continue
        piece = ""
        for ch in word:
            if piece and _width(font, piece + ch) > max_width:
                tokens.append(piece)
                piece = ""
            piece += ch
        if piece:
            tokens.append(piece)
    for tok in tokens:
        candidate = tok if not current else f"{current} {tok}"
        if current and _width(font, candidate) > max_width:
            lines.append(current)
            current = tok
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines or [""]


_VOICE_ID = re.compile(r"\[voice_\d+\]")


def _speaker_label(speaker: str, local_ids: dict[str, str]) -> str:
    # Face ids reach the model only as this window's local ids; a face id outside this window
    # is shown as unknown. A voice-only speaker `[voice_N]` has no face to number and keeps its
    # label, as the prompt's transcript shows it.
    if _VOICE_ID.fullmatch(speaker):
        return speaker
    return local_ids.get(speaker, UNKNOWN_LABEL)


def subtitle_texts(
    t: float, span: float, segments: Sequence[Segment], local_ids: dict[str, str]
) -> list[str]:
    """`<face_N>: text` for each segment overlapping `[t, t + span)`, in start order."""
    return [
        f"{_speaker_label(s.speaker, local_ids)}: {s.text.strip()}"
        for s in sorted(segments, key=lambda s: (s.start, s.end))
        if s.start < t + span and s.end > t and s.text.strip()
    ]


def _spans(frames: Sequence[Frame]) -> list[float]:
    """How long each frame stands for: until the next frame (the last: as long as the one
    before it), so every segment inside the window shows on at least one frame."""
    times = [f.time for f in frames]
    spans = [b - a for a, b in zip(times, times[1:], strict=False)]
    last = spans[-1] if spans else TIME_TOLERANCE
    return [max(s, TIME_TOLERANCE) for s in [*spans, last]]


def _draw_faces(
    draw: Any,
    dets: Sequence[FaceDetection],
    local_ids: dict[str, str],
    w: int,
    h: int,
    st: RenderStyle,
) -> None:
    font_size = max(9, round(h * st.label_size))
    line = max(2, round(h * st.box_width))
    for d in dets:
        local = local_ids.get(d.identity)
        if local is None:
            continue  # no id the prompt knows: a box without a label would only confuse
        number = int("".join(ch for ch in local if ch.isdigit()) or 0)
        color = _PALETTE[(number - 1) % len(_PALETTE)]
        x1, y1, x2, y2 = d.box[0] * w, d.box[1] * h, d.box[2] * w, d.box[3] * h
        draw.rectangle([x1, y1, x2, y2], outline=color, width=line)
        font = _font(latin_font_path(), font_size)
        left, top, right, bottom = draw.textbbox((0, 0), local, font=font)
        tw, th = right - left, bottom - top
        pad = max(1, font_size // 6)
        lx = min(max(0.0, x1), max(0.0, w - tw - 2 * pad))
        ly = y1 - th - 2 * pad if y1 - th - 2 * pad >= 0 else min(y2, h - th - 2 * pad)
        draw.rectangle([lx, ly, lx + tw + 2 * pad, ly + th + 2 * pad], fill=color)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luminance > 150 else (255, 255, 255)
        draw.text((lx + pad - left, ly + pad - top), local, font=font, fill=ink)


def _draw_subtitles(draw: Any, texts: Sequence[str], w: int, h: int, st: RenderStyle) -> None:
    size = max(10, round(h * st.subtitle_size))
    margin = max(2, size // 3)
    rows: list[tuple[str, Any]] = []
    for text in texts:
        font = _font_for(text, size)
        rows.extend((line, font) for line in wrap(text, font, w - 4 * margin))
    line_h = round(size * 1.25)
    max_rows = max(1, int(h * st.max_subtitle_height // line_h))
    rows = rows[-max_rows:]  # the newest speech stays readable; the oldest lines give way
    y = h - margin - line_h * len(rows)
    for line, font in rows:
        left, top, right, bottom = draw.textbbox((0, 0), line, font=font)
        tw = right - left
        x = (w - tw) / 2
        draw.rectangle(
            [x - margin, y, x + tw + margin, y + line_h], fill=(0, 0, 0, st.subtitle_alpha)
        )
        draw.text(
            (x - left, y + (line_h - (bottom - top)) / 2 - top),
            line,
            font=font,
            fill=(255, 255, 255),
        )
        y += line_h


def annotate(
    frames: Sequence[Frame],
    faces: Sequence[FaceDetection],
    segments: Sequence[Segment],
    local_ids: dict[str, str],
    style: RenderStyle | None = None,
) -> list[Frame]:
    """New frames (same times) with boxes, `<face_N>` labels and speaker-prefixed subtitles.

    A detection is drawn on the frame whose time is within 1 ms of its own, labelled with its
    local id (`local_ids` maps global ids `[face_N]` to local `<face_N>`); detections whose
    identity is not in `local_ids` are not drawn. A segment is shown on every frame whose span
    (until the next frame) it overlaps, as `<face_N>: text` (or `unknown: text`); lines of
    overlapping segments stack upwards from the bottom in start order, wrapped to the frame
    width.
    """
    from PIL import Image, ImageDraw

    st = style or RenderStyle()
    times = [f.time for f in frames]
    by_frame: dict[int, list[FaceDetection]] = {}
    if frames:
        order = np.argsort(times, kind="stable")
        sorted_times = np.asarray(times, dtype=np.float64)[order]
        for d in faces:
            j = int(np.searchsorted(sorted_times, d.time - TIME_TOLERANCE, "left"))
            while j < len(sorted_times) and sorted_times[j] <= d.time + TIME_TOLERANCE:
                by_frame.setdefault(int(order[j]), []).append(d)
                j += 1
    out: list[Frame] = []
    for i, (frame, span) in enumerate(zip(frames, _spans(frames), strict=True)):
        t = frame.time
        texts = subtitle_texts(t, span, segments, local_ids)
        dets = [d for d in by_frame.get(i, []) if d.identity in local_ids]
        if not dets and not texts:
            out.append(Frame(t, frame.image, frame._jpeg))  # unchanged pixels: share the cache
            continue
        img = Image.fromarray(frame.image).copy()  # fromarray may share the input's memory
        h, w = frame.image.shape[:2]
        draw = ImageDraw.Draw(img, "RGBA")
        _draw_faces(draw, dets, local_ids, w, h, st)
        if texts:
            _draw_subtitles(draw, texts, w, h, st)
        out.append(Frame(t, np.array(img)))
    return out
