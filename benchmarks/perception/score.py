"""Score perception on the labelled set: one table per setting, printed and written to the docs.

Runs the perception stage (`taskmem_lab.pipeline.perceive_stream`, no VLM: speakers by voice and
face evidence only) on every scene of a set made by `generate.py`, with each named setting, and
scores it with `taskmem_lab.perception.scoring` (jiwer, pyannote.metrics, motmetrics). Also
transcribes each scene's whole audio in one Whisper pass with the same model and beam, the
reference that clip-wise WER is compared with. Per scene and in total:

- WER of the clip records' transcript, and of the one-pass transcript (`whole WER`);
- DER and JER (collar 0.25 s), with and without overlapping speech;
- IDF1, ID switches, MOTA on the frames sampled for faces, switches on the first sampled frame
  after a cut, ids worn by several people, the share of matched faces wearing another's id;
- speaker-to-face linking (share of on-screen speech labelled with the speaker's face id);
- real-time factor (video seconds per wall second) of the run that computed the records.

    python benchmarks/perception/score.py SET_DIR [--settings default file-speech live-speech] [--scenes 3] [--pick scene_03]
        [--out /tmp/taskmem-perception-runs] [--write docs/performance.md] [--asr-only]

Settings (`SETTINGS`): default (CLI defaults: file-mode ASR), fps2 (faces at 2 fps), and the
ASR modes on speech alone: file-speech, live-speech, clip-speech. `--write` replaces the set's section (between its `perception-set NAME` markers) of the page.
Figures from a loaded machine are only indicative for speed; the quality figures do not depend
on load.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from taskmem_lab.params import MemorizeParams
from taskmem_lab.perception.params import PerceptionChoices, PerceptionParams
from taskmem_lab.perception.scoring import Scorer, Scores, hypothesis_of, sampled_times
from taskmem_lab.perception.truth import Truth, load_truth

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "fps2": {"face_fps": 2.0},
    # The ASR modes compared on speech alone (faces do not change what is heard).
    "file-speech": {"asr_mode": "file", "faces": False},
    "live-speech": {"asr_mode": "live", "faces": False},
    "clip-speech": {"asr_mode": "clip", "faces": False},
}
MARK = "<!-- perception-set {name}: {end} -->"


def perception_for(name: str, beam: int | None = None, faces: bool = True) -> PerceptionParams:
    from taskmem_lab.perception.perceiver import perception_params

    choices = {k: v for k, v in SETTINGS[name].items() if k != "faces"}
    faces = faces and SETTINGS[name].get("faces", True)
    params = perception_params(faces, True, PerceptionChoices(**choices))
    assert params is not None and params.asr is not None
    if beam is not None:
        params = replace(params, asr=replace(params.asr, beam_size=beam))
    return params


def whole_file_text(video: Path, params: PerceptionParams, cache: Path) -> str:
    """One Whisper pass over the scene's whole audio (cached per model, beam and video content)."""
    from taskmem_lab.media.audio import window_audio
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.perception.asr import WhisperAsr

    assert params.asr is not None
    from taskmem_lab.paths import file_sha256

    digest = file_sha256(video)[:12]
    key = (
        f"{video.stem}.{digest}.whole.beam{params.asr.beam_size}.{Path(params.asr.model).name}.json"
    )
    path = cache / key
    if path.is_file():
        return json.loads(path.read_text())["text"]
    stream = load_stream(video)
    segs = WhisperAsr(params.asr).transcribe(window_audio(stream, stream.start, stream.end), 0.0)
    text = " ".join(s.text for s in segs)
    path.write_text(json.dumps({"text": text}))
    return text


