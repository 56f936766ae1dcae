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
"""

from __future__ import annotations

import base64
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taskmem_lab.errors import ConfigError, PluginError
from taskmem_lab.perception.records import FaceDetection
from taskmem_lab.plugins import call_plugin, plugin_function
from taskmem_lab.video import Frame

FACE_PLUGIN_ENV = "TASKMEM_FACE_BACKEND"
CLUSTER_PLUGIN_ENV = "TASKMEM_FACE_CLUSTER_BACKEND"
_FACES_HINT = "dlib face models are not installed: pip install 'taskmem_lab[faces]'"
_INSIGHTFACE_HINT = "insightface is not installed: pip install 'taskmem_lab[insightface]'"
_CLUSTER_HINT = "hdbscan is not installed: pip install 'taskmem_lab[faces]'"

# Quality thresholds per backend, each on its own backend's quality scale (see the backends).
# The plug-in's scale is unknown, so its faces are kept unless `min_quality` says otherwise.
DEFAULT_MIN_QUALITY: dict[str, float] = {"dlib": 0.3, "insightface": 20.0, "plugin": 0.0}
# HDBSCAN's cluster_selection_epsilon per embedding space (cosine distance). dlib descriptors of
# one person across frames lie within ~0.02 of each other and different people >= ~0.07 apart;
# ArcFace puts one person within ~0.3 and different people beyond ~0.7.
DEFAULT_CLUSTER_EPSILON: dict[str, float] = {"dlib": 0.03, "insightface": 0.3, "plugin": 0.0}
EMPTY_EMBEDDING = np.zeros(0, dtype=np.float32)


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"parameter {name!r}: {message}")


@dataclass(frozen=True)
class FaceParams:
    """Parameters of face perception.

    Attributes:
        backend: "dlib" (offline, models from face-recognition-models) or "insightface".
        face_fps: frames per second sampled from the new span for faces.
        embed_fps: embed faces only on frames of the global `n / embed_fps` grid (None: on every
            sampled frame). Faces between those frames are still detected and tracked and take
            their track's cluster; they carry an empty embedding, and a track with no embedded
            frame (possible when shorter than 1 / embed_fps) is dropped. Embedding is the
            costly step on CPU, and consecutive frames at 10 fps add little to a cluster.
        min_score: faces with a lower detection score are dropped (scores are 0..1; see the
            backends for what they mean).
        min_quality: faces with a lower quality are dropped; None uses the backend's default
            (`DEFAULT_MIN_QUALITY`), which is on that backend's own scale.
        min_cluster_size: HDBSCAN's smallest cluster within a clip.
        cluster_epsilon: HDBSCAN's cluster_selection_epsilon (cosine distance); None uses the
            backend's default (`DEFAULT_CLUSTER_EPSILON`).
        iou: detections on consecutive sampled frames whose boxes overlap by more than this
            intersection-over-union belong to one track.
        min_track_s: tracks shorter than this (seconds, each detection counting 1 / face_fps)
            are dropped.
        detect_max_side: frames are downscaled to at most this many pixels on their longest side
            for detection; boxes are mapped back, and embeddings are taken from the full frame.
        upsample: dlib only: times the detection image is doubled before the detector runs
            (dlib's HOG finds faces of >= 80 px, >= 40 px after one doubling).
        dlib_detector: "hog" (fast, CPU) or "cnn" (dlib's MMOD CNN, slow without CUDA).
        batch_size: frames detected (and faces embedded) per batch; also frames per call of a
            `TASKMEM_FACE_BACKEND` plug-in.
        threads: threads for dlib's HOG detection (one detector each).
        insightface_model: a model pack name under `<insightface_root>/models` or a directory.
        insightface_root: insightface's model root.
        det_size: insightface only: the detector's square input size.
        face_plugin: module replacing detection + embedding (None: `$TASKMEM_FACE_BACKEND`).
        cluster_plugin: module replacing clustering (None: `$TASKMEM_FACE_CLUSTER_BACKEND`).
    """

    backend: str = "dlib"
    face_fps: float = 10.0
    embed_fps: float | None = None
    min_score: float = 0.75
    min_quality: float | None = None
    min_cluster_size: int = 3
    cluster_epsilon: float | None = None
    iou: float = 0.6
    min_track_s: float = 0.6
    detect_max_side: int = 480
    upsample: int = 1
    dlib_detector: str = "hog"
    batch_size: int = 16
    threads: int = 2
    insightface_model: str = "buffalo_l"
    insightface_root: str = "~/.insightface"
    det_size: int = 640
    face_plugin: str | None = None
    cluster_plugin: str | None = None

    def __post_init__(self) -> None:
        _require(
            self.backend in FACE_BACKENDS,
            "backend",
            f"must be one of {sorted(FACE_BACKENDS)}, got {self.backend!r}",
        )
        _require(0 < self.face_fps <= 60, "face_fps", f"must be in (0, 60], got {self.face_fps}")
        if self.embed_fps is not None:
            _require(
                0 < self.embed_fps <= self.face_fps,
                "embed_fps",
                f"must be None or in (0, face_fps={self.face_fps}], got {self.embed_fps}",
            )
        _require(0 <= self.min_score <= 1, "min_score", f"must be in 0..1, got {self.min_score}")
        if self.min_quality is not None:
            _require(
                math.isfinite(self.min_quality), "min_quality", "must be a finite number or None"
            )
        _require(
            self.min_cluster_size >= 2,
            "min_cluster_size",
            f"must be >= 2, got {self.min_cluster_size}",
        )
        if self.cluster_epsilon is not None:
            _require(
                0 <= self.cluster_epsilon < 2,
                "cluster_epsilon",
                f"must be None or in [0, 2), got {self.cluster_epsilon}",
            )
        _require(0 < self.iou < 1, "iou", f"must be in (0, 1), got {self.iou}")
        _require(self.min_track_s >= 0, "min_track_s", f"must be >= 0, got {self.min_track_s}")
        _require(
            self.detect_max_side >= 64,
            "detect_max_side",
            f"must be >= 64 pixels, got {self.detect_max_side}",
        )
        _require(0 <= self.upsample <= 3, "upsample", f"must be in 0..3, got {self.upsample}")
        _require(
            self.dlib_detector in ("hog", "cnn"),
            "dlib_detector",
            f"must be 'hog' or 'cnn', got {self.dlib_detector!r}",
        )
        _require(1 <= self.batch_size <= 1024, "batch_size", "must be in 1..1024")
        _require(1 <= self.threads <= 64, "threads", "must be in 1..64")
        _require(
            self.det_size >= 160 and self.det_size % 32 == 0,
            "det_size",
            "must be a multiple of 32, >= 160",
        )

    @property
    def quality_threshold(self) -> float:
        """`min_quality`, or the default of the backend that will produce the faces."""
        if self.min_quality is not None:
            return self.min_quality
        kind = "plugin" if self.resolved_face_plugin() else self.backend
        return DEFAULT_MIN_QUALITY[kind]

    @property
    def epsilon(self) -> float:
        """`cluster_epsilon`, or the default for the embeddings that will be clustered."""
        if self.cluster_epsilon is not None:
            return self.cluster_epsilon
        kind = "plugin" if self.resolved_face_plugin() else self.backend
        return DEFAULT_CLUSTER_EPSILON[kind]

    def resolved_face_plugin(self) -> str | None:
        return self.face_plugin or os.environ.get(FACE_PLUGIN_ENV) or None

    def resolved_cluster_plugin(self) -> str | None:
        return self.cluster_plugin or os.environ.get(CLUSTER_PLUGIN_ENV) or None

    def resolved(self) -> FaceParams:
        """A copy with the plug-ins named by the environment written in, for run manifests."""
        return replace(
            self,
            face_plugin=self.resolved_face_plugin(),
            cluster_plugin=self.resolved_cluster_plugin(),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- backends


@dataclass
class Candidate:
    """A face a backend detected: box and landmarks in pixels of the full-size frame."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None


@dataclass
class Described:
    """What a backend says about a candidate: its embedding (None: not asked) and quality."""

    embedding: np.ndarray | None
    quality: float


class FaceBackend(Protocol):
    """Detection on (downscaled) images, and description of faces on full-size images."""

    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Candidate]]:
        """Faces per RGB image, boxes in that image's pixels, scores in 0..1."""
        ...

    def describe(
        self, items: Sequence[tuple[np.ndarray, Candidate]], embed: Sequence[bool]
    ) -> list[Described]:
        """Quality of each (full-size image, candidate), and its raw embedding where asked."""
        ...

    def close(self) -> None:
        """Release threads or sessions the backend holds."""
        ...


