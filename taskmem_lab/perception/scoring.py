"""Perception scored the way the field scores it: WER, DER/JER, IDF1/MOTA, speaker-to-face linking.

Floor 3 (perception). Compares a perception run (the clip records of `clips.jsonl`) with a
`Truth` (see `perception.truth`), using the field's own libraries rather than our arithmetic:

- WER with `jiwer` (lower case, no punctuation), over the whole transcript;
- DER and JER with `pyannote.metrics` (collar 0.25 s), with and without overlapping speech;
- identity tracking with `motmetrics` on every frame perception sampled for faces (IoU >= 0.5):
  IDF1, ID switches, MOTA, plus the switches on the first sampled frame after a cut, the ids
  that more than one person wore, and the share of matched faces wearing an id that belongs to
  someone else;
- speaker-to-face linking: the share of speech time, where the speaker is on screen, whose
  speaker label is the face id perception gave that person.

`Scorer` accumulates several videos (the set's scenes) and reports each and the total;
`score_run` scores one stored perception folder against one truth file (`taskmem perceive
--truth`). Needs the `scoring` extra (jiwer, pyannote.metrics, motmetrics).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError, missing_extra
from taskmem_lab.perception.records import UNKNOWN_SPEAKER
from taskmem_lab.perception.truth import Truth, TruthSpeech, load_truth

COLLAR_S = 0.25
MIN_IOU = 0.5
LINK_STEP_S = 0.1


@dataclass(frozen=True)
class HypSegment:
    """A perceived utterance: times, text and speaker label (a face or voice id, or unknown)."""

    start: float
    end: float
    text: str
    speaker: str


@dataclass(frozen=True)
class HypFace:
    """A perceived face: frame time, normalized box, and the id perception gave it."""

    time: float
    box: tuple[float, float, float, float]
    identity: str


@dataclass(frozen=True)
class Scores:
    """The figures of one video, or of several together (see `Scorer.total`)."""

    wer: float | None
    der: float | None
    der_no_overlap: float | None
    jer: float | None
    jer_no_overlap: float | None
    idf1: float | None
    id_switches: int | None
    mota: float | None
    switches_at_cuts: int | None
    shared_ids: int | None
    wrong_id_share: float | None
    linking: float | None
    speech_s: float
    frames: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- reading runs


def hypothesis_of(records: Iterable[dict[str, Any]]) -> tuple[list[HypSegment], list[HypFace]]:
    """Segments and faces of perception clip records (the lines of `clips.jsonl`)."""
    segs: list[HypSegment] = []
    faces: list[HypFace] = []
    for r in sorted(records, key=lambda r: r["clip"]):
        for s in r.get("transcript") or []:
            segs.append(
                HypSegment(float(s["start"]), float(s["end"]), str(s["text"]), str(s["speaker"]))
            )
        for d in r.get("faces") or []:
            if d.get("identity"):
                faces.append(HypFace(float(d["time"]), tuple(d["box"]), str(d["identity"])))  # type: ignore[arg-type]
    return segs, faces


def sampled_times(records: Iterable[dict[str, Any]], face_fps: float) -> list[float]:
    """The frame times perception searched for faces: its grid in every stored clip."""
    from taskmem_lab.media.video import sample_times

    times: set[float] = set()
    for r in records:
        times.update(sample_times(float(r["start"]), float(r["end"]), face_fps))
    return sorted(times)


# --------------------------------------------------------------------------- the metrics


def _jiwer() -> Any:
    try:
        import jiwer
    except ImportError as exc:
        raise missing_extra("jiwer", "scoring", exc) from exc
    return jiwer


def _transform() -> Any:
    jiwer = _jiwer()
    return jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[int, int]:
    """(errors, reference words) of each pair of texts together, by jiwer (case and
    punctuation ignored); an empty reference counts its hypothesis' words as insertions."""
    jiwer = _jiwer()
    transform = _transform()
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        if not transform(ref)[0]:
            errors += len(transform(hyp)[0]) if hyp.strip() else 0
            continue
        if not hyp.strip() or not transform(hyp)[0]:
            n = len(transform(ref)[0])
            errors, words = errors + n, words + n
            continue
        out = jiwer.process_words(
            ref, hyp, reference_transform=transform, hypothesis_transform=transform
        )
        errors += out.substitutions + out.deletions + out.insertions
        words += out.substitutions + out.deletions + out.hits
    return errors, words


def transcript_text(items: Iterable[HypSegment | TruthSpeech]) -> str:
    """Texts in order of start time, joined."""
    return " ".join(s.text for s in sorted(items, key=lambda s: (s.start, s.end)))