def run_scene(
    truth: Truth, video: Path, params: PerceptionParams, out: Path
) -> tuple[list[dict[str, Any]], float | None]:
    """Perceive one scene; returns its clip records and its real-time factor (that of the run
    which computed them, kept in `out/walls.json`; None when unknown)."""
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.perception.perceiver import StreamPerceiver
    from taskmem_lab.pipeline import perceive_stream
    from taskmem_lab.store import atomic_write_json, read_jsonl

    mp = MemorizeParams()
    probe = StreamPerceiver(load_stream(video), params, mp, out)
    fresh = not (probe.path / "clips.jsonl").is_file()
    probe.close()
    t0 = time.perf_counter()
    perceiver, _ = perceive_stream(video, params, mp, out, progress=False)
    wall = time.perf_counter() - t0
    records = list(read_jsonl(perceiver.path / "clips.jsonl"))
    walls_file = out / "walls.json"
    walls = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
    if fresh:
        walls[perceiver.key] = wall
        atomic_write_json(walls_file, walls)
    known = walls.get(perceiver.key)
    return records, (truth.duration / known if known else None)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def row(name: str, s: Scores, whole: float | None, rtf: str, info: str) -> str:
    cells = [
        name,
        info,
        _pct(s.wer),
        _pct(whole),
        _pct(s.der),
        _pct(s.der_no_overlap),
        _pct(s.jer),
        _pct(s.idf1),
        str(s.id_switches),
        str(s.switches_at_cuts),
        str(s.shared_ids),
        _pct(s.wrong_id_share),
        _pct(s.mota),
        _pct(s.linking),
        rtf,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| scene | video | WER | whole WER | DER | DER no ovl | JER | IDF1 | ID sw | sw at cuts "
    "| shared ids | wrong id | MOTA | linking | x real time |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def score_setting(
    name: str,
    truths: list[Path],
    out: Path,
    beam: int | None,
    faces: bool = True,
    whole: bool = True,
) -> tuple[str, Scores, float | None]:
    """Perceive and score every scene with one setting; returns its table."""
    from taskmem_lab.perception.scoring import word_errors

    params = perception_for(name, beam, faces)
    scorer = Scorer()
    whole_errors = [0, 0]
    lines = [HEADER]
    walls: list[tuple[float, float]] = []
    cache = out / "whole"
    cache.mkdir(parents=True, exist_ok=True)
    for path in truths:
        truth = load_truth(path)
        video = path.with_suffix(".mp4")
        records, rtf = run_scene(truth, video, params, out / name)
        segments, seen = hypothesis_of(records)
        times = sampled_times(records, params.faces.face_fps) if params.faces else []
        s = scorer.add(truth, segments, seen if params.faces else None, times)
        reference = " ".join(x.text for x in truth.speech)
        text = whole_file_text(video, params, cache) if whole else None
        errors, words = word_errors([reference], [text]) if text is not None else (0, 0)
        whole_errors[0] += errors
        whole_errors[1] += words
        if rtf is not None:
            walls.append((truth.duration, truth.duration / rtf))
        size = truth.meta.get("size", ["?", "?"])
        info = f"{truth.duration:.0f} s {size[1]}p{truth.fps:g} {truth.meta.get('background', '')}"
        lines.append(row(path.stem, s, errors / words if words else None, _rtf(rtf), info))
        print(lines[-1], flush=True)
    total = scorer.total()
    whole = whole_errors[0] / whole_errors[1] if whole_errors[1] else None
    rtf_all = sum(d for d, _ in walls) / sum(w for _, w in walls) if walls else None
    duration = sum(load_truth(p).duration for p in truths)
    lines.append(row("**all**", total, whole, _rtf(rtf_all), f"{duration / 60:.1f} min"))
    return "\n".join(lines), total, whole


def _rtf(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def write_section(page: Path, text: str, name: str) -> None:
    """Replace the section of set `name` in `page` (appended when it has none)."""
    content = page.read_text(encoding="utf-8")
    begin, end = MARK.format(name=name, end="begin"), MARK.format(name=name, end="end")
    block = f"{begin}\n{text}\n{end}"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip("\n") + "\n\n" + block + "\n"
    page.write_text(content, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("set", type=Path, help="folder made by generate.py")
    ap.add_argument("--settings", nargs="+", default=["default"], choices=sorted(SETTINGS))
    ap.add_argument("--scenes", type=int, default=None, help="only the first N scenes")
    ap.add_argument("--pick", nargs="+", default=None, help="only these scenes (scene_03 ...)")
    ap.add_argument("--beam", type=int, default=None, help="whisper beam (default: the CLI's)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/taskmem-perception-runs"))
    ap.add_argument("--write", type=Path, default=None, help="page to write the tables to")
    ap.add_argument("--section", default=None, help="name of the page's section (the set's)")
    ap.add_argument(
        "--asr-only", action="store_true", help="no faces: speech figures only (much faster)"
    )
    ap.add_argument(
        "--no-whole", action="store_true", help="skip the one-pass whole-file reference WER"
    )
    args = ap.parse_args()
    truths = sorted(args.set.glob("scene_*.json"))[: args.scenes]
    if args.pick:
        truths = [t for t in truths if t.stem in args.pick]
    if not truths:
        raise SystemExit(f"no scene_*.json in {args.set}: run generate.py first")
    sections = []
    for name in args.settings:
        print(f"\n### setting {name}: {SETTINGS[name] or 'CLI defaults'}", flush=True)
        table, total, whole = score_setting(
            name, truths, args.out, args.beam, faces=not args.asr_only, whole=not args.no_whole
        )
        beam = args.beam or perception_for(name).asr.beam_size  # type: ignore[union-attr]
        title = (
            f"### `{name}`: {json.dumps(SETTINGS[name]) if SETTINGS[name] else 'CLI defaults'}, "
            f"beam {beam}, {len(truths)} scenes of `{args.set.name}`"
            + (
                ", speech only (no faces)"
                if args.asr_only or not SETTINGS[name].get("faces", True)
                else ""
            )
        )
        sections.append(f"{title}\n\n{table}")
        print(table.splitlines()[-1])
    if args.write:
        write_section(args.write, "\n\n".join(sections), args.section or args.set.name)
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()
