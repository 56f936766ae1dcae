"""Faces: parameters, score mapping, clustering, IoU tracks, plug-ins, and dlib on real faces."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from taskmem_lab.errors import ConfigError, PluginError
from taskmem_lab.media.video import Frame, sample_frames, sample_times
from taskmem_lab.perception import faces as F
from taskmem_lab.perception.faces import (
    FaceParams,
    box_iou,
    clip_faces,
    cluster_faces,
    detect_faces,
    dlib_quality,
    hdbscan_cosine,
    link_tracks,
)
from taskmem_lab.perception.records import FaceDetection
from taskmem_lab.testing.media import GROUP_PHOTO_FACES, group_photo_shots, shot_video

STEP = 0.1  # 10 fps


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def det(t, box, cluster=-1, emb=None, score=0.9, quality=0.9) -> FaceDetection:
    e = unit([1.0, 0.0, 0.0]) if emb is None else emb
    return FaceDetection(round(t, 6), tuple(box), score, quality, e, cluster=cluster)


def moving(x0: float, n: int, t0: float = 0.0, cluster=-1, dx: float = 0.002, emb=None):
    """A face drifting right by dx per frame for n frames (IoU between frames stays high)."""
    return [
        det(t0 + k * STEP, (x0 + k * dx, 0.2, x0 + k * dx + 0.2, 0.5), cluster, emb)
        for k in range(n)
    ]


# --------------------------------------------------------------------------- params


def test_defaults_follow_the_design():
    p = FaceParams()
    assert (p.face_fps, p.min_score, p.min_cluster_size, p.iou, p.min_track_s) == (
        10.0,
        0.75,
        3,
        0.6,
        0.6,
    )
    assert p.embed_fps == 0.5  # half a face embedding per second of each track, as the CLI
    # as many embeddings per second as sampled frames (or more, or 0): every face is embedded
    assert FaceParams(face_fps=0.5).embed_fps is None
    assert FaceParams(face_fps=2.0, embed_fps=5.0).embed_fps is None
    assert FaceParams(embed_fps=0).embed_fps is None
    assert FaceParams(embed_fps=None).embed_fps is None
    assert p.quality_threshold == F.DEFAULT_MIN_QUALITY["dlib"]
    assert FaceParams(backend="insightface").quality_threshold == 20.0
    assert FaceParams(min_quality=0.5).quality_threshold == 0.5


@pytest.mark.parametrize(
    "field,value",
    [
        ("backend", "opencv"),
        ("face_fps", 0),
        ("embed_fps", -1.0),
        ("min_score", 1.5),
        ("min_quality", math.nan),
        ("min_cluster_size", 1),
        ("cluster_epsilon", -0.1),
        ("iou", 1.0),
        ("min_track_s", -1),
        ("detect_max_side", 10),
        ("upsample", 5),
        ("dlib_detector", "mtcnn"),
        ("batch_size", 0),
        ("threads", 0),
        ("det_size", 100),
    ],
)
def test_bad_parameters_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        FaceParams(**{field: value})


def test_plugins_come_from_the_environment_at_call_time(monkeypatch):
    p = FaceParams()
    assert p.resolved().face_plugin is None
    monkeypatch.setenv("TASKMEM_FACE_BACKEND", "my.faces")
    monkeypatch.setenv("TASKMEM_FACE_CLUSTER_BACKEND", "my.clusters")
    r = p.resolved()
    assert (r.face_plugin, r.cluster_plugin) == ("my.faces", "my.clusters")
    assert p.quality_threshold == 0.0  # a plug-in's quality scale is its own
    assert FaceParams(face_plugin="explicit").resolved().face_plugin == "explicit"


def test_margin_score_is_075_at_dlibs_own_boundary():
    assert F._margin_score(0.0) == pytest.approx(0.75)
    margins = np.linspace(-3, 3, 13)
    scores = [F._margin_score(m) for m in margins]
    assert all(0 < s < 1 for s in scores) and scores == sorted(scores)
    for s in (0.3, 0.75, 0.9, 0.99):
        assert F._margin_score(F._score_margin(s)) == pytest.approx(s)


# --------------------------------------------------------------------------- tracks


def test_box_iou():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0, 0, 2, 1), (1, 0, 3, 1)) == pytest.approx(1 / 3)


def test_tracks_follow_each_face_over_every_sampled_frame():
    a = moving(0.1, 20, cluster=0)
    b = moving(0.6, 20, cluster=1)
    out = link_tracks(a + b, FaceParams())
    assert len(out) == 40
    tracks = defaultdict(set)
    for d in out:
        tracks[d.track].add(round(d.box[0] // 0.5))
    assert sorted(tracks) == [0, 1]
    assert all(len(sides) == 1 for sides in tracks.values())  # no jump between the two faces


def test_a_frame_without_the_face_ends_its_track():
    dets = moving(0.1, 10, cluster=0) + moving(0.1 + 11 * 0.002, 10, t0=1.1, cluster=0)
    out = link_tracks(dets, FaceParams())
    assert len({d.track for d in out}) == 2
    assert len({d.cluster for d in out}) == 1


def test_tracks_walk_the_given_sampled_frames():
    dets = moving(0.1, 14, cluster=0)
    times = [d.time for d in dets]
    # With the frames given, a frame between two detections (no face found on it) ends the
    # track, though the detections alone look consecutive on the 10 fps grid.
    extra = sorted([*times, 0.65])
    out = link_tracks(dets, FaceParams(), frame_times=extra)
    assert len({d.track for d in out}) == 2
    assert len({d.track for d in link_tracks(dets, FaceParams(), frame_times=times)}) == 1
    with pytest.raises(ValueError, match="none of the given frame times"):
        link_tracks(dets, FaceParams(), frame_times=times[1:])


def test_clip_faces_refuses_frames_sampled_at_another_rate():
    frames = [Frame(k * 0.2, np.zeros((8, 8, 3), np.uint8)) for k in range(5)]
    with pytest.raises(ConfigError, match="face_fps"):
        clip_faces(frames, FaceParams(face_plugin="unused"))


def test_iou_must_exceed_the_threshold():
    # Consecutive boxes overlapping by IoU exactly 0.5 with iou=0.5: not linked (strictly more).
    box = (0.0, 0.0, 0.3, 0.3)
    shifted = (0.1, 0.0, 0.4, 0.3)
    assert box_iou(box, shifted) == pytest.approx(0.5)
    dets = []
    for k in range(12):
        dets.append(det(k * STEP, box if k % 2 == 0 else shifted, cluster=0))
    assert (
        link_tracks(dets, FaceParams(iou=0.5, min_track_s=0))
        and len({d.track for d in link_tracks(dets, FaceParams(iou=0.5, min_track_s=0))}) == 12
    )
    assert len({d.track for d in link_tracks(dets, FaceParams(iou=0.3))}) == 1


def test_tracks_shorter_than_min_track_s_are_dropped():
    short = moving(0.1, 5, cluster=0)  # 0.5 s
    kept = moving(0.6, 6, cluster=1)  # 0.6 s: each detection stands for 1 / face_fps
    out = link_tracks(short + kept, FaceParams())
    assert len(out) == 6 and all(d.box[0] >= 0.6 for d in out)


def test_track_takes_its_majority_cluster():
    dets = moving(0.1, 10)
    labels = [0, 0, 1, 0, -1, 1, 0, -1, 0, 0]
    dets = [FaceDetection(d.time, d.box, d.score, d.quality, d.embedding, cluster=c)
            for d, c in zip(dets, labels, strict=True)]  # fmt: skip
    out = link_tracks(dets, FaceParams())
    assert {d.cluster for d in out} == {0} and len(out) == 10


def test_two_tracks_in_the_same_frame_never_share_a_cluster():
    # HDBSCAN put two different people in cluster 0; they are seen together, so they split.
    a = moving(0.1, 12, cluster=0)
    b = moving(0.6, 8, t0=0.2, cluster=0)
    out = link_tracks(a + b, FaceParams())
    by_track = defaultdict(set)
    for d in out:
        by_track[d.track].add(d.cluster)
    assert len(by_track) == 2
    assert by_track[0] != by_track[1]
    longest = max(by_track, key=lambda k: sum(d.track == k for d in out))
    assert by_track[longest] == {0}


def test_split_track_falls_back_to_its_second_choice():
    a = moving(0.1, 12, cluster=0)
    b = [FaceDetection(d.time, d.box, d.score, d.quality, d.embedding, cluster=c)
         for d, c in zip(moving(0.6, 8), [0, 0, 0, 0, 0, 2, 2, 2], strict=True)]  # fmt: skip
    out = link_tracks(a + b, FaceParams())
    clusters = {round(d.box[0], 1): d.cluster for d in out}
    assert len(set(clusters.values())) == 2


def test_noise_track_becomes_its_own_cluster_and_unembedded_track_is_dropped():
    noise = moving(0.1, 8, cluster=-1)
    empty = [
        FaceDetection(d.time, d.box, d.score, d.quality, F.EMPTY_EMBEDDING) for d in moving(0.6, 8)
    ]
    out = link_tracks(noise + empty, FaceParams())
    assert len(out) == 8 and all(d.box[0] < 0.5 for d in out)
    assert {d.cluster for d in out} == {0}


def test_unembedded_faces_take_their_tracks_cluster():
    dets = moving(0.1, 10, cluster=3)
    dets = [
        d if k % 5 == 0 else FaceDetection(d.time, d.box, d.score, d.quality, F.EMPTY_EMBEDDING)
        for k, d in enumerate(dets)
    ]
    out = link_tracks(cluster_faces(dets, FaceParams()), FaceParams())
    assert len(out) == 10 and {d.cluster for d in out} == {0}


def test_clusters_and_tracks_are_numbered_by_first_appearance():
    late = moving(0.1, 8, t0=1.0, cluster=7)
    early = moving(0.6, 8, t0=0.0, cluster=4)
    out = link_tracks(late + early, FaceParams())
    first = min(out, key=lambda d: d.time)
    assert first.box[0] >= 0.6 and first.track == 0 and first.cluster == 0
    assert [d.time for d in out] == sorted(d.time for d in out)


# --------------------------------------------------------------------------- clustering


def _cloud(center, n, spread, rng):
    c = unit(center)
    return [unit(c + spread * rng.standard_normal(c.size)) for _ in range(n)]


@pytest.mark.slow
def test_hdbscan_separates_people_and_keeps_one_person_whole():
    pytest.importorskip("hdbscan")
    rng = np.random.default_rng(0)
    a = _cloud(rng.standard_normal(128), 30, 0.01, rng)
    b = _cloud(rng.standard_normal(128), 30, 0.01, rng)
    labels = hdbscan_cosine(np.stack(a + b), 3, 0.03)
    assert len(set(labels[:30])) == 1 and len(set(labels[30:])) == 1
    assert labels[0] != labels[30] and -1 not in labels
    alone = hdbscan_cosine(np.stack(a), 3, 0.03)
    assert set(alone) == {0}  # one person in a clip is one cluster, not noise
    assert hdbscan_cosine(np.stack(a[:2]), 3) == [-1, -1]  # fewer than min_cluster_size


@pytest.mark.slow
def test_cluster_faces_copies_and_skips_unembedded():
    pytest.importorskip("hdbscan")
    rng = np.random.default_rng(1)
    embs = _cloud(rng.standard_normal(16), 6, 0.01, rng)
    dets = [det(k * STEP, (0.1, 0.1, 0.3, 0.3), emb=e) for k, e in enumerate(embs)]
    dets.append(det(0.6, (0.1, 0.1, 0.3, 0.3), emb=F.EMPTY_EMBEDDING))
    out = cluster_faces(dets, FaceParams())
    assert [d.cluster for d in out] == [0] * 6 + [-1]
    assert all(d.cluster == -1 for d in dets)  # inputs untouched


# --------------------------------------------------------------------------- plug-ins

PLUGIN = """
import base64, io
import numpy as np
from PIL import Image

