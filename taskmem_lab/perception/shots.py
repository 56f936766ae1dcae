"""Shot boundaries (hard cuts) between consecutive sampled frames.

Floor 3 (perception). Face tracks link boxes that overlap on consecutive frames; across a hard
cut the box in the same place is usually somebody else, so tracks must break there. A cut is
found with two cheap measures on 32x18 thumbnails of consecutive sampled frames:

- the colour histogram distance (half the L1 distance of 4x4x4-bin RGB histograms, 0..1), which
  a change of scene moves and camera motion barely does;
- the mean absolute pixel difference (0..1), which a change of framing moves even when the
  colours stay (two people on the same background).

A cut is declared when either reaches its threshold. A false cut only ends tracks early (each
piece is identified by its own embeddings), while a missed cut can give one person another's
id, so the thresholds lean to sensitivity. PySceneDetect's content detector does the same on
HSV histograms of every decoded frame; on frames sampled at a few fps the two tests here suffice
and need no extra package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taskmem_lab.media.video import Frame

THUMB = (32, 18)
BINS = 4


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A 32x18 RGB float thumbnail (0..1) of an RGB image (box-filtered)."""
    from PIL import Image

    small = Image.fromarray(np.ascontiguousarray(image)).resize(THUMB, Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def _histogram(thumb: np.ndarray) -> np.ndarray:
    q = np.minimum((thumb * BINS).astype(np.int64), BINS - 1).reshape(-1, 3)
    idx = (q[:, 0] * BINS + q[:, 1]) * BINS + q[:, 2]
    hist = np.bincount(idx, minlength=BINS**3).astype(np.float64)
    return hist / max(1.0, hist.sum())


def frame_changes(frames: Sequence[Frame]) -> list[tuple[float, float]]:
    """Per consecutive pair of frames: (histogram distance, pixel difference), both 0..1."""
    thumbs = [thumbnail(f.image) for f in frames]
    hists = [_histogram(t) for t in thumbs]
    out = []
    for k in range(1, len(frames)):
        hist = 0.5 * float(np.abs(hists[k] - hists[k - 1]).sum())
        pix = float(np.abs(thumbs[k] - thumbs[k - 1]).mean())
        out.append((hist, pix))
    return out


def shot_cuts(
    frames: Sequence[Frame], hist_threshold: float = 0.3, pixel_threshold: float = 0.08
) -> list[float]:
    """Times of the frames that start a new shot (the first frame never counts).

    `frames` are consecutive sampled frames in time order; a cut lies between frame k-1 and
    frame k when their histogram distance reaches `hist_threshold` or their mean pixel
    difference reaches `pixel_threshold`.
    """
    cuts = []
    for k, (hist, pix) in enumerate(frame_changes(frames), 1):
        if hist >= hist_threshold or pix >= pixel_threshold:
            cuts.append(frames[k].time)
    return cuts
