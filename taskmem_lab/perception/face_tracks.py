"""Faces of a clip grouped: HDBSCAN clustering on cosine distance and IoU track linking.

Floor 3 (perception). `cluster_faces` clusters a clip's embedded detections (or a
`TASKMEM_FACE_CLUSTER_BACKEND` plug-in does); `link_tracks` links detections of consecutive
sampled frames into tracks and gives each track one cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from taskmem_lab.errors import PluginError, missing_extra
from taskmem_lab.perception.params import CLUSTER_PLUGIN_ENV, FaceParams
from taskmem_lab.perception.records import FaceDetection
from taskmem_lab.plugins import call_plugin, plugin_function

# --------------------------------------------------------------------------- plug-ins


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
        raise missing_extra("hdbscan", "faces", exc) from exc
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
    dets: Sequence[FaceDetection],
    params: FaceParams,
    frame_times: Sequence[float] | None,
    cuts: Sequence[float] = (),
) -> list[_Track]:
    """Greedy IoU linking: a detection joins the track whose box on the previous sampled frame
    overlaps it most (IoU > params.iou); every sampled frame is visited, and a frame in which a
    track's face was not found ends that track, as does a shot cut (`cuts`: times of the frames
    that start a new shot). The sampled frames are `frame_times` when given, else the global
    `n / face_fps` grid."""
    step = 1.0 / params.face_fps
    by_time: dict[float, list[int]] = {}
    for i, d in enumerate(dets):
        by_time.setdefault(round(d.time, 6), []).append(i)
    grid = sorted({round(t, 6) for t in frame_times}) if frame_times is not None else None
    position = {t: k for k, t in enumerate(grid)} if grid is not None else {}
    for t in by_time:
        if grid is not None and t not in position:
            raise ValueError(f"a face at {t:.3f}s is on none of the given frame times")

    new_shot = {round(t, 6) for t in cuts}

    def adjacent(prev: float, t: float) -> bool:
        if t in new_shot:
            return False
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


def build_tracks(
    dets: Sequence[FaceDetection],
    params: FaceParams,
    frame_times: Sequence[float] | None = None,
    cuts: Sequence[float] = (),
) -> list[list[int]]:
    """IoU tracks as lists of indices into `dets`, in time order, broken at shot `cuts`."""
    return [list(tr.members) for tr in _tracks(dets, params, frame_times, cuts)]


def pick_for_embedding(
    dets: Sequence[FaceDetection], members: Sequence[int], per_second: float
) -> list[int]:
    """The faces of a track worth embedding, in time order: its first and last face (where a
    missed cut or a swap of people at a clip's edge would hide), and the best face (highest
    quality, then detection score, then the earliest) of each bin of `1 / per_second` seconds
    from its first face, so the few embeddings are good and spread in time."""
    if not members:
        return []
    t0 = dets[members[0]].time
    best: dict[int, int] = {}
    for i in members:
        b = int((dets[i].time - t0) * per_second + 1e-6)
        j = best.get(b)
        if j is None or (dets[i].quality, dets[i].score) > (dets[j].quality, dets[j].score):
            best[b] = i
    return sorted({members[0], members[-1], *best.values()}, key=lambda i: dets[i].time)


def _distance(a: FaceDetection, b: FaceDetection) -> float:
    return 1.0 - float(np.dot(a.embedding, b.embedding))


def split_track(
    members: Sequence[int],
    dets: Sequence[FaceDetection],
    limit: float,
    embed: Callable[[Sequence[int]], None],
) -> list[list[int]]:
    """Split a track where its faces stop being one person.

    Consecutive embedded faces farther apart than `limit` (cosine distance) are two people
    (one left and another took the place, or a cut was missed); the faces between them are
    bisected, embedding the middle one each time with `embed` (which sets `.embedding` on the
    detections at the given indices), until the change lies between two neighbouring frames.
    Returns the pieces, each in time order.
    """
    members = list(members)
    starts: list[int] = []
    have = [k for k, i in enumerate(members) if dets[i].embedding.size]
    k = 0
    while k + 1 < len(have):
        a, b = have[k], have[k + 1]
        if _distance(dets[members[a]], dets[members[b]]) <= limit:
            k += 1
            continue
        lo, hi = a, b
        while hi - lo > 1:
            mid = (lo + hi) // 2
            embed([members[mid]])
            if not dets[members[mid]].embedding.size:
                break  # cannot tell: cut at the first unknown face
            if _distance(dets[members[a]], dets[members[mid]]) <= limit:
                lo = mid
            else:
                hi = mid
        cut = lo + 1
        starts.append(cut)
        have = sorted({p for p, i in enumerate(members) if dets[i].embedding.size} | {cut})
        have = [p for p in have if p >= cut]
        k = 0
        if not dets[members[cut]].embedding.size:
            have = have[1:]
    bounds = [0, *starts, len(members)]
    return [members[x:y] for x, y in zip(bounds, bounds[1:], strict=False) if y > x]


def link_tracks(
    dets: Sequence[FaceDetection],
    params: FaceParams,
    frame_times: Sequence[float] | None = None,
    tracks: Sequence[Sequence[int]] | None = None,
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
    `tracks`, when given (lists of indices into `dets`, e.g. from `build_tracks` and
    `split_track`), are used instead of linking by IoU here.
    """
    if tracks is None:
        built = _tracks(dets, params, frame_times)
    else:
        built = [_Track(list(m), {round(dets[i].time, 6) for i in m}) for m in tracks if len(m)]
    step = 1.0 / params.face_fps
    kept = [
        tr
        for tr in built
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