CALLS = []

def extract_faces(frames):
    CALLS.append(len(frames))
    out = []
    for i, b64 in enumerate(frames):
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
        h, w = img.shape[:2]
        level = float(img.mean())
        out.append({
            "frame_id": i,
            "bounding_box": [w * 0.25, h * 0.25, w * 0.5, h * 0.75],
            "face_emb": [1.0, level, 0.5],
            "cluster_id": -1,
            "extra_data": {"face_detection_score": "0.9", "face_quality_score": "25"},
        })
        out.append({
            "frame_id": i,
            "bounding_box": [0, 0, 10, 10],
            "face_emb": [0.0, 1.0, 0.0],
            "extra_data": {"face_detection_score": 0.5, "face_quality_score": 30},
        })
    return out
"""


def grey_frames(n: int, size=(64, 48)) -> list[Frame]:
    w, h = size
    return [Frame(k * STEP, np.full((h, w, 3), 20 * k, np.uint8)) for k in range(n)]


def write_plugin(tmp_path: Path, body: str, name: str = "fake_faces_plugin") -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return path


def test_face_plugin_replaces_detection(tmp_path, monkeypatch):
    path = write_plugin(tmp_path, PLUGIN)
    monkeypatch.setenv("TASKMEM_FACE_BACKEND", str(path))
    frames = grey_frames(5)
    out = detect_faces(frames, FaceParams(batch_size=2))
    assert [d.time for d in out] == [f.time for f in frames]  # low-score faces dropped
    assert out[0].box == pytest.approx((0.25, 0.25, 0.5, 0.75))
    assert out[3].score == pytest.approx(0.9) and out[3].quality == pytest.approx(25)
    assert all(np.linalg.norm(d.embedding) == pytest.approx(1) for d in out)
    # frame_id indexes the batch it came in: frame 3 (second of its batch) kept its own level
    levels = [d.embedding[1] / d.embedding[0] for d in out]
    assert levels == sorted(levels) and levels[3] > levels[2]


def test_face_plugin_min_quality_applies(tmp_path):
    path = write_plugin(tmp_path, PLUGIN)
    assert detect_faces(grey_frames(2), FaceParams(face_plugin=str(path), min_quality=26)) == []


@pytest.mark.parametrize(
    "body,match",
    [
        ("def extract_faces(frames):\n    raise RuntimeError('GPU on fire')\n", "GPU on fire"),
        ("def extract_faces(frames):\n    return None\n", "not a list"),
        ("def extract_faces(frames):\n    return [{'frame_id': 9}]\n", "frame_id"),
        (
            "def extract_faces(frames):\n    return [{'frame_id': 0, 'bounding_box': [0,0,1,1],"
            " 'face_emb': [1.0], 'extra_data': {}}]\n",
            "face_detection_score",
        ),
        (
            "def extract_faces(frames):\n    return [{'frame_id': 0, 'bounding_box': [0,0,1,1],"
            " 'face_emb': [], 'extra_data': {}}]\n",
            "face_emb",
        ),
        (
            "def extract_faces(frames):\n    return [{'frame_id': 0, 'bounding_box': ['a', 0, 1],"
            " 'face_emb': [1.0], 'extra_data': {}}]\n",
            "bounding_box",
        ),
        ("x = 1\n", "no function extract_faces"),
        ("import not_a_module_anywhere\n", "could not be imported"),
    ],
)
def test_failing_face_plugin_is_an_error_not_no_faces(tmp_path, body, match):
    path = write_plugin(tmp_path, body, f"bad_{abs(hash(body))}")
    with pytest.raises(PluginError, match=match):
        detect_faces(grey_frames(2), FaceParams(face_plugin=str(path)))


def test_missing_plugin_module_is_an_error():
    with pytest.raises(PluginError, match="could not be imported"):
        detect_faces(grey_frames(1), FaceParams(face_plugin="no_such_pkg.faces"))


CLUSTER_IN_PLACE = """
def cluster_faces(faces, min_cluster_size):
    for f in faces:
        f["cluster_id"] = 0 if f["face_emb"][0] > 0 else 1
