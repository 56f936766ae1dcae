"""Faces of a clip: detection and embedding backends, in-clip clustering, IoU track linking.

Floor 3 (perception). For the frames sampled at `face_fps` inside a clip's new span:

1. `detect_faces` finds faces on downscaled copies of the frames (boxes mapped back), embeds
   them from the full-size frames in batches, and keeps those with detection score >=
   `min_score` and quality >= the backend's threshold;
2. `cluster_faces` clusters the embeddings with HDBSCAN on cosine distance;
3. `link_tracks` links detections of consecutive sampled frames by IoU into tracks, gives each
   track its majority cluster (never two tracks seen in the same frame one cluster) and drops
   tracks shorter than `min_track_s`.

`perception.identities.IdentityRegistry` then turns clusters into global ids.

Backends (`FACE_BACKENDS`, `make_face_backend`):
- `dlib`: dlib's HOG (or CNN) frontal face detector, its 5-point shape predictor and ResNet face
  encoder, with the model files of the `face-recognition-models` package; works offline.
- `insightface`: buffalo_l (SCRFD detector + ArcFace), from `~/.insightface/models` or a given
  directory, fetched by insightface on first use where the network allows.
The original tool's plug-ins replace a step: a module named by `TASKMEM_FACE_BACKEND` whose
`extract_faces(frames) -> list[dict]` replaces detection and embedding, and one named by
`TASKMEM_FACE_CLUSTER_BACKEND` whose `cluster_faces(faces, min_cluster_size)` replaces clustering.

Backends and the detection plug-in live in `perception.face_backends`, clustering and tracks in
`perception.face_tracks`; their public names are re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from taskmem_lab.errors import ConfigError
from taskmem_lab.media.video import Frame
from taskmem_lab.perception.face_backends import (
    FACE_BACKENDS,
    Candidate,
    Described,
    DlibBackend,
    FaceBackend,
    InsightFaceBackend,
    _add,
    _normalized,
    _plugin_faces,
    dlib_model_paths,
    dlib_quality,
    insightface_model_dir,
    make_face_backend,
)
from taskmem_lab.perception.face_backends import _margin_score as _margin_score
from taskmem_lab.perception.face_backends import _score_margin as _score_margin
from taskmem_lab.perception.face_tracks import (
    box_iou,
    cluster_faces,
    hdbscan_cosine,
    link_tracks,
)
from taskmem_lab.perception.params import (
    CLUSTER_PLUGIN_ENV,
    DEFAULT_CLUSTER_EPSILON,
    DEFAULT_MIN_QUALITY,
    FACE_PLUGIN_ENV,
    FaceParams,
)
from taskmem_lab.perception.records import FaceDetection, unit

EMPTY_EMBEDDING = np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------- detection


def _on_grid(t: float, fps: float) -> bool:
    n = round(t * fps)
    return abs(t * fps - n) < 1e-4


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    from PIL import Image

    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return small, size[0] / w


def detect_faces(
    frames: Sequence[Frame],
    params: FaceParams,
    backend: FaceBackend | None = None,
    timings: dict[str, float] | None = None,
) -> list[FaceDetection]:
    """Faces on `frames` (sampled at `face_fps`), kept by score and quality, in frame order.

    Boxes are normalized to 0..1; embeddings are unit length (empty where `embed_fps` skipped
    the frame). A `TASKMEM_FACE_BACKEND` plug-in, when set, replaces the backend. `timings`, if
    given, accumulates the seconds spent in "detect_s" and "embed_s". Without a `backend`, one
    is made for this call (loading its models); streams should make one and pass it.
    """
    plugin = params.resolved_face_plugin()
    if plugin:
        return _plugin_faces(frames, params, plugin, timings)
    if backend is None:
        own = make_face_backend(params)
        try:
            return detect_faces(frames, params, own, timings)
        finally:
            own.close()
    min_quality = params.quality_threshold
    out: list[FaceDetection] = []

    def describe(items: list[tuple[np.ndarray, Candidate]], owners: list[Frame]) -> float:
        t0 = time.perf_counter()
        embed = [params.embed_fps is None or _on_grid(f.time, params.embed_fps) for f in owners]
        described = backend.describe(items, embed)
        for frame, (_, cand), desc in zip(owners, items, described, strict=True):
            if not (desc.quality >= min_quality or math.isnan(desc.quality)):
                continue
            h, w = frame.image.shape[:2]
            emb = EMPTY_EMBEDDING if desc.embedding is None else unit(desc.embedding)
            out.append(
                FaceDetection(
                    frame.time, _normalized(cand.box, w, h), cand.score, desc.quality, emb
                )
            )
        return time.perf_counter() - t0

    for start in range(0, len(frames), params.batch_size):
        batch = frames[start : start + params.batch_size]
        t0 = time.perf_counter()
        smalls = [_downscale(f.image, params.detect_max_side) for f in batch]
        found = backend.detect([s for s, _ in smalls])
        items: list[tuple[np.ndarray, Candidate]] = []
        owners: list[Frame] = []
        for frame, (_, scale), cands in zip(batch, smalls, found, strict=True):
            for c in cands:
                if c.score < params.min_score:
                    continue
                c.box = tuple(v / scale for v in c.box)  # type: ignore[assignment]
                if c.landmarks is not None:
                    c.landmarks = np.asarray(c.landmarks, float) / scale
                items.append((frame.image, c))
                owners.append(frame)
        _add(timings, "detect_s", time.perf_counter() - t0)
        if items:
            _add(timings, "embed_s", describe(items, owners))
    return out


def clip_faces(
    frames: Sequence[Frame],
    params: FaceParams,
    backend: FaceBackend | None = None,
    timings: dict[str, float] | None = None,
) -> list[FaceDetection]:
    """detect -> cluster -> link: the faces of one clip's sampled frames, ready for identities.

    `frames` must be sampled at `params.face_fps` (the spacing decides how long a track lasts).
    `timings` (if given) accumulates "detect_s", "embed_s" and "cluster_s" (clustering and
    linking).
    """
    times = [f.time for f in frames]
    if len(times) > 1:
        spacing = float(np.median(np.diff(sorted(times))))
        if abs(spacing * params.face_fps - 1.0) > 0.01:
            raise ConfigError(
                f"frames are {spacing:.4f}s apart but face_fps is {params.face_fps}: sample the "
                "span with video.sample_times(start, end, face_fps)"
            )
    dets = detect_faces(frames, params, backend, timings)
    t0 = time.perf_counter()
    out = link_tracks(cluster_faces(dets, params), params, times)
    _add(timings, "cluster_s", time.perf_counter() - t0)
    return out


__all__ = [
    "CLUSTER_PLUGIN_ENV",
    "DEFAULT_CLUSTER_EPSILON",
    "DEFAULT_MIN_QUALITY",
    "EMPTY_EMBEDDING",
    "FACE_BACKENDS",
    "FACE_PLUGIN_ENV",
    "Candidate",
    "Described",
    "DlibBackend",
    "FaceBackend",
    "FaceParams",
    "InsightFaceBackend",
    "box_iou",
    "clip_faces",
    "cluster_faces",
    "detect_faces",
    "dlib_model_paths",
    "dlib_quality",
    "hdbscan_cosine",
    "insightface_model_dir",
    "link_tracks",
    "make_face_backend",
]
