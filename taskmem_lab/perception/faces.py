"""Faces of a clip: detection and embedding backends, shot cuts, tracks, clustering.

Floor 3 (perception). For the frames sampled at `face_fps` inside a clip's new span:

1. `detect_faces` finds faces on downscaled copies of the frames (boxes mapped back) and keeps
   those with detection score >= `min_score` and quality >= the backend's threshold;
2. `perception.shots.shot_cuts` finds hard cuts between consecutive sampled frames;
3. `build_tracks` links detections of consecutive frames by IoU into tracks that end at a cut;
4. each track embeds a few of its faces (`embed_fps`: the best face of every `1 / embed_fps`
   seconds of the track, from the full-size frames, in one batch for the clip), and
   `split_track` splits a track whose embeddings stop agreeing (a face left and another took
   its place), bisecting with extra embeddings to find the frame where it changed;
5. `cluster_faces` clusters the embeddings with HDBSCAN on cosine distance;
6. `link_tracks` gives each track its majority cluster (never two tracks seen in the same frame
   one cluster) and drops tracks shorter than `min_track_s`.

`perception.identities.IdentityRegistry` then turns clusters into global ids. A face right
after a cut therefore takes its identity from its own track's embeddings, never from the box it
overlaps in the previous shot.

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
from dataclasses import dataclass

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
    build_tracks,
    cluster_faces,
    hdbscan_cosine,
    link_tracks,
    pick_for_embedding,
    split_track,
)
from taskmem_lab.perception.params import (
    CLUSTER_PLUGIN_ENV,
    DEFAULT_CLUSTER_EPSILON,
    DEFAULT_MIN_QUALITY,
    DEFAULT_SPLIT_DISTANCE,
    FACE_PLUGIN_ENV,
    FaceParams,
)
from taskmem_lab.perception.records import FaceDetection, unit
from taskmem_lab.perception.shots import shot_cuts

EMPTY_EMBEDDING = np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------- detection


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    from PIL import Image

    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return small, size[0] / w


@dataclass
class _Source:
    """Where a detection came from, to embed it later: the full-size image and the candidate."""

    image: np.ndarray
    candidate: Candidate


ROI_MARGIN = 0.8  # a region searched around a face reaches this many face sizes beyond it
ROI_FACE_PX = 110  # regions are scaled so their face is this wide (dlib's HOG finds >= 80 px)


def _regions(
    boxes: Sequence[tuple[float, float, float, float]], w: int, h: int
) -> list[tuple[int, int, int, int]]:
    """Search regions (pixel x1, y1, x2, y2) around face boxes, clipped to the image."""
    out = []
    for x1, y1, x2, y2 in boxes:
        mx, my = (x2 - x1) * ROI_MARGIN, (y2 - y1) * ROI_MARGIN
        out.append(
            (
                max(0, int(x1 - mx)),
                max(0, int(y1 - my)),
                min(w, int(math.ceil(x2 + mx))),
                min(h, int(math.ceil(y2 + my))),
            )
        )
    return out


def _dedupe(cands: list[Candidate]) -> list[Candidate]:
    """One candidate per face where search regions overlapped (the higher score wins)."""
    kept: list[Candidate] = []
    for c in sorted(cands, key=lambda c: -c.score):
        if all(box_iou(c.box, k.box) <= 0.5 for k in kept):
            kept.append(c)
    return kept


def _find(
    smalls: Sequence[np.ndarray],
    whole: Sequence[bool],
    backend: FaceBackend,
    previous: list[Candidate] | None,
) -> tuple[list[list[Candidate]], list[Candidate] | None]:
    """Candidates per (downscaled) image: whole-image search where `whole`, else search in
    regions around the faces of the last whole-image search (carried in `previous`)."""
    out: list[list[Candidate]] = [[] for _ in smalls]
    keys = [k for k, w in enumerate(whole) if w]
    found = backend.detect([smalls[k] for k in keys]) if keys else []
    for k, cands in zip(keys, found, strict=True):
        out[k] = cands
    from PIL import Image

    crops: list[np.ndarray] = []
    where: list[tuple[int, int, int, float]] = []
    last = previous
    for k, image in enumerate(smalls):
        if whole[k]:
            last = out[k]
            continue
        if not last:
            continue
        h, w = image.shape[:2]
        for box, (x1, y1, x2, y2) in zip(
            (c.box for c in last), _regions([c.box for c in last], w, h), strict=True
        ):
            if x2 - x1 < 16 or y2 - y1 < 16:
                continue
            # The face is known: scale its region so the face is ROI_FACE_PX wide, which the
            # detector finds without upsampling.
            factor = ROI_FACE_PX / max(1.0, box[2] - box[0])
            size = (max(1, round((x2 - x1) * factor)), max(1, round((y2 - y1) * factor)))
            crop = Image.fromarray(np.ascontiguousarray(image[y1:y2, x1:x2]))
            crops.append(np.asarray(crop.resize(size, Image.Resampling.BILINEAR)))
            where.append((k, x1, y1, size[0] / (x2 - x1)))
    if crops:
        per_crop = backend.detect(crops, upsample=0)
        by_image: dict[int, list[Candidate]] = {}
        for (k, ox, oy, f), cands in zip(where, per_crop, strict=True):
            for c in cands:
                b = c.box
                c.box = (b[0] / f + ox, b[1] / f + oy, b[2] / f + ox, b[3] / f + oy)
                if c.landmarks is not None:
                    c.landmarks = np.asarray(c.landmarks, float) / f + (ox, oy)
                by_image.setdefault(k, []).append(c)
        for k, cands in by_image.items():
            out[k] = _dedupe(cands)
    return out, last


def _detect(
    frames: Sequence[Frame],
    params: FaceParams,
    backend: FaceBackend,
    embed: bool,
    timings: dict[str, float] | None,
    cuts: Sequence[float] = (),
) -> tuple[list[FaceDetection], list[_Source]]:
    min_quality = params.quality_threshold
    new_shot = {round(t, 6) for t in cuts}
    out: list[FaceDetection] = []
    sources: list[_Source] = []
    previous: list[Candidate] | None = None
    for start in range(0, len(frames), params.batch_size):
        batch = frames[start : start + params.batch_size]
        t0 = time.perf_counter()
        smalls = [_downscale(f.image, params.detect_max_side) for f in batch]
        whole = [
            (start + k) % params.detect_every == 0 or round(f.time, 6) in new_shot
            for k, f in enumerate(batch)
        ]
        found, previous = _find([s for s, _ in smalls], whole, backend, previous)
        items: list[tuple[np.ndarray, Candidate]] = []
        owners: list[Frame] = []
        for frame, (_, scale), cands in zip(batch, smalls, found, strict=True):
            for c in cands:
                if c.score < params.min_score:
                    continue
                c = Candidate(
                    tuple(v / scale for v in c.box),  # type: ignore[arg-type]
                    c.score,
                    None if c.landmarks is None else np.asarray(c.landmarks, float) / scale,
                )
                items.append((frame.image, c))
                owners.append(frame)
        _add(timings, "detect_s", time.perf_counter() - t0)
        if not items:
            continue
        t0 = time.perf_counter()
        described = backend.describe(items, [embed] * len(items))
        for frame, (image, cand), desc in zip(owners, items, described, strict=True):
            if not (desc.quality >= min_quality or math.isnan(desc.quality)):
                continue
            h, w = frame.image.shape[:2]
            emb = EMPTY_EMBEDDING if desc.embedding is None else unit(desc.embedding)
            out.append(
                FaceDetection(
                    frame.time, _normalized(cand.box, w, h), cand.score, desc.quality, emb
                )
            )
            sources.append(_Source(image, cand))
        _add(timings, "embed_s" if embed else "describe_s", time.perf_counter() - t0)
    return out, sources


def detect_faces(
    frames: Sequence[Frame],
    params: FaceParams,
    backend: FaceBackend | None = None,
    timings: dict[str, float] | None = None,
) -> list[FaceDetection]:
    """Faces on `frames` (sampled at `face_fps`), kept by score and quality, in frame order.

    Boxes are normalized to 0..1; embeddings are unit length when `embed_fps` is None and empty
    otherwise (`clip_faces` then embeds a few faces per track). A `TASKMEM_FACE_BACKEND`
    plug-in, when set, replaces the backend (and always embeds). `timings`, if given,
    accumulates the seconds spent in "detect_s" and "embed_s" (or "describe_s": quality
    without embeddings). Without a `backend`, one is made for this call (loading its models);
    streams should make one and pass it.
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
    return _detect(frames, params, backend, params.embed_fps is None, timings)[0]


