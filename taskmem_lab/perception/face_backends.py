"""Face detection and embedding backends: dlib, insightface, and the plug-in contract.

Floor 3 (perception). `faces.detect_faces` runs a `FaceBackend` made by `make_face_backend`
(`FACE_BACKENDS`), or a `TASKMEM_FACE_BACKEND` plug-in (`_plugin_faces`) when one is set; each
backend reports a detection score in 0..1 and a quality on its own scale (`DEFAULT_MIN_QUALITY`).
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taskmem_lab.errors import ConfigError, PluginError, missing_extra
from taskmem_lab.media.video import Frame
from taskmem_lab.perception.params import FACE_PLUGIN_ENV, FaceParams
from taskmem_lab.perception.records import FaceDetection, unit
from taskmem_lab.plugins import call_plugin, plugin_function
from taskmem_lab.prefetch import cores

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

    def detect(
        self, images: Sequence[np.ndarray], upsample: int | None = None
    ) -> list[list[Candidate]]:
        """Faces per RGB image, boxes in that image's pixels, scores in 0..1. `upsample`
        overrides the backend's own upsampling (for regions already scaled to the face)."""
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
        raise missing_extra("face-recognition-models", "faces")
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
            raise missing_extra("dlib", "faces", exc) from exc
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

    def _hog_run(
        self, detector: Any, images: Sequence[np.ndarray], upsample: int | None = None
    ) -> list[list[Candidate]]:
        from PIL import Image

        times = self.params.upsample if upsample is None else upsample

        out = []
        for img in images:
            # HOG on grey finds the same faces as on RGB (which takes the strongest channel's
            # gradient) at about 70 % of the time.
            grey = np.asarray(Image.fromarray(img).convert("L"))
            rects, margins, _ = detector.run(grey, times, self._adjust)
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

    def detect(
        self, images: Sequence[np.ndarray], upsample: int | None = None
    ) -> list[list[Candidate]]:
        images = [np.ascontiguousarray(img) for img in images]
        times = self.params.upsample if upsample is None else upsample
        if self._cnn is not None:
            batches = self._cnn(list(images), times, batch_size=len(images))
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
            return self._hog_run(self._hog[0], images, times)
        n = min(len(self._hog), len(images))
        chunks = [images[i::n] for i in range(n)]
        parts = list(self._pool.map(self._hog_run, self._hog[:n], chunks, [times] * n))
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
        contiguous: dict[int, np.ndarray] = {}
        for frame, cand in items:
            # dlib's get_face_chip takes C-contiguous arrays only; a decoded frame whose width
            # is not a multiple of the decoder's line alignment (426 px at 240p) is a strided view.
            if id(frame) not in contiguous:
                contiguous[id(frame)] = np.ascontiguousarray(frame)
            image = contiguous[id(frame)]
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
        raise missing_extra("insightface", "insightface", exc) from exc
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
            raise missing_extra("insightface", "insightface", exc) from exc
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

    def detect(
        self, images: Sequence[np.ndarray], upsample: int | None = None
    ) -> list[list[Candidate]]:
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


class _BackendPool:
    """Backends of one `FaceParams`, each lent to one caller at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: list[FaceBackend] = []
        self.made = 0
        self.ready = threading.Condition()


_POOLS: dict[FaceParams, _BackendPool] = {}
_POOLS_LOCK = threading.Lock()


def face_backend_slots(params: FaceParams) -> int:
    """Backends one process keeps for `params`: one per `threads` cores, and at least two.

    Detection is CPU-bound and each backend already runs `threads` threads, so more backends
    add no speed, only memory: a dlib backend with its models is ~80 MB, and a stream's face
    frames (`face_fps` frames a second at up to 640 pixels) ~70 MB per clip. The second one
    overlaps a stream's single-threaded steps (decoding, identities) with another's detection:
    20 one-minute streams on 2 cores took 58 s with two, 78 s with one, 70 s with one per
    stream (4.8 GB instead of 2.4 GB).
    """
    return max(2, cores() // max(1, params.threads))


@contextlib.contextmanager
def borrow_face_backend(params: FaceParams) -> Iterator[FaceBackend]:
    """A backend for `params` from the process's pool, for this caller alone until returned.

    Many streams in one process (`taskmem bench`) share `face_backend_slots(params)` backends
    instead of loading one each; a caller waits while all are lent. Backends stay loaded for
    the next caller; `close_face_backends` releases them.
    """
    with _POOLS_LOCK:
        pool = _POOLS.setdefault(params, _BackendPool(face_backend_slots(params)))
    with pool.ready:
        while not pool.idle and pool.made >= pool.size:
            pool.ready.wait()
        if pool.idle:
            backend = pool.idle.pop()
        else:
            pool.made += 1  # counted before loading, so no other caller loads one too many
            backend = None
    if backend is None:
        try:
            backend = make_face_backend(params)
        except BaseException:
            with pool.ready:
                pool.made -= 1
                pool.ready.notify()
            raise
    try:
        yield backend
    finally:
        with pool.ready:
            pool.idle.append(backend)
            pool.ready.notify()


def close_face_backends() -> None:
    """Close and forget every pooled backend that is not lent out."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
    for pool in pools:
        with pool.ready:
            idle, pool.idle = pool.idle, []
            pool.made -= len(idle)
        for backend in idle:
            backend.close()


# --------------------------------------------------------------------------- box helpers


def _normalized(box: Sequence[float], w: int, h: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        min(max(x1 / w, 0.0), 1.0),
        min(max(y1 / h, 0.0), 1.0),
        min(max(x2 / w, 0.0), 1.0),
        min(max(y2 / h, 0.0), 1.0),
    )


def _add(timings: dict[str, float] | None, key: str, seconds: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + seconds


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
                FaceDetection(frame.time, _normalized(pixels, w, h), score, quality, unit(emb))
            )
    out.sort(key=lambda d: (d.time, d.box[0], d.box[1]))
    return out