def _annotation(items: Iterable[tuple[float, float, str]]) -> Any:
    try:
        from pyannote.core import Annotation, Segment
    except ImportError as exc:
        raise missing_extra("pyannote.metrics", "scoring", exc) from exc
    ann = Annotation()
    for i, (start, end, label) in enumerate(items):
        if end > start:
            ann[Segment(start, end), i] = label
    return ann


def speaker_annotations(truth: Sequence[TruthSpeech], hyp: Sequence[HypSegment]) -> tuple[Any, Any]:
    """pyannote annotations of the truth and the hypothesis; every `unknown` hypothesis
    segment is a speaker of its own (an unnamed speaker is no cluster)."""
    reference = _annotation((s.start, s.end, s.speaker) for s in truth)
    labels = [
        s.speaker if s.speaker != UNKNOWN_SPEAKER else f"{UNKNOWN_SPEAKER}#{i}"
        for i, s in enumerate(hyp)
    ]
    hypothesis = _annotation((s.start, s.end, lab) for s, lab in zip(hyp, labels, strict=True))
    return reference, hypothesis


def diarization_metrics(collar: float = COLLAR_S) -> dict[str, Any]:
    """Fresh pyannote metrics (they accumulate over the videos they are called on)."""
    try:
        from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate
    except ImportError as exc:
        raise missing_extra("pyannote.metrics", "scoring", exc) from exc
    return {
        "der": DiarizationErrorRate(collar=collar, skip_overlap=False),
        "der_no_overlap": DiarizationErrorRate(collar=collar, skip_overlap=True),
        "jer": JaccardErrorRate(collar=collar, skip_overlap=False),
        "jer_no_overlap": JaccardErrorRate(collar=collar, skip_overlap=True),
    }


def iou_distances(truth: Sequence[Sequence[float]], hyp: Sequence[Sequence[float]]) -> Any:
    """motmetrics' distance matrix: 1 - IoU of (x1, y1, x2, y2) boxes, NaN (no match) where
    the IoU is below `MIN_IOU`. Written out because `motmetrics.distances.iou_matrix` (1.4.0,
    the latest release) calls `np.asfarray`, which NumPy 2 removed."""
    import numpy as np

    a = np.asarray(truth, dtype=float).reshape(-1, 4)[:, None, :]
    b = np.asarray(hyp, dtype=float).reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    iou = inter / np.maximum(area(a) + area(b) - inter, 1e-12)
    return np.where(iou >= MIN_IOU, 1 - iou, np.nan)


@dataclass
class Tracking:
    """What motmetrics saw on one video: its accumulator and the facts around it."""

    acc: Any
    frame_times: list[float]
    first_after_cut: set[int]
    duplicate_ids: int  # detections wearing an id already worn in the same frame
    people: list[str]  # motmetrics' object id k is people[k] (it takes numbers only)
    ids: list[str]  # and hypothesis id k is ids[k]

    def events(self) -> Any:
        return self.acc.mot_events

    def matches(self) -> list[tuple[str, str, int]]:
        """(person, id, frame) of every matched face."""
        ev = self.events()
        hit = ev[ev["Type"].isin(["MATCH", "SWITCH"])]
        frames = hit.index.get_level_values("FrameId")
        return [
            (self.people[int(o)], self.ids[int(h)], int(f))
            for o, h, f in zip(hit["OId"], hit["HId"], frames, strict=True)
        ]

    def person_ids(self) -> dict[str, str]:
        """Each person's most worn id."""
        count: dict[str, Counter[str]] = defaultdict(Counter)
        for person, hid, _ in self.matches():
            count[person][hid.split("#")[0]] += 1
        return {p: c.most_common(1)[0][0] for p, c in count.items()}

    def id_owners(self) -> dict[str, Counter[str]]:
        owners: dict[str, Counter[str]] = defaultdict(Counter)
        for person, hid, _ in self.matches():
            owners[hid.split("#")[0]][person] += 1
        return owners

    def switches_at_cuts(self) -> int:
        ev = self.events()
        sw = ev[ev["Type"] == "SWITCH"]
        return sum(int(f) in self.first_after_cut for f in sw.index.get_level_values("FrameId"))

    def shared_ids(self) -> int:
        """Ids worn by more than one person."""
        return sum(len(c) > 1 for c in self.id_owners().values())

    def wrong_id_share(self) -> float | None:
        """Share of matched faces wearing an id that belongs (mostly) to someone else."""
        owners = self.id_owners()
        total = sum(sum(c.values()) for c in owners.values())
        if not total:
            return None
        wrong = sum(sum(c.values()) - c.most_common(1)[0][1] for c in owners.values())
        return wrong / total