"""
CLUSTER_RETURNS = """
def cluster_faces(faces, min_cluster_size):
    assert min_cluster_size == 3 and faces[0]["extra_data"]["face_type"] == "ortho"
    return [dict(f, cluster_id=5) for f in faces]
"""


@pytest.mark.parametrize(
    "body,expected", [(CLUSTER_IN_PLACE, [0, 1, -1]), (CLUSTER_RETURNS, [5, 5, -1])]
)
def test_cluster_plugin_replaces_hdbscan(tmp_path, body, expected):
    path = write_plugin(tmp_path, body, f"clusters_{len(body)}")
    dets = [
        det(0.0, (0, 0, 0.1, 0.1), emb=unit([1, 0, 0])),
        det(0.1, (0, 0, 0.1, 0.1), emb=unit([-1, 1, 0])),
        det(0.2, (0, 0, 0.1, 0.1), emb=F.EMPTY_EMBEDDING),
    ]
    out = cluster_faces(dets, FaceParams(cluster_plugin=str(path)))
    assert [d.cluster for d in out] == expected


def test_cluster_plugin_must_return_every_face(tmp_path):
    path = write_plugin(
        tmp_path, "def cluster_faces(faces, m):\n    return faces[:1]\n", "short_cl"
    )
    dets = [det(0.0, (0, 0, 0.1, 0.1)), det(0.1, (0, 0, 0.1, 0.1))]
    with pytest.raises(PluginError, match="must return all 2 faces"):
        cluster_faces(dets, FaceParams(cluster_plugin=str(path)))


# --------------------------------------------------------------------------- insightface


def test_missing_insightface_model_directory_is_a_clear_error(tmp_path):
    params = FaceParams(backend="insightface", insightface_model=str(tmp_path / "buffalo_l"))
    with pytest.raises(ConfigError, match="does not exist or holds no .onnx"):
        F.insightface_model_dir(params)


def _fake_insightface(monkeypatch, calls: dict) -> None:
    """A stand-in for the insightface package with the API the backend uses: a detector that
    finds bright squares (in BGR, with 5 keypoints) and an encoder whose vector length is 25."""
    import sys
    import types

    class FakeDetector:
        def detect(self, img, max_num=0, metric="default"):
            calls.setdefault("det_shapes", []).append(img.shape)
            ys, xs = np.nonzero(img[:, :, 0] > 200)  # blue channel first: BGR
            if xs.size == 0:
                return np.zeros((0, 5)), None
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            kps = np.array([[[x1, y1], [x2, y1], [cx, cy], [x1, y2], [x2, y2]]], float)
            return np.array([[x1, y1, x2, y2, 0.97]], float), kps

    class FakeEncoder:
        input_size = (112, 112)

        def get_feat(self, imgs):
            calls.setdefault("feat_batches", []).append(len(imgs))
            return np.array([[25.0, 0.0, 0.0, float(im.mean() > 100)] for im in imgs])

    class FakeFaceAnalysis:
        def __init__(self, name, root, allowed_modules, providers):
            calls["init"] = {"name": name, "allowed": allowed_modules, "providers": providers}
            self.det_model = FakeDetector()
            self.models = {"detection": self.det_model, "recognition": FakeEncoder()}

        def prepare(self, ctx_id, det_thresh, det_size):
            calls["prepare"] = {"ctx_id": ctx_id, "det_thresh": det_thresh, "det_size": det_size}

    def norm_crop(img, landmark, image_size=112):
        x1, y1 = landmark.min(0).astype(int)
        x2, y2 = landmark.max(0).astype(int)
        calls.setdefault("crops", []).append((x1, y1, x2, y2))
        return np.asarray(img[y1:y2, x1:x2])

    pkg = types.ModuleType("insightface")
    app = types.ModuleType("insightface.app")
    app.FaceAnalysis = FakeFaceAnalysis
    utils = types.ModuleType("insightface.utils")
    utils.face_align = types.SimpleNamespace(norm_crop=norm_crop)
    utils.ensure_available = lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    for name, mod in (("insightface", pkg), ("insightface.app", app), ("insightface.utils", utils)):
        monkeypatch.setitem(sys.modules, name, mod)


def test_insightface_backend_glue_with_a_fake_package(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    calls: dict = {}
    _fake_insightface(monkeypatch, calls)
    pack = tmp_path / "buffalo_l"
    pack.mkdir()
    for name in ("det_10g.onnx", "w600k_r50.onnx"):
        (pack / name).write_bytes(b"")
    params = FaceParams(
        backend="insightface", insightface_model=str(pack), detect_max_side=320, embed_fps=None
    )
    img = np.zeros((360, 640, 3), np.uint8)
    img[100:200, 400:480] = (255, 255, 255)  # a bright "face" at x 400..480, y 100..200
    frames = [Frame(0.0, img), Frame(0.1, img.copy())]
    dets = detect_faces(frames, params)
    assert calls["init"]["allowed"] == ["detection", "recognition"]
    assert calls["init"]["name"] == str(pack.resolve())
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    assert calls["prepare"]["det_size"] == (640, 640)
    assert calls["prepare"]["ctx_id"] == (0 if gpu else -1)
    assert calls["det_shapes"][0] == (180, 320, 3)  # detected on the downscaled frame
    assert calls["feat_batches"] == [2]  # both faces embedded in one batch
    assert calls["crops"][0] == (400, 100, 480, 200)  # aligned on the full-size frame
    assert len(dets) == 2
    assert dets[0].box == pytest.approx((400 / 640, 100 / 360, 480 / 640, 200 / 360), abs=0.01)
    assert dets[0].score == pytest.approx(0.97) and dets[0].quality == pytest.approx(25.0, abs=0.1)
    assert np.linalg.norm(dets[0].embedding) == pytest.approx(1.0)


def test_insightface_offline_without_the_model_is_a_clear_error(tmp_path, monkeypatch):
    _fake_insightface(monkeypatch, {})
    params = FaceParams(backend="insightface", insightface_root=str(tmp_path))
    with pytest.raises(ConfigError, match="could not be downloaded .*offline.*unzip it into"):
        F.insightface_model_dir(params)


def _buffalo_l() -> Path | None:
    for p in (Path("~/.insightface/models/buffalo_l").expanduser(),):
        if p.is_dir() and list(p.glob("*.onnx")):
            return p
    return None


@pytest.mark.slow
@pytest.mark.skipif(_buffalo_l() is None, reason="buffalo_l is not in ~/.insightface/models")
def test_insightface_finds_the_six_people(group_photo_path):
    pytest.importorskip("insightface")
    from PIL import Image

    params = FaceParams(backend="insightface", detect_max_side=1280)
    image = np.asarray(Image.open(group_photo_path).convert("RGB"))
    dets = detect_faces([Frame(0.0, image)], params)
    assert len(dets) == 6
    assert all(d.embedding.shape == (512,) and d.quality >= 20 for d in dets)
    _match_people(dets, image.shape)


# --------------------------------------------------------------------------- dlib


def _match_people(dets, shape) -> dict[str, FaceDetection]:
    h, w = shape[:2]
    found = {}
    for name, (x1, y1, x2, y2) in GROUP_PHOTO_FACES.items():
        truth = (x1 / w, y1 / h, x2 / w, y2 / h)
        best = max(dets, key=lambda d: box_iou(d.box, truth))
        assert box_iou(best.box, truth) > 0.4, name
        found[name] = best
    return found


@pytest.fixture(scope="module")
def dlib_backend():
    pytest.importorskip("dlib")
    try:
        backend = F.make_face_backend(FaceParams())
    except ImportError as exc:  # face-recognition-models missing: the faces extra is not installed
        pytest.skip(str(exc))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def photo_image(group_photo_path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(group_photo_path).convert("RGB"))


@pytest.fixture(scope="module")
def photo_dets(photo_image, dlib_backend) -> list[FaceDetection]:
    # every face embedded (embed_fps=None): detect_faces alone then gives each its embedding
    params = FaceParams(detect_max_side=1280, embed_fps=None)
    return detect_faces([Frame(0.0, photo_image)], params, dlib_backend)


@pytest.mark.slow
def test_dlib_finds_the_six_people_on_the_photo(photo_image, photo_dets):
    assert len(photo_dets) == 6
    found = _match_people(photo_dets, photo_image.shape)
    for d in found.values():
        assert d.embedding.shape == (128,) and np.linalg.norm(d.embedding) == pytest.approx(1)
        assert d.score >= 0.75 and d.quality >= 0.3
    embs = np.stack([d.embedding for d in found.values()])
    sims = embs @ embs.T
    assert sims[~np.eye(6, dtype=bool)].max() < 0.93  # six different people


@pytest.mark.slow
def test_downscaled_detection_maps_boxes_back(photo_image, photo_dets, dlib_backend):
    params = FaceParams(detect_max_side=800, embed_fps=None)
    small = detect_faces([Frame(0.0, photo_image)], params, dlib_backend)
    assert len(small) >= 5
    for d in small:
        twin = max(photo_dets, key=lambda f: box_iou(d.box, f.box))
        assert box_iou(d.box, twin.box) > 0.6
        assert float(d.embedding @ twin.embedding) > 0.96  # embedded from the full-size frame


@pytest.mark.slow
def test_dlib_quality_drops_blurred_tiny_and_turned_faces(dlib_backend, photo_image):
    from PIL import Image, ImageFilter

    x1, y1, x2, y2 = GROUP_PHOTO_FACES["p1"]
    cand = F.Candidate((x1, y1, x2, y2), 0.9)
    sharp = dlib_backend.describe([(photo_image, cand)], [False])[0].quality
    blurred_img = np.asarray(Image.fromarray(photo_image).filter(ImageFilter.GaussianBlur(2.5)))
    blurred = dlib_backend.describe([(blurred_img, cand)], [False])[0].quality
    assert sharp > 0.8 and blurred < 0.3
    chip = np.full((150, 150, 3), 128, np.uint8)
    chip[::2] = 200  # sharp texture
    frontal = np.array([[60, 60], [40, 60], [90, 60], [110, 60], [75, 90]], float)
    turned = frontal.copy()
    turned[4, 0] = 105  # nose almost under one eye
    assert dlib_quality(100, chip, frontal) == pytest.approx(1.0)
    assert dlib_quality(25, chip, frontal) < 0.3  # tiny
    assert dlib_quality(100, chip, turned) < 0.3


@pytest.mark.slow
def test_threads_and_batches_do_not_change_detections(photo_image, dlib_backend):
    frames = [Frame(k * STEP, photo_image[:, k * 8 : k * 8 + 640].copy()) for k in range(3)]
    one = detect_faces(frames, FaceParams(threads=1, batch_size=1, detect_max_side=640))
    many = detect_faces(frames, FaceParams(batch_size=16, detect_max_side=640), dlib_backend)
    assert [(d.time, d.box) for d in one] == [(d.time, d.box) for d in many]
    assert all(np.allclose(a.embedding, b.embedding) for a, b in zip(one, many, strict=True))


@pytest.mark.slow
def test_embed_fps_embeds_a_few_best_faces_per_track(photo_image, dlib_backend):
    frames = [Frame(round(k * STEP, 6), photo_image[:, :640].copy()) for k in range(10)]
    params = FaceParams(embed_fps=2.0, detect_max_side=640, min_track_s=0.3)
    detected = detect_faces(frames, params, dlib_backend)
    assert detected and not any(d.embedding.size for d in detected)  # embedding comes later
    assert all(d.quality >= 0.3 for d in detected)  # dlib's quality needs no embedding
    timings: dict[str, float] = {}
    out = clip_faces(frames, params, dlib_backend, timings)
    per_track = defaultdict(list)
    for d in out:
        per_track[d.track].append(d)
    assert len(per_track) == 3  # the three people of the left 640 px
    for faces in per_track.values():
        assert len(faces) == 10
        embedded = [d.time for d in faces if d.embedding.size]
        # one second of track at 2 per second: its two ends and the best of each half second
        assert 2 <= len(embedded) <= 4 and {0.0, 0.9} <= set(embedded), embedded
    assert {"detect_s", "describe_s", "embed_s", "shots_s", "cluster_s"} <= set(timings)


@pytest.mark.slow
def test_dlib_people_keep_their_ids_across_clips(tmp_path, group_photo_path, dlib_backend):
    """Four 2 s clips: p1 p2 p3 | p4 p6 | p5 + p1 | p3 + p4 (people leave and come back).

    Faces are embedded at 5 fps (every other sampled frame) to keep the test short on 2 cores;
    the frames between take their track's cluster.
    """
    pytest.importorskip("hdbscan")
    from taskmem_lab.perception.identities import IdentityRegistry

    video = shot_video(tmp_path / "shots.mp4", group_photo_path, group_photo_shots(2.0))
    params = FaceParams(embed_fps=5.0)
    registry = IdentityRegistry()
    person_ids: dict[str, set[str]] = defaultdict(set)
    for k, start in enumerate(video.starts):
        times = sample_times(start, start + 2.0, params.face_fps)
        frames = [
            Frame(t, im) for t, im in zip(times, sample_frames(video.path, times), strict=True)
        ]
        dets = clip_faces(frames, params, dlib_backend)
        ids = registry.assign(dets, frames)
        expected = video.boxes[k]
        assert len(ids) == len(expected), (k, ids, expected)
        for d in dets:
            name = max(expected, key=lambda n: box_iou(d.box, expected[n]))
            assert box_iou(d.box, expected[name]) > 0.4
            person_ids[name].add(d.identity)
        # never two people of one frame under one id
        by_time = defaultdict(list)
        for d in dets:
            by_time[d.time].append(d.identity)
        assert all(len(v) == len(set(v)) for v in by_time.values())
        # all sampled frames of the clip show everybody (tracks walk every frame)
        assert len(by_time) == len(frames)
    assert set(person_ids) == set(GROUP_PHOTO_FACES)
    assert all(len(v) == 1 for v in person_ids.values()), person_ids  # one id per person
    assert len({next(iter(v)) for v in person_ids.values()}) == 6  # six people, six ids
    assert registry.characters[next(iter(person_ids["p1"]))].clips == 2  # p1 came back


# --------------------------------------------------------------------------- cuts and splits


def test_tracks_break_at_a_cut_even_where_boxes_overlap():
    a = moving(0.1, 5)  # frames 0.0 .. 0.4
    b = moving(0.1 + 5 * 0.002, 5, t0=0.5)  # the same place, the next shot
    dets = a + b
    one = F.build_tracks(dets, FaceParams(), None)
    assert len(one) == 1  # without the cut, IoU links the two shots
    two = F.build_tracks(dets, FaceParams(), None, cuts=[0.5])
    assert [len(t) for t in two] == [5, 5]


def test_pick_for_embedding_takes_the_best_face_of_each_bin():
    dets = moving(0.1, 10)
    for k, d in enumerate(dets):
        d.quality = [0.5, 0.9, 0.4, 0.3, 0.2, 0.6, 0.6, 0.95, 0.1, 0.7][k]
    picked = F.pick_for_embedding(dets, list(range(10)), 2.0)
    assert picked == [0, 1, 7, 9]  # the ends, and the best of each half second
    assert F.pick_for_embedding(dets, list(range(10)), 10.0) == list(range(10))
    assert F.pick_for_embedding(dets, [], 2.0) == []


def test_split_track_bisects_to_the_frame_where_the_face_changed():
    alice, bob = unit([1.0, 0.0, 0.0]), unit([0.0, 1.0, 0.0])
    truth = [alice] * 7 + [bob] * 13  # bob takes alice's place at frame 7
    dets = moving(0.1, 20, emb=np.zeros(0, np.float32))
    embedded: list[int] = []

    def embed(indices):
        for i in indices:
            embedded.append(i)
            dets[i].embedding = truth[i]

    embed([0, 10, 19])  # what pick_for_embedding would give at 1 per second
    pieces = F.split_track(list(range(20)), dets, 0.5, embed)
    assert pieces == [list(range(7)), list(range(7, 20))]
    assert len(embedded) <= 3 + 4  # log2(10) extra embeddings at most
    same = F.split_track(list(range(7)), dets, 0.5, embed)
    assert same == [list(range(7))]


def test_shot_cuts_find_hard_cuts_and_ignore_a_drifting_camera():
    from PIL import Image

    from taskmem_lab.perception.shots import shot_cuts

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (5, 8, 3), dtype=np.uint8)  # a smooth scene, not noise
    scene_a = np.asarray(Image.fromarray(coarse).resize((64, 36), Image.Resampling.BICUBIC))
    scene_b = np.roll(scene_a[:, ::-1], 17, axis=0)  # same colours, other framing
    frames = [Frame(round(k * STEP, 6), np.roll(scene_a, k // 3, axis=1)) for k in range(5)]
    frames += [Frame(round((5 + k) * STEP, 6), scene_b) for k in range(3)]
    frames += [Frame(0.8, np.full((36, 64, 3), (200, 30, 30), np.uint8))]
    assert shot_cuts(frames) == [0.5, 0.8]


def test_streams_share_a_bounded_pool_of_face_backends(monkeypatch):
    """One backend per `threads` cores in a process, each lent to one stream at a time."""
    import threading
    import time

    from taskmem_lab.perception import face_backends as FB

    made: list[object] = []
    closed: list[object] = []

    class CountingBackend:
        """A test double standing in for a loaded dlib backend."""

        def __init__(self, params):
            made.append(self)

        def close(self):
            closed.append(self)

    monkeypatch.setattr(FB, "make_face_backend", CountingBackend)
    monkeypatch.setattr(FB, "cores", lambda: 4)
    monkeypatch.setattr(FB, "_POOLS", {})
    params = FaceParams(threads=2, face_fps=3.0)  # a key no other test uses
    assert FB.face_backend_slots(params) == 2
    assert FB.face_backend_slots(FaceParams(threads=1)) == 4  # one per `threads` cores
    busy, most = [0], [0]
    lock = threading.Lock()

    def stream() -> None:
        for _ in range(3):
            with FB.borrow_face_backend(params):
                with lock:
                    busy[0] += 1
                    most[0] = max(most[0], busy[0])
                time.sleep(0.01)
                with lock:
                    busy[0] -= 1

    threads = [threading.Thread(target=stream) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 2 and most[0] == 2  # six streams, two backends, never more lent at once
    FB.close_face_backends()
    assert sorted(map(id, closed)) == sorted(map(id, made))
    with FB.borrow_face_backend(params) as again:
        assert len(made) == 3 and again is made[-1]  # closed backends are not lent again


def test_dlib_describes_faces_on_strided_frames(dlib_backend, photo_image):
    """A decoded 426x240 frame is a strided view (rows padded to the decoder's alignment);
    dlib's face chips need contiguous arrays (found on the labelled set's 240p scenes)."""
    x1, y1, x2, y2 = GROUP_PHOTO_FACES["p1"]
    padded = np.zeros((photo_image.shape[0], photo_image.shape[1] + 22, 3), np.uint8)
    padded[:, : photo_image.shape[1]] = photo_image
    strided = padded[:, : photo_image.shape[1]]
    assert not strided.flags.c_contiguous
    cand = F.Candidate((x1, y1, x2, y2), 0.9)
    (got,) = dlib_backend.describe([(strided, cand)], [True])
    (want,) = dlib_backend.describe([(photo_image, cand)], [True])
    assert np.allclose(got.embedding, want.embedding, atol=1e-5)