def _margin_score(margin: float) -> float:
    """dlib detector margin -> 0..1: 0.75 exactly at dlib's own decision boundary (margin 0).

    `1 / (1 + e^-m / 3)` rises with the margin like a logistic and equals the default
    `min_score` 0.75 where dlib itself would stop reporting a face.
    """
    return 1.0 / (1.0 + math.exp(-margin) / 3.0)


def _score_margin(score: float) -> float:
    """Inverse of `_margin_score`: the detector margin of a 0..1 score."""
    score = min(max(score, 1e-6), 1 - 1e-6)
    return -math.log(3.0 * (1.0 / score - 1.0))


def _laplacian_variance(gray: np.ndarray) -> float:
    g = gray.astype(np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def dlib_quality(side_px: float, chip: np.ndarray, landmarks: np.ndarray) -> float:
    """Quality of a dlib face in 0..1: the weakest of size, sharpness and pose.

    - size: the face box's shorter side in pixels of the full frame, 20 px -> 0, >= 60 px -> 1
      (dlib's encoder sees a 150 px chip; much smaller faces are mostly upscaling blur);
    - sharpness: variance of the Laplacian over the central 90x90 of the aligned 150x150 grey
      chip, /30 (sharp faces measure 30-120 even at 40 px; a 2 px Gaussian blur drops them
      under 10);
    - pose: where the nose lies between the eyes along the eye line (5-point landmarks):
      t = 0.5 is frontal; yaw = |t - 0.5| * 2 and pose = 1 - yaw^2.
    The default threshold 0.3 drops blurred, tiny and strongly turned faces.
    """
    size_q = min(1.0, max(0.0, (side_px - 20.0) / 40.0))
    gray = chip.mean(axis=2) if chip.ndim == 3 else chip
    sharp_q = min(1.0, _laplacian_variance(gray[30:120, 30:120]) / 30.0)
    eye_a, eye_b, nose = landmarks[0:2].mean(0), landmarks[2:4].mean(0), landmarks[4]
    axis = eye_b - eye_a
    denom = float(axis @ axis)
    t = float((nose - eye_a) @ axis / denom) if denom > 0 else 0.5
    yaw = min(1.0, abs(t - 0.5) * 2.0)
    pose_q = 1.0 - yaw * yaw
    return float(min(size_q, sharp_q, pose_q))


_DLIB_MODEL_FILES = {
    "shape": "shape_predictor_5_face_landmarks.dat",
    "encoder": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn": "mmod_human_face_detector.dat",
}


def dlib_model_paths() -> dict[str, Path]:
    """The model files shipped in `face-recognition-models`, located without importing it
    (its `__init__` needs `pkg_resources`, which new setuptools no longer has)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(_FACES_HINT)
    root = Path(next(iter(spec.submodule_search_locations))) / "models"
    paths = {key: root / name for key, name in _DLIB_MODEL_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"face-recognition-models is missing {', '.join(missing)}: reinstall it")
    return paths


class DlibBackend:
    """dlib with the models of `face-recognition-models` (offline).

    Score: the detector's margin mapped to 0..1 by `_margin_score` (0.75 = dlib's own boundary).
    Quality: `dlib_quality` (size, sharpness, pose; 0..1). Embedding: the 128-d ResNet face
    descriptor of the aligned 150x150 chip.
    """

    name = "dlib"

    def __init__(self, params: FaceParams) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise ImportError(_FACES_HINT) from exc
        models = dlib_model_paths()
        self._dlib = dlib
        self.params = params
        self._shape = dlib.shape_predictor(str(models["shape"]))
        self._encoder = dlib.face_recognition_model_v1(str(models["encoder"]))
        self._cnn = None
        if params.dlib_detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(str(models["cnn"]))
        # One HOG detector per thread: a shared detector serializes the threads.
        self._hog = [dlib.get_frontal_face_detector() for _ in range(params.threads)]
        self._pool = ThreadPoolExecutor(params.threads) if params.threads > 1 else None
        self._adjust = _score_margin(params.min_score)

    def _hog_run(self, detector: Any, images: Sequence[np.ndarray]) -> list[list[Candidate]]:
        from PIL import Image

        out = []
        for img in images:
            # HOG on grey finds the same faces as on RGB (which takes the strongest channel's
            # gradient) at about 70 % of the time.
            grey = np.asarray(Image.fromarray(img).convert("L"))
            rects, margins, _ = detector.run(grey, self.params.upsample, self._adjust)
            out.append(
                [
                    Candidate(
                        (
                            float(r.left()),
                            float(r.top()),
                            float(r.right() + 1),
                            float(r.bottom() + 1),
                        ),
                        _margin_score(float(m)),
                    )
                    for r, m in zip(rects, margins, strict=True)
                ]
            )
        return out

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Candidate]]:
        images = [np.ascontiguousarray(img) for img in images]
        if self._cnn is not None:
            batches = self._cnn(list(images), self.params.upsample, batch_size=len(images))
            return [
                [
                    Candidate(
                        (
                            float(d.rect.left()),
                            float(d.rect.top()),
                            float(d.rect.right() + 1),
                            float(d.rect.bottom() + 1),
                        ),
                        _margin_score(float(d.confidence)),
                    )
                    for d in found
                ]
                for found in batches
            ]
        if self._pool is None or len(images) < 2:
            return self._hog_run(self._hog[0], images)
        n = min(len(self._hog), len(images))
        chunks = [images[i::n] for i in range(n)]
        parts = list(self._pool.map(self._hog_run, self._hog[:n], chunks))
        out: list[list[Candidate]] = [[] for _ in images]
        for i, part in enumerate(parts):
            for j, found in enumerate(part):
                out[i + j * n] = found
        return out

    def describe(
        self, items: Sequence[tuple[np.ndarray, Candidate]], embed: Sequence[bool]
    ) -> list[Described]:
        dlib = self._dlib
        chips, qualities = [], []
        for image, cand in items:
            x1, y1, x2, y2 = cand.box
            rect = dlib.rectangle(
                int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1
            )
            shape = self._shape(image, rect)
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], float)
            cand.landmarks = points
            chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
            chips.append(chip)
            qualities.append(dlib_quality(min(x2 - x1, y2 - y1), chip, points))
        wanted = [c for c, e in zip(chips, embed, strict=True) if e]
        matrix = np.zeros((0, 128), np.float32)
        if wanted:
            matrix = np.asarray(self._encoder.compute_face_descriptor(wanted), np.float32)
        vectors = iter(matrix)
        return [
            Described(next(vectors) if e else None, q)
            for q, e in zip(qualities, embed, strict=True)
        ]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def insightface_model_dir(params: FaceParams) -> Path:
    """The buffalo_l-style model directory: given, found under the root, or fetched.

    Raises ConfigError with what to do when it is neither present nor downloadable.
    """
    given = Path(params.insightface_model).expanduser()
    looks_like_path = os.sep in params.insightface_model or params.insightface_model.startswith(".")
    if given.is_dir() or looks_like_path:
        if not given.is_dir() or not list(given.glob("*.onnx")):
            raise ConfigError(
                f"insightface model directory {given} does not exist or holds no .onnx files"
            )
        return given
    root = Path(params.insightface_root).expanduser()
    local = root / "models" / params.insightface_model
    if local.is_dir() and list(local.glob("*.onnx")):
        return local
    try:
        from insightface.utils import ensure_available
    except ImportError as exc:
        raise ImportError(_INSIGHTFACE_HINT) from exc
    try:
        fetched = Path(ensure_available("models", params.insightface_model, root=str(root)))
    except (OSError, RuntimeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"insightface model {params.insightface_model!r} is not in {local} and could not be "
            f"downloaded ({type(exc).__name__}: {exc}); download {params.insightface_model}.zip "
            f"from the insightface model zoo, unzip it into {root / 'models'}, or pass "
            "insightface_model=/path/to/the/unzipped/folder"
        ) from exc
    if not list(fetched.glob("*.onnx")):
        raise ConfigError(f"insightface model directory {fetched} holds no .onnx files")
    return fetched


class InsightFaceBackend:
    """insightface's model pack (buffalo_l: SCRFD-10G detector, ArcFace R50 encoder).

    Score: the detector's face probability. Quality: the L2 norm of the raw ArcFace embedding
    (blurred, tiny or occluded faces have short embeddings; the original tool kept norms >= 20).
    Embedding: ArcFace of the (112x112) crop aligned on the detector's 5 keypoints, in batches.
    """

    name = "insightface"

    def __init__(self, params: FaceParams) -> None:
        try:
            import onnxruntime
            from insightface.app import FaceAnalysis
            from insightface.utils import face_align
        except ImportError as exc:
            raise ImportError(_INSIGHTFACE_HINT) from exc
        model_dir = insightface_model_dir(params)
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.params = params
        self._align = face_align
        self._app = FaceAnalysis(
            name=str(model_dir.resolve()),
            root=str(Path(params.insightface_root).expanduser()),
            allowed_modules=["detection", "recognition"],
            providers=providers,
        )
        if "recognition" not in self._app.models:
            raise ConfigError(f"insightface model directory {model_dir} has no recognition model")
        ctx = 0 if providers[0] == "CUDAExecutionProvider" else -1
        self._app.prepare(
            ctx_id=ctx,
            det_thresh=min(0.5, params.min_score),
            det_size=(params.det_size, params.det_size),
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Candidate]]:
        out = []
        for img in images:
            bgr = np.ascontiguousarray(img[:, :, ::-1])
            boxes, kps = self._app.det_model.detect(bgr, max_num=0, metric="default")
            found = []
            for i in range(boxes.shape[0]):
                x1, y1, x2, y2, score = (float(v) for v in boxes[i, :5])
                landmarks = None if kps is None else np.asarray(kps[i], float)
                found.append(Candidate((x1, y1, x2, y2), score, landmarks))
            out.append(found)
        return out

    def describe(
        self, items: Sequence[tuple[np.ndarray, Candidate]], embed: Sequence[bool]
    ) -> list[Described]:
        # The quality is the embedding norm, so every face is embedded here.
        rec = self._app.models["recognition"]
        side = int(rec.input_size[0])
        crops = []
        bgr_of: dict[int, np.ndarray] = {}  # each frame converted once, however many faces
        for image, cand in items:
            if cand.landmarks is None:
                raise ConfigError("insightface's detector returned no keypoints to align on")
            bgr = bgr_of.get(id(image))
            if bgr is None:
                bgr = bgr_of[id(image)] = np.ascontiguousarray(image[:, :, ::-1])
            crops.append(self._align.norm_crop(bgr, landmark=cand.landmarks, image_size=side))
        feats: list[np.ndarray] = []
        for i in range(0, len(crops), 64):
            feats.extend(np.asarray(rec.get_feat(crops[i : i + 64]), np.float32))
        return [
            Described(f if e else None, float(np.linalg.norm(f)))
            for f, e in zip(feats, embed, strict=True)
        ]

    def close(self) -> None:
        pass


FACE_BACKENDS: dict[str, Callable[[FaceParams], FaceBackend]] = {
    "dlib": DlibBackend,
    "insightface": InsightFaceBackend,
}


def make_face_backend(params: FaceParams) -> FaceBackend:
    """The detection + embedding backend `params.backend`, models loaded."""
    return FACE_BACKENDS[params.backend](params)


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


def _normalized(box: Sequence[float], w: int, h: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        min(max(x1 / w, 0.0), 1.0),
        min(max(y1 / h, 0.0), 1.0),
        min(max(x2 / w, 0.0), 1.0),
        min(max(y2 / h, 0.0), 1.0),
    )


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).ravel()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _add(timings: dict[str, float] | None, key: str, seconds: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


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
            emb = EMPTY_EMBEDDING if desc.embedding is None else _unit(desc.embedding)
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


# --------------------------------------------------------------------------- plug-ins


def _number(face: dict[str, Any], key: str, where: str) -> float:
    extra = face.get("extra_data")
    if not isinstance(extra, dict) or key not in extra:
        raise PluginError(f"{where}: face dict lacks extra_data.{key}")
    try:
        value = float(extra[key])
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{where}: extra_data.{key} is not a number: {extra[key]!r}") from exc
    if math.isnan(value):
        raise PluginError(f"{where}: extra_data.{key} is NaN")
    return value


def _plugin_faces(
    frames: Sequence[Frame],
    params: FaceParams,
    plugin: str,
    timings: dict[str, float] | None,
) -> list[FaceDetection]:
    """Detection + embedding by the original tool's plug-in contract.

    `extract_faces(frames)` gets up to `batch_size` frames as base64 JPEG strings and returns
    dicts with `frame_id` (index into that batch), `bounding_box` ([x1, y1, x2, y2] pixels),
    `face_emb` (a vector) and `extra_data` with `face_detection_score` and
    `face_quality_score`; score and quality filters then apply as for the built-in backends.
    """
    fn = plugin_function(FACE_PLUGIN_ENV, plugin, "extract_faces")
    where = f"{FACE_PLUGIN_ENV}={plugin!r}"
    min_quality = params.quality_threshold
    out: list[FaceDetection] = []
    dim = None
    for start in range(0, len(frames), params.batch_size):
        batch = frames[start : start + params.batch_size]
        t0 = time.perf_counter()
        payload = [base64.b64encode(f.jpeg()).decode("ascii") for f in batch]
        faces = call_plugin(FACE_PLUGIN_ENV, plugin, fn, payload)
        _add(timings, "detect_s", time.perf_counter() - t0)
        if not isinstance(faces, list | tuple):
            raise PluginError(f"{where}: extract_faces returned {type(faces).__name__}, not a list")
        for face in faces:
            if not isinstance(face, dict):
                raise PluginError(f"{where}: a face is {type(face).__name__}, not a dict")
            fid = face.get("frame_id")
            if not isinstance(fid, int | np.integer) or not 0 <= int(fid) < len(batch):
                raise PluginError(
                    f"{where}: frame_id {fid!r} is not an index into {len(batch)} frames"
                )
            box = face.get("bounding_box")
            try:
                pixels = [float(v) for v in box]  # type: ignore[union-attr]
            except (TypeError, ValueError):
                pixels = []
            if len(pixels) != 4 or not all(math.isfinite(v) for v in pixels):
                raise PluginError(f"{where}: bounding_box {box!r} is not [x1, y1, x2, y2]")
            emb = np.asarray(face.get("face_emb", []), dtype=np.float32).ravel()
            if emb.size == 0 or not np.all(np.isfinite(emb)):
                raise PluginError(f"{where}: face_emb is missing, empty or not finite")
            if dim is not None and emb.size != dim:
                raise PluginError(f"{where}: face_emb lengths differ ({dim} and {emb.size})")
            dim = emb.size
            score = _number(face, "face_detection_score", where)
            quality = _number(face, "face_quality_score", where)
            if score < params.min_score or quality < min_quality:
                continue
            frame = batch[int(fid)]
            h, w = frame.image.shape[:2]
            out.append(
                FaceDetection(frame.time, _normalized(pixels, w, h), score, quality, _unit(emb))
            )
    out.sort(key=lambda d: (d.time, d.box[0], d.box[1]))
    return out


def _plugin_labels(dets: Sequence[FaceDetection], params: FaceParams, plugin: str) -> list[int]:
    """Cluster labels from `cluster_faces(faces, min_cluster_size)` of the original tool.

    It gets dicts in the `extract_faces` format (`frame_id` is the index of the detection's time
    among the clip's sampled times; `bounding_box` is normalized 0..1) and sets `cluster_id` on
    them in place or returns them (all, in order) with `cluster_id` set; -1 is noise.
    """
    fn = plugin_function(CLUSTER_PLUGIN_ENV, plugin, "cluster_faces")
    where = f"{CLUSTER_PLUGIN_ENV}={plugin!r}"
    times = sorted({round(d.time, 6) for d in dets})
    index = {t: i for i, t in enumerate(times)}
    faces = [
        {
            "frame_id": index[round(d.time, 6)],
            "bounding_box": list(d.box),
            "face_emb": d.embedding.tolist(),
            "cluster_id": -1,
            "extra_data": {
                "face_detection_score": d.score,
                "face_quality_score": d.quality,
                # Original cluster modules read this; our detectors keep near-frontal faces.
                "face_type": "ortho",
            },
        }
        for d in dets
    ]
    result = call_plugin(CLUSTER_PLUGIN_ENV, plugin, fn, faces, params.min_cluster_size)
    if result is None:
        result = faces
    if not isinstance(result, list | tuple) or len(result) != len(faces):
        got = f"{len(result)} faces" if isinstance(result, list | tuple) else type(result).__name__
        raise PluginError(f"{where}: cluster_faces must return all {len(faces)} faces, got {got}")
    labels = []
    for face in result:
        label = face.get("cluster_id") if isinstance(face, dict) else None
        if not isinstance(label, int | np.integer) or label < -1:
            raise PluginError(f"{where}: cluster_id {label!r} is not an int >= -1")
        labels.append(int(label))
    return labels


# --------------------------------------------------------------------------- clustering


def hdbscan_cosine(
    embeddings: np.ndarray, min_cluster_size: int, epsilon: float = 0.0
) -> list[int]:
    """HDBSCAN labels (-1 noise) of unit embeddings on cosine distance.

    Video frames give near-duplicate embeddings, and HDBSCAN alone splits one person's tight
    cloud into many small clusters; `epsilon` (hdbscan's `cluster_selection_epsilon`) keeps
    clusters that split below that distance together. A single cluster is allowed, since a clip
    often shows one person only.
    """
    n = len(embeddings)
    if n < min_cluster_size:
        return [-1] * n
    try:
        import hdbscan
    except ImportError as exc:
        raise ImportError(_CLUSTER_HINT) from exc
    e = embeddings.astype(np.float64)
    dist = 1.0 - e @ e.T
    np.clip(dist, 0.0, 2.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    model = hdbscan.HDBSCAN(
        min_cluster_size=min_cluster_size,
        metric="precomputed",
        cluster_selection_epsilon=float(epsilon),
        allow_single_cluster=True,
    )
    return [int(v) for v in model.fit_predict(dist)]


def cluster_faces(dets: Sequence[FaceDetection], params: FaceParams) -> list[FaceDetection]:
    """Copies of `dets` with `cluster` set by HDBSCAN on cosine distance within the clip.

    Detections without an embedding (see `embed_fps`) stay -1 until `link_tracks` gives them
    their track's cluster. A `TASKMEM_FACE_CLUSTER_BACKEND` plug-in, when set, replaces HDBSCAN.
    """
    embedded = [i for i, d in enumerate(dets) if d.embedding.size]
    labels = [-1] * len(dets)
    if embedded:
        plugin = params.resolved_cluster_plugin()
        if plugin:
            found = _plugin_labels([dets[i] for i in embedded], params, plugin)
        else:
            dims = {dets[i].embedding.size for i in embedded}
            if len(dims) > 1:
                raise ValueError(
                    f"face embeddings of different lengths in one clip: {sorted(dims)}"
                )
            matrix = np.stack([dets[i].embedding for i in embedded])
            found = hdbscan_cosine(matrix, params.min_cluster_size, params.epsilon)
        for i, label in zip(embedded, found, strict=True):
            labels[i] = label
    return [replace(d, cluster=label) for d, label in zip(dets, labels, strict=True)]


# --------------------------------------------------------------------------- tracks


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    members: list[int] = field(default_factory=list)
    times: set[float] = field(default_factory=set)

    @property
    def first(self) -> float:
        return min(self.times)


def _tracks(
    dets: Sequence[FaceDetection], params: FaceParams, frame_times: Sequence[float] | None
) -> list[_Track]:
    """Greedy IoU linking: a detection joins the track whose box on the previous sampled frame
    overlaps it most (IoU > params.iou); every sampled frame is visited, and a frame in which a
    track's face was not found ends that track. The sampled frames are `frame_times` when
    given, else the global `n / face_fps` grid."""
    step = 1.0 / params.face_fps
    by_time: dict[float, list[int]] = {}
    for i, d in enumerate(dets):
        by_time.setdefault(round(d.time, 6), []).append(i)
    grid = sorted({round(t, 6) for t in frame_times}) if frame_times is not None else None
    position = {t: k for k, t in enumerate(grid)} if grid is not None else {}
    for t in by_time:
        if grid is not None and t not in position:
            raise ValueError(f"a face at {t:.3f}s is on none of the given frame times")

    def adjacent(prev: float, t: float) -> bool:
        if grid is not None:
            return position[t] == position[prev] + 1
        return t - prev <= 1.5 * step

    tracks: list[_Track] = []
    open_tracks: list[int] = []  # indices into tracks, alive on the previous sampled frame
    prev_time: float | None = None
    for t in sorted(by_time):
        current = by_time[t]
        alive = open_tracks if prev_time is not None and adjacent(prev_time, t) else []
        pairs = []
        for k in alive:
            last = dets[tracks[k].members[-1]].box
            for i in current:
                iou = box_iou(last, dets[i].box)
                if iou > params.iou:
                    pairs.append((-iou, k, i))
        pairs.sort()
        taken_tracks: set[int] = set()
        taken_dets: set[int] = set()
        next_open: list[int] = []
        for _, k, i in pairs:
            if k in taken_tracks or i in taken_dets:
                continue
            taken_tracks.add(k)
            taken_dets.add(i)
            tracks[k].members.append(i)
            tracks[k].times.add(t)
            next_open.append(k)
        for i in current:
            if i not in taken_dets:
                tracks.append(_Track([i], {t}))
                next_open.append(len(tracks) - 1)
        open_tracks = next_open
        prev_time = t
    return tracks


def link_tracks(
    dets: Sequence[FaceDetection],
    params: FaceParams,
    frame_times: Sequence[float] | None = None,
) -> list[FaceDetection]:
    """Tracks over every sampled frame, each with one cluster; short tracks dropped.

    `frame_times` are the times of all sampled frames of the span (faces or not); without them
    frames are taken to lie on the `n / face_fps` grid. A track lasts (number of its frames) /
    face_fps seconds.

    A track takes the cluster most of its clustered detections have (ties: the cluster seen
    first). Two tracks seen in the same frame are two people, so when both vote for one
    cluster the longer track keeps it and the other takes its next choice or a cluster of its
    own. A track whose embedded faces were all noise becomes a cluster of its own (it lasted,
    so it is somebody); a track without any embedding is dropped (nothing to identify it by).
    Returns copies with `track` and `cluster` renumbered by first appearance, sorted by time.
    """
    tracks = _tracks(dets, params, frame_times)
    step = 1.0 / params.face_fps
    kept = [
        tr
        for tr in tracks
        if len(tr.times) * step >= params.min_track_s - 1e-6
        and any(dets[i].embedding.size for i in tr.members)
    ]
    # Longest tracks choose first; ties by first appearance.
    order = sorted(range(len(kept)), key=lambda k: (-len(kept[k].members), kept[k].first))
    next_label = 1 + max((d.cluster for d in dets), default=-1)
    owner_times: dict[int, set[float]] = {}
    chosen: dict[int, int] = {}
    for k in order:
        tr = kept[k]
        votes = Counter(dets[i].cluster for i in tr.members if dets[i].cluster >= 0)
        first_seen: dict[int, float] = {}
        for i in tr.members:
            first_seen.setdefault(dets[i].cluster, dets[i].time)
        prefs = sorted(votes, key=lambda c: (-votes[c], first_seen[c]))
        label = next((c for c in prefs if not owner_times.get(c, set()) & tr.times), None)
        if label is None:
            label = next_label
            next_label += 1
        owner_times.setdefault(label, set()).update(tr.times)
        chosen[k] = label
    # Renumber tracks and clusters by first appearance.
    by_first = sorted(range(len(kept)), key=lambda k: (kept[k].first, dets[kept[k].members[0]].box))
    cluster_ids: dict[int, int] = {}
    out: list[FaceDetection] = []
    for new_track, k in enumerate(by_first):
        cluster = cluster_ids.setdefault(chosen[k], len(cluster_ids))
        out.extend(replace(dets[i], track=new_track, cluster=cluster) for i in kept[k].members)
    out.sort(key=lambda d: (d.time, d.box[0], d.box[1]))
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