def track_faces(truth: Truth, faces: Sequence[HypFace], times: Sequence[float]) -> Tracking:
    """Feed motmetrics one frame per sampled time: truth faces vs perceived faces (IoU >= 0.5)."""
    try:
        import motmetrics as mm
    except ImportError as exc:
        raise missing_extra("motmetrics", "scoring", exc) from exc
    by_time: dict[float, list[HypFace]] = defaultdict(list)
    for f in faces:
        by_time[round(f.time, 3)].append(f)
    acc = mm.MOTAccumulator(auto_id=False)
    kept: list[float] = []
    first_after_cut: set[int] = set()
    duplicates = 0
    oids: dict[str, int] = {}
    hid_of: dict[str, int] = {}
    cuts = list(truth.cuts)
    previous = -1e9
    for t in sorted(set(times) | set(by_time)):
        frame = truth.frame_at(t)
        if frame is None:
            continue
        n = len(kept)
        if any(previous < c <= t + 1e-6 for c in cuts):
            first_after_cut.add(n)
        previous = t
        kept.append(t)
        people = sorted(frame.faces)
        hyps = by_time.get(round(t, 3), [])
        seen: Counter[str] = Counter()
        hids = []
        for h in hyps:
            seen[h.identity] += 1
            hids.append(h.identity if seen[h.identity] == 1 else f"{h.identity}#{seen[h.identity]}")
        duplicates += sum(c - 1 for c in seen.values())
        dist = iou_distances([frame.faces[p] for p in people], [h.box for h in hyps])
        acc.update(
            [oids.setdefault(p, len(oids)) for p in people],
            [hid_of.setdefault(h, len(hid_of)) for h in hids],
            dist,
            frameid=n,
        )
    return Tracking(acc, kept, first_after_cut, duplicates, list(oids), list(hid_of))


def linking_seconds(
    truth: Truth, hyp: Sequence[HypSegment], person_ids: dict[str, str], step: float = LINK_STEP_S
) -> tuple[float, float]:
    """(linked, total) seconds of speech where the speaker is on screen; linked where a
    perceived segment covering the moment names the face id perception gave the speaker."""
    linked = total = 0.0
    for s in truth.speech:
        n = max(1, int(round((s.end - s.start) / step)))
        for k in range(n):
            t = s.start + (k + 0.5) * (s.end - s.start) / n
            frame = truth.frame_at(t)
            if frame is None or s.speaker not in frame.faces:
                continue
            dt = (s.end - s.start) / n
            total += dt
            face_id = person_ids.get(s.speaker)
            if face_id and any(h.start <= t <= h.end and h.speaker == face_id for h in hyp):
                linked += dt
    return linked, total


# --------------------------------------------------------------------------- accumulating


class Scorer:
    """Scores videos one by one (`add`) and all together (`total`)."""

    def __init__(self, collar: float = COLLAR_S) -> None:
        self.collar = collar
        self._metrics = diarization_metrics(collar)
        self._words = [0, 0]
        self._link = [0.0, 0.0]
        self._tracks: list[Tracking] = []
        self._speech_s = 0.0

    def add(
        self,
        truth: Truth,
        segments: Sequence[HypSegment],
        faces: Sequence[HypFace] | None,
        times: Sequence[float] = (),
        asr: bool = True,
    ) -> Scores:
        """Score one video. `faces` None: perception ran without faces (no tracking figures);
        `times`: the frames sampled for faces (see `sampled_times`); `asr` False: no speech
        figures."""
        speech_s = sum(s.end - s.start for s in truth.speech)
        self._speech_s += speech_s
        wer = der = der_no = jer = jer_no = None
        if asr:
            errors, words = word_errors(
                [transcript_text(truth.speech)], [transcript_text(segments)]
            )
            self._words[0] += errors
            self._words[1] += words
            wer = errors / words if words else None
            ref, hyp = speaker_annotations(truth.speech, segments)
            if truth.speech:
                uem = _uem(truth.duration)
                values = {k: m(ref, hyp, uem=uem) for k, m in self._metrics.items()}
                der, der_no = values["der"], values["der_no_overlap"]
                jer, jer_no = values["jer"], values["jer_no_overlap"]
        tracking = None
        if faces is not None:
            tracking = track_faces(truth, faces, times)
            self._tracks.append(tracking)
        link = None
        if asr and tracking is not None:
            linked, total = linking_seconds(truth, segments, tracking.person_ids())
            self._link[0] += linked
            self._link[1] += total
            link = linked / total if total else None
        return Scores(
            wer, der, der_no, jer, jer_no, **_tracking_figures([tracking] if tracking else []),
            linking=link, speech_s=speech_s, frames=len(tracking.frame_times) if tracking else 0,
        )  # fmt: skip

    def total(self) -> Scores:
        """All videos added so far together (pyannote's and motmetrics' own aggregation)."""
        m = self._metrics
        spoken = self._words[1] > 0
        diar = {k: (abs(v) if spoken else None) for k, v in m.items()}
        return Scores(
            self._words[0] / self._words[1] if spoken else None,
            diar["der"], diar["der_no_overlap"], diar["jer"], diar["jer_no_overlap"],
            **_tracking_figures(self._tracks),
            linking=self._link[0] / self._link[1] if self._link[1] else None,
            speech_s=self._speech_s,
            frames=sum(len(t.frame_times) for t in self._tracks),
        )  # fmt: skip


