"""Scoring perception against truth: tiny hand-built truth/hypothesis pairs with known answers."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("jiwer")
pytest.importorskip("pyannote.metrics")
pytest.importorskip("motmetrics")

from taskmem_lab.errors import ConfigError  # noqa: E402
from taskmem_lab.perception.scoring import (  # noqa: E402
    HypFace,
    HypSegment,
    Scorer,
    format_scores,
    linking_seconds,
    score_run,
    track_faces,
    word_errors,
)
from taskmem_lab.perception.truth import (  # noqa: E402
    Truth,
    TruthFrame,
    TruthSpeech,
    load_truth,
    truth_from_json,
)

LEFT = (0.1, 0.2, 0.3, 0.6)
RIGHT = (0.6, 0.2, 0.8, 0.6)


def two_people(frames: int = 4, fps: float = 1.0, cut_at: float | None = 2.0) -> Truth:
    """p on the left and q on the right on every frame (1 fps), a cut at 2 s."""
    return Truth(
        "v.mp4",
        float(frames),
        fps,
        tuple(TruthFrame(float(t), {"p": LEFT, "q": RIGHT}) for t in range(frames)),
        (TruthSpeech(0.0, 2.0, "p", "hello there"),),
        cuts=(cut_at,) if cut_at is not None else (),
    )


def test_word_errors_count_with_jiwer_ignoring_case_and_punctuation() -> None:
    assert word_errors(["The cat sat on the mat."], ["the cat sat on mat"]) == (1, 6)
    assert word_errors(["one two"], [""]) == (2, 2)
    assert word_errors(["a b", "c d"], ["a b", "c x"]) == (1, 4)


def test_der_is_zero_for_a_renamed_perfect_diarization_and_half_for_one_label() -> None:
    truth = Truth("v", 20.0, 1.0, (), (TruthSpeech(0, 10, "A", "x"), TruthSpeech(10, 20, "B", "y")))
    perfect = Scorer().add(
        truth, [HypSegment(0, 10, "x", "s1"), HypSegment(10, 20, "y", "s2")], None
    )
    assert perfect.der == pytest.approx(0.0)
    assert perfect.jer == pytest.approx(0.0)
    assert perfect.wer == 0.0
    # One label for both: the collar (0.25 s each side of 0, 10, 20) leaves 9.5 s of each
    # speaker scored, and B's 9.5 s are confused.
    merged = Scorer().add(truth, [HypSegment(0, 20, "x y", "s1")], None)
    assert merged.der == pytest.approx(9.5 / 19)


def test_unknown_segments_are_speakers_of_their_own() -> None:
    truth = Truth("v", 20.0, 1.0, (), (TruthSpeech(0, 10, "A", "x"), TruthSpeech(10, 20, "A", "y")))
    hyp = [HypSegment(0, 10, "x", "unknown"), HypSegment(10, 20, "y", "unknown")]
    assert Scorer().add(truth, hyp, None).der == pytest.approx(9.5 / 19)


def test_ids_swapped_at_a_cut_are_two_switches_at_the_cut_and_two_shared_ids() -> None:
    truth = two_people()
    faces = [HypFace(t, LEFT, "a" if t < 2 else "b") for t in range(4)]
    faces += [HypFace(t, RIGHT, "b" if t < 2 else "a") for t in range(4)]
    tracking = track_faces(truth, faces, [0.0, 1.0, 2.0, 3.0])
    assert tracking.switches_at_cuts() == 2
    assert tracking.shared_ids() == 2
    assert tracking.wrong_id_share() == pytest.approx(0.5)
    scores = Scorer().add(truth, [], faces, [0.0, 1.0, 2.0, 3.0], asr=False)
    assert scores.id_switches == 2
    assert scores.idf1 == pytest.approx(0.5)
    assert scores.mota == pytest.approx(1 - 2 / 8)
    assert scores.switches_at_cuts == 2


def test_steady_ids_score_perfectly_and_misses_count_on_sampled_frames() -> None:
    truth = two_people()
    faces = [HypFace(t, LEFT, "a") for t in range(4)] + [HypFace(t, RIGHT, "b") for t in range(4)]
    scores = Scorer().add(truth, [], faces, [0.0, 1.0, 2.0, 3.0], asr=False)
    assert (scores.idf1, scores.id_switches, scores.switches_at_cuts, scores.shared_ids) == (
        1.0,
        0,
        0,
        0,
    )
    # q is never found on frames 2 and 3 (sampled, no detection): two misses.
    missing = [f for f in faces if not (f.box == RIGHT and f.time >= 2)]
    assert Scorer().add(truth, [], missing, [0.0, 1.0, 2.0, 3.0], asr=False).mota == 0.75
    # A box that overlaps the truth by less than IoU 0.5 is no match.
    off = [HypFace(0.0, (0.25, 0.2, 0.45, 0.6), "a")]
    assert Scorer().add(two_people(1, cut_at=None), [], off, [0.0], asr=False).mota == -0.5


def test_linking_is_the_share_of_on_screen_speech_labelled_with_the_speakers_face_id() -> None:
    truth = two_people()
    assert linking_seconds(truth, [HypSegment(0, 2, "hi", "a")], {"p": "a"}) == (
        pytest.approx(2.0),
        pytest.approx(2.0),
    )
    linked, total = linking_seconds(truth, [HypSegment(0, 1, "hi", "a")], {"p": "a"})
    assert (linked, total) == (pytest.approx(1.0), pytest.approx(2.0))
    assert linking_seconds(truth, [HypSegment(0, 2, "hi", "b")], {"p": "a"})[0] == 0
    # Speech of someone off screen does not count.
    off = Truth("v", 2.0, 1.0, truth.frames[:2], (TruthSpeech(0, 2, "z", "hi"),))
    assert linking_seconds(off, [HypSegment(0, 2, "hi", "a")], {"z": "a"}) == (0.0, 0.0)


def test_total_adds_videos_up() -> None:
    scorer = Scorer()
    t1 = Truth("a", 10.0, 1.0, (), (TruthSpeech(0, 5, "A", "one two three four"),))
    t2 = Truth("b", 10.0, 1.0, (), (TruthSpeech(0, 5, "A", "five six"),))
    scorer.add(t1, [HypSegment(0, 5, "one two three four", "x")], None)
    scorer.add(t2, [HypSegment(0, 5, "five", "x")], None)
    total = scorer.total()
    assert total.wer == pytest.approx(1 / 6)
    assert total.der == pytest.approx(0.0)
    assert total.speech_s == 10.0
    assert "WER: 16.7%" in format_scores(total)


def test_truth_files_are_checked_field_by_field(tmp_path) -> None:
    good = two_people().to_json()
    assert truth_from_json(json.loads(json.dumps(good))).frames[1].faces["q"] == RIGHT
    bad = dict(good, frames=[{"t": 0, "faces": {"p": [0.5, 0.2, 0.3, 0.6]}}])
    with pytest.raises(ConfigError, match=r"frames\[0\].faces\['p'\]"):
        truth_from_json(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_truth(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="speech\\[0\\]"):
        truth_from_json(dict(good, speech=[{"start": 0, "end": 1, "text": "x"}]))


def test_score_run_reads_a_stored_perception_folder(tmp_path) -> None:
    truth = two_people()
    truth.save(tmp_path / "truth.json")
    folder = tmp_path / "perception"
    folder.mkdir()
    settings = {"perception": {"faces": {"face_fps": 1.0}, "asr": {"backend": "whisper"}}}
    (folder / "settings.json").write_text(json.dumps(settings))
    records = [
        {
            "clip": 0,
            "start": 0.0,
            "end": 4.0,
            "faces": [
                {"time": float(t), "box": list(box), "identity": i}
                for t in range(4)
                for box, i in ((LEFT, "[face_1]"), (RIGHT, "[face_2]"))
            ],
            "transcript": [
                {"start": 0.0, "end": 2.0, "text": "hello there", "speaker": "[face_1]"}
            ],
        }
    ]
    (folder / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    scores = score_run(tmp_path / "truth.json", folder)
    assert (scores.wer, scores.idf1, scores.linking, scores.frames) == (0.0, 1.0, 1.0, 4)
    (folder / "clips.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no perceived clips"):
        score_run(tmp_path / "truth.json", folder)


def test_perceive_checks_the_truth_file_before_perceiving(tmp_path, capsys) -> None:
    from taskmem_lab.cli import main

    bad = tmp_path / "truth.json"
    bad.write_text('{"fps": 0}')
    code = main(["perceive", str(tmp_path / "absent.mp4"), "--truth", str(bad), "-q"])
    assert code == 2
    assert "fps must be > 0" in capsys.readouterr().err