def clip_faces(
    frames: Sequence[Frame],
    params: FaceParams,
    backend: FaceBackend | None = None,
    timings: dict[str, float] | None = None,
) -> list[FaceDetection]:
    """detect -> cuts -> tracks -> embed a few per track -> split -> cluster -> link.

    The faces of one clip's sampled frames, ready for identities. `frames` must be sampled at
    `params.face_fps` (the spacing decides how long a track lasts). `timings` (if given)
    accumulates "detect_s", "describe_s", "embed_s", "shots_s" and "cluster_s" (clustering
    and linking).
    """
    times = [f.time for f in frames]
    if len(times) > 1:
        spacing = float(np.median(np.diff(sorted(times))))
        if abs(spacing * params.face_fps - 1.0) > 0.01:
            raise ConfigError(
                f"frames are {spacing:.4f}s apart but face_fps is {params.face_fps}: sample the "
                "span with video.sample_times(start, end, face_fps)"
            )
    plugin = params.resolved_face_plugin()
    if not plugin and backend is None:
        own = make_face_backend(params)
        try:
            return clip_faces(frames, params, own, timings)
        finally:
            own.close()
    t0 = time.perf_counter()
    cuts = (
        shot_cuts(frames, params.cut_hist_threshold, params.cut_pixel_threshold)
        if params.cut_detection and len(frames) > 1
        else []
    )
    _add(timings, "shots_s", time.perf_counter() - t0)
    sources: list[_Source] = []
    if plugin:
        dets = _plugin_faces(frames, params, plugin, timings)
    else:
        assert backend is not None
        embed_all = params.embed_fps is None
        dets, sources = _detect(frames, params, backend, embed_all, timings, cuts)

    def embed(indices: Sequence[int]) -> None:
        todo = [i for i in indices if not dets[i].embedding.size and i < len(sources)]
        if not todo or backend is None:
            return
        t1 = time.perf_counter()
        items = [(sources[i].image, sources[i].candidate) for i in todo]
        for i, desc in zip(todo, backend.describe(items, [True] * len(todo)), strict=True):
            if desc.embedding is not None:
                dets[i].embedding = unit(desc.embedding)
        _add(timings, "embed_s", time.perf_counter() - t1)

    tracks = build_tracks(dets, params, times, cuts)
    if params.embed_fps is not None:
        # One batch for the whole clip: the best faces, spread over each track.
        embed([i for tr in tracks for i in pick_for_embedding(dets, tr, params.embed_fps)])
    limit = params.split_limit
    pieces = [piece for tr in tracks for piece in split_track(tr, dets, limit, embed)]
    t0 = time.perf_counter()
    out = link_tracks(cluster_faces(dets, params), params, times, tracks=pieces)
    _add(timings, "cluster_s", time.perf_counter() - t0)
    return out


__all__ = [
    "CLUSTER_PLUGIN_ENV",
    "DEFAULT_CLUSTER_EPSILON",
    "DEFAULT_MIN_QUALITY",
    "DEFAULT_SPLIT_DISTANCE",
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
    "build_tracks",
    "clip_faces",
    "cluster_faces",
    "detect_faces",
    "dlib_model_paths",
    "dlib_quality",
    "hdbscan_cosine",
    "insightface_model_dir",
    "link_tracks",
    "make_face_backend",
    "pick_for_embedding",
    "shot_cuts",
    "split_track",
]
