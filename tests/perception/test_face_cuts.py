"""Identities across hard cuts at arbitrary offsets inside clips (dlib on the group photo).

Shots put different people in the same places, so a track that crossed a cut would carry the
previous person's id; people come back in later shots and must keep their ids.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from taskmem_lab.media.video import Frame, open_reader, sample_times
from taskmem_lab.perception.faces import FaceParams, box_iou, clip_faces, make_face_backend
from taskmem_lab.testing.media import GROUP_PHOTO_FACES, Shot, head_region, shot_video

CLIP_S = 10.0


def _people(*names: str) -> tuple[tuple[int, int, int, int], ...]:
    return tuple(head_region(GROUP_PHOTO_FACES[n], 320 / 360, (1280, 886)) for n in names)


# (duration, people left to right). Cuts fall at 4.7 (mid-clip), 10.1 (0.1 s after a clip
# starts), 19.9 (0.1 s before a clip ends), 23.0, 26.5 and 30.0 (on a clip boundary).
SHOTS = [
    (4.7, ("p1", "p2")),
    (5.4, ("p3", "p4")),
    (9.8, ("p2", "p1")),
    (3.1, ("p4", "p3")),
    (3.5, ("p1", "p2")),
    (3.5, ("p6", "p5")),
    (3.0, ("p3", "p1")),
]


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory, group_photo_path):
    shots = [Shot(d, _people(*names)) for d, names in SHOTS]
    path = tmp_path_factory.mktemp("cuts") / "cuts.mp4"
    return shot_video(path, group_photo_path, shots)


@pytest.fixture(scope="module")
def backend():
    pytest.importorskip("dlib")
    pytest.importorskip("hdbscan")
    try:
        b = make_face_backend(FaceParams())
    except ImportError as exc:
        pytest.skip(str(exc))
    yield b
    b.close()


def _run(video, params: FaceParams, backend):
    from taskmem_lab.perception.identities import IdentityRegistry

    registry = IdentityRegistry()
    reader = open_reader(video.path, 640)
    total = sum(d for d, _ in SHOTS)
    out = []
    try:
        start = 0.0
        while start < total - 1e-6:
            times = sample_times(start, min(start + CLIP_S, total), params.face_fps)
            frames = [Frame(t, im) for t, im in zip(times, reader.frames_at(times), strict=True)]
            dets = clip_faces(frames, params, backend)
            registry.assign(dets, frames)
            out += [d for d in dets if d.identity]
            start += CLIP_S
    finally:
        reader.close()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("cuts", [True, False], ids=["cut-detection", "embedding-splits-only"])
def test_no_face_carries_another_persons_id_across_cuts(cut_video, backend, cuts):
    dets = _run(cut_video, FaceParams(embed_fps=2.0, cut_detection=cuts), backend)
    people_of: dict[str, Counter[str]] = defaultdict(Counter)
    ids_of: dict[str, set[str]] = defaultdict(set)
    for d in dets:
        shot = cut_video.shot_at(d.time)
        truth = cut_video.boxes[shot]
        name = max(truth, key=lambda n: box_iou(d.box, truth[n]))
        assert box_iou(d.box, truth[name]) > 0.3, (d.time, d.box)
        people_of[d.identity][name] += 1
        ids_of[name].add(d.identity)
    wrong = {
        gid: {n: c for n, c in names.items() if n != names.most_common(1)[0][0]}
        for gid, names in people_of.items()
        if len(names) > 1
    }
    assert wrong == {}, wrong  # 0 wrongly labelled detections
    assert set(ids_of) == {n for _, names in SHOTS for n in names}
    assert all(len(v) == 1 for v in ids_of.values()), ids_of  # returning people keep their ids
    assert len({next(iter(v)) for v in ids_of.values()}) == len(ids_of)  # one id per person
    # Faces are found right after each cut: nobody loses more than the first short track.
    seen = Counter(cut_video.shot_at(d.time) for d in dets)
    assert all(seen[k] > 0 for k in range(len(SHOTS))), seen