def _uem(duration: float) -> Any:
    from pyannote.core import Segment, Timeline

    return Timeline([Segment(0.0, max(duration, 1e-3))])


def _tracking_figures(tracks: Sequence[Tracking]) -> dict[str, Any]:
    """idf1, id_switches, mota, switches_at_cuts, shared_ids and wrong_id_share of the tracks."""
    names = ("idf1", "id_switches", "mota", "switches_at_cuts", "shared_ids", "wrong_id_share")
    if not tracks:
        return dict.fromkeys(names)
    import motmetrics as mm

    mh = mm.metrics.create()
    labels = [str(i) for i in range(len(tracks))]
    summary = mh.compute_many(
        [t.acc for t in tracks],
        metrics=["idf1", "num_switches", "mota"],
        names=labels,
        generate_overall=len(tracks) > 1,
    )
    row = summary.loc["OVERALL" if len(tracks) > 1 else labels[0]]
    owners: list[Counter[str]] = [c for t in tracks for c in t.id_owners().values()]
    total = sum(sum(c.values()) for c in owners)
    wrong = sum(sum(c.values()) - c.most_common(1)[0][1] for c in owners)
    values = (
        _finite(row["idf1"]),
        int(row["num_switches"]),
        _finite(row["mota"]),
        sum(t.switches_at_cuts() for t in tracks),
        sum(t.shared_ids() for t in tracks),
        wrong / total if total else None,
    )
    return dict(zip(names, values, strict=True))


def _finite(x: Any) -> float | None:
    import math

    value = float(x)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- a stored run


def score_run(truth_path: str | Path, perception_path: str | Path) -> Scores:
    """Score a stored perception folder (`runs/<video>/perception/<hash>/`) against a truth file.

    Faces are scored on the frames perception sampled (its `face_fps` from `settings.json`);
    a run without faces or without speech gets no figures for the part it skipped.
    """
    from taskmem_lab.store import read_jsonl

    truth = load_truth(truth_path)
    folder = Path(perception_path)
    settings_file = folder / "settings.json"
    if not settings_file.is_file():
        raise ConfigError(f"{folder} is not a perception folder (no settings.json)")
    settings = json.loads(settings_file.read_text(encoding="utf-8"))["perception"]
    records = list(read_jsonl(folder / "clips.jsonl"))
    if not records:
        raise ConfigError(f"{folder} holds no perceived clips yet")
    segments, faces = hypothesis_of(records)
    fp = settings.get("faces")
    times = sampled_times(records, float(fp["face_fps"])) if fp else []
    return Scorer().add(
        truth, segments, faces if fp else None, times, asr=settings.get("asr") is not None
    )


def format_scores(scores: Scores) -> str:
    """The figures as `name: value` lines (percentages for rates)."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [
        f"WER: {pct(scores.wer)}",
        f"DER: {pct(scores.der)} (collar {COLLAR_S} s; without overlap {pct(scores.der_no_overlap)})",
        f"JER: {pct(scores.jer)} (without overlap {pct(scores.jer_no_overlap)})",
        f"IDF1: {pct(scores.idf1)}, ID switches: {scores.id_switches}, MOTA: {pct(scores.mota)}",
        f"switches at cuts: {scores.switches_at_cuts}, ids worn by several people: "
        f"{scores.shared_ids}, faces wearing another's id: {pct(scores.wrong_id_share)}",
        f"speaker-to-face linking: {pct(scores.linking)} of on-screen speech",
    ]
    return "\n".join(lines)
