"""Generate the labelled perception set: varied scenes with ground truth of faces and speech.

Each scene is an H.264 video with AAC audio, `scene_NN.mp4`, and its truth, `scene_NN.json`
(the format of `taskmem_lab.perception.truth`, documented in docs/perception.md): every frame's
faces with their boxes, every sentence with its speaker, text and voiced extent, and the cuts.
Everything is drawn from one seed (`random.Random(f"{seed}:{scene}")` per scene, so scenes do
not depend on each other or on `--scenes`):

- people: the six faces of the group photo shipped in the insightface wheel (the tests' photo,
  `taskmem_lab.testing.media.group_photo`) and Grace Hopper's portrait shipped in matplotlib;
  each person has an espeak-ng voice of their own (variant, pitch, speed);
- shots of 1-14 s with hard cuts at any time (inside clips too, inside sentences too), each
  showing 1-4 of the scene's cast side by side on a drifting (hand-held) canvas; one cast member
  leaves for most of the scene and returns near its end;
- sentences of 0.5-6 s, said mostly by someone on screen, sometimes by someone off screen, with
  silences between and now and then overlapping the sentence before;
- under the speech: nothing, noise (15-26 dB below the speech) or music (a chord progression,
  10-20 dB below), at a per-scene level;
- 240p to 1080p, 25, 30 or 60 fps.

The set is written to a folder (not committed; not a unit-test fixture):

    python benchmarks/perception/generate.py OUT_DIR [--seed 0] [--scenes 20] [--small]

`--small` makes 3 short scenes (about 2 minutes in all) for a quick look. Scenes already in
OUT_DIR with the same settings are kept (a rerun resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taskmem_lab.perception.truth import Truth, TruthFrame, TruthSpeech
from taskmem_lab.testing.media import GROUP_PHOTO_FACES, group_photo

SR = 22050  # espeak-ng's rate
SIZES = [(426, 240), (640, 360), (854, 480), (1280, 720), (1920, 1080)]
FPS = [25, 30, 60]
GENERATOR_VERSION = 4

# espeak-ng voices: (voice+variant, pitch 0..99, words per minute); one per person. Chosen from
# 14 candidates so resemblyzer tells them apart: on two-sentence lines every voice is >= 0.92
# similar to itself, and the closest pairs of different voices reach 0.82 (m3 / klatt2) and
# 0.76-0.77 at worst (sentence pairs, max); the former pool had pairs at 0.84-0.88.
VOICE_POOL = [
    ("en+klatt2", 45, 155),
    ("en+steph", 50, 145),
    ("en-gb-x-rp+f4", 75, 160),
    ("en-us+f5", 85, 150),
    ("en+Andy", 55, 160),
    ("en-029+m5", 60, 165),
    ("en+m3", 35, 150),
]

_SUBJECTS = [
    "the engineer", "my neighbor", "the old captain", "our teacher", "a small child",
    "the pilot", "her brother", "the baker", "this committee", "the gardener",
]  # fmt: skip
_VERBS = [
    "painted", "carried", "forgot", "repaired", "ordered", "borrowed", "cleaned", "found",
    "described", "delivered", "measured", "folded",
]  # fmt: skip
_OBJECTS = [
    "the blue bicycle", "a heavy wooden box", "the kitchen window", "seven apples",
    "the broken radio", "a long letter", "the garden fence", "two paper maps",
    "the morning newspaper", "a silver kettle",
]  # fmt: skip
_PLACES = [
    "near the station", "before lunch", "in the rain", "behind the library", "last winter",
    "at the market", "after the meeting", "on the bridge",
]  # fmt: skip
_SHORT = [
    "Yes.", "No thanks.", "Okay then.", "Right.", "I see.", "Good morning.", "Come here.",
    "Look at this.", "Not today.", "Thank you.", "I fold.", "Well done.", "Wait a moment.",
]  # fmt: skip


def sentence(rng: random.Random) -> str:
    """A sentence of one to about twenty words (0.5-6 s when spoken)."""
    kind = rng.random()
    if kind < 0.2:
        return rng.choice(_SHORT)
    text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    if kind > 0.45:
        text += f" {rng.choice(_PLACES)}"
    if kind > 0.75:
        text += f", and then {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!"])


# --------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Person:
    """A face in a photo (box in photo pixels) and the voice that goes with it."""

    pid: str
    photo: Path
    face: tuple[int, int, int, int]
    voice: tuple[str, int, int]


def people() -> list[Person]:
    """The seven people of the set: photos from installed packages, one voice each."""
    import importlib.util

    t1 = group_photo()
    out = [
        Person(f"t1_{name}", t1, box, VOICE_POOL[i])
        for i, (name, box) in enumerate(sorted(GROUP_PHOTO_FACES.items()))
    ]
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        hopper = root / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if hopper.is_file():
            # Face box as dlib's HOG detector finds it on the full-size photo.
            out.append(Person("hopper", hopper, (180, 139, 366, 325), VOICE_POOL[6]))
    return out


def alone_in_photo(img, person: Person, others: list[Person]):  # noqa: ANN001, ANN201
    """The photo with every other face of it painted over (flat, in the region's mean colour),
    so a crop around `person` shows no one else, not even half a face at its edge."""
    from PIL import ImageDraw, ImageStat

    out = img.copy()
    draw = ImageDraw.Draw(out)
    for other in others:
        if other.photo != person.photo or other.pid == person.pid:
            continue
        x1, y1, x2, y2 = other.face
        pad_x, pad_y = 0.35 * (x2 - x1), 0.45 * (y2 - y1)
        region = (int(x1 - pad_x), int(y1 - pad_y), int(x2 + pad_x), int(y2 + pad_y))
        mean = tuple(int(v) for v in ImageStat.Stat(img.crop(region)).mean[:3])
        draw.rectangle(region, fill=mean)
    return out


def head_crop(img, face: tuple[int, int, int, int], aspect: float, face_frac: float):  # noqa: ANN001
    """A head-and-shoulders crop of `img` around `face` and the face box inside the crop."""
    x1, y1, x2, y2 = face
    h = (y2 - y1) / face_frac
    w = h * aspect
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.1 * h
    left, top = cx - w / 2, cy - h / 2
    crop = img.crop((int(left), int(top), int(left + w), int(top + h)))  # pads with black
    return crop, (x1 - int(left), y1 - int(top), x2 - int(left), y2 - int(top))


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class ShotPlan:
    start: float
    end: float
    people: tuple[str, ...]
    zoom: float = 0.4  # the face's share of its crop's height


@dataclass(frozen=True)
class ScenePlan:
    name: str
    duration: float
    size: tuple[int, int]
    fps: int
    shots: tuple[ShotPlan, ...]
    lines: tuple[tuple[float, str, str], ...]  # (start, speaker, text)
    background: str
    background_level: float


def plan_scene(rng: random.Random, name: str, duration: float, cast: list[str]) -> ScenePlan:
    """Shots and lines of one scene (who is on screen when, who says what when)."""
    size = rng.choice(SIZES)
    fps = rng.choice(FPS)
    returner = cast[-1] if len(cast) >= 3 else None  # leaves after the first shots, returns late
    away = (duration * 0.2, duration * 0.8)
    shots: list[ShotPlan] = []
    t = 0.0
    while t < duration - 0.5:
        length = min(rng.choice([rng.uniform(1.0, 4.0), rng.uniform(3.0, 14.0)]), duration - t)
        if duration - (t + length) < 1.0:
            length = duration - t
        present = [p for p in cast if not (returner == p and away[0] <= t < away[1])]
        k = rng.choice([1, 1, 2, 2, 3, 4])
        shots.append(
            ShotPlan(
                round(t, 3),
                round(t + length, 3),
                tuple(rng.sample(present, min(k, len(present)))),
                round(rng.uniform(0.3, 0.55), 3),  # a new framing at every cut
            )
        )
        t += length
    lines: list[tuple[float, str, str]] = []
    t = rng.uniform(0.3, 2.0)
    while t < duration - 3.0:
        shot = next(s for s in shots if s.start <= t < s.end)
        off_screen = [p for p in cast if p not in shot.people]
        if off_screen and rng.random() < 0.15:
            speaker = rng.choice(off_screen)
        else:
            speaker = rng.choice(shot.people)
        lines.append((round(t, 3), speaker, sentence(rng)))
        # The next sentence: after a pause, after a silence, or overlapping this one.
        r = rng.random()
        estimate = 0.35 + 0.07 * len(lines[-1][2])
        if r < 0.08:
            t += estimate * 0.6  # overlapping speech (someone else, see below)
        elif r < 0.2:
            t += estimate + rng.uniform(3.0, 8.0)  # silence
        else:
            t += estimate + rng.uniform(0.3, 1.5)
    background = rng.choice(["none", "noise", "music"])
    # Under the speech, not over it: the lines' RMS is about 0.1, so noise of RMS 0.005-0.018
    # is 15-26 dB below them, and the chords (RMS about 0.6 x level) 10-20 dB below. (Noise of
    # RMS up to 0.05, 6 dB below, took Whisper tiny.en to 74 % WER and hallucinated lines.)
    level = rng.uniform(0.005, 0.018) if background == "noise" else rng.uniform(0.015, 0.05)
    level = 0.0 if background == "none" else level
    return ScenePlan(name, duration, size, fps, tuple(shots), tuple(lines), background, level)


def espeak(text: str, name: str, pitch: int, speed: int) -> tuple[np.ndarray, int]:
    """espeak-ng speech of `text` as float32 samples and their rate."""
    import io

    cmd = ["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    data = subprocess.run(cmd, check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(data), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return (pcm / 32768.0).astype(np.float32), w.getframerate()


def _background(kind: str, level: float, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return (level * rng.standard_normal(n)).astype(np.float32)
    if kind == "music":
        t = np.arange(n) / SR
        out = np.zeros(n, np.float32)
        chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6)]
        bar = int(2.0 * SR)
        for k in range(0, n, bar):
            for f in chords[(k // bar) % len(chords)]:
                seg = slice(k, min(n, k + bar))
                out[seg] += np.sin(2 * np.pi * f * t[seg]).astype(np.float32) * level / 2
        return out
    return np.zeros(n, np.float32)


def render_audio(
    plan: ScenePlan, cast: dict[str, Person], seed: int
) -> tuple[np.ndarray, list[TruthSpeech]]:
    """The scene's audio track (SR Hz) and each line's voiced extent."""
    n = int(plan.duration * SR)
    track = np.zeros(n, np.float32)
    speech = []
    last_end, last_speaker = 0.0, ""
    for start, speaker, text in plan.lines:
        if start < last_end and speaker == last_speaker:
            continue  # one voice cannot overlap itself; a rare collision of the plan
        samples, sr = espeak(text, *cast[speaker].voice)
        if sr != SR:
            raise RuntimeError(f"espeak-ng produced {sr} Hz, expected {SR}")
        voiced = np.flatnonzero(np.abs(samples) > 0.01)
        samples = samples[voiced[0] : voiced[-1] + 1]
        a = int(round(start * SR))
        if a + len(samples) > n:
            break
        track[a : a + len(samples)] += 0.8 * samples
        end = start + len(samples) / SR
        speech.append(TruthSpeech(round(start, 3), round(end, 3), speaker, text))
        last_end, last_speaker = max(last_end, end), speaker
    track += _background(plan.background, plan.background_level, n, np.random.default_rng(seed))
    return np.clip(track, -1, 1), speech


def _shot_canvas(
    shot: ShotPlan, cast: dict[str, Person], size: tuple[int, int], margin: int, images: dict
):  # noqa: ANN001
    """The shot's canvas (margin around the frame, for the drift) and each face's box on it."""
    from PIL import Image

    w, h = size
    canvas = Image.new("RGB", (w + 2 * margin, h + 2 * margin), (40, 40, 44))
    cell = w / len(shot.people)
    boxes = {}
    for k, pid in enumerate(shot.people):
        person = cast[pid]
        crop, (fx1, fy1, fx2, fy2) = head_crop(images[pid], person.face, cell / h, shot.zoom)
        scale = min(cell / crop.width, h / crop.height)
        tw, th = max(1, int(crop.width * scale)), max(1, int(crop.height * scale))
        ox, oy = int(k * cell + (cell - tw) / 2), (h - th) // 2
        canvas.paste(crop.resize((tw, th), Image.Resampling.BILINEAR), (ox + margin, oy + margin))
        boxes[pid] = (ox + fx1 * scale, oy + fy1 * scale, ox + fx2 * scale, oy + fy2 * scale)
    return np.asarray(canvas), boxes


def render_scene(plan: ScenePlan, cast: dict[str, Person], out: Path, seed: int) -> Truth:
    """Write `out/<name>.mp4` and return its truth."""
    import av
    from PIL import Image

    w, h = plan.size
    margin = max(2, round(h / 120))  # a few pixels of hand-held drift
    photos = {p.photo: Image.open(p.photo).convert("RGB") for p in cast.values()}
    everyone = people()
    images = {pid: alone_in_photo(photos[p.photo], p, everyone) for pid, p in cast.items()}
    audio, speech = render_audio(plan, cast, seed)
    video = out / f".{plan.name}.video.mp4"
    frames: list[TruthFrame] = []
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=plan.fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        n_frames = int(round(plan.duration * plan.fps))
        shot_i, canvas, boxes = -1, None, {}
        for n in range(n_frames):
            t = n / plan.fps
            while shot_i + 1 < len(plan.shots) and plan.shots[shot_i + 1].start <= t + 1e-9:
                shot_i += 1
                canvas, boxes = _shot_canvas(plan.shots[shot_i], cast, (w, h), margin, images)
            dx = int(round(margin * math.sin(2 * math.pi * t / 5.0)))
            dy = int(round(margin * math.cos(2 * math.pi * t / 7.0)))
            x0, y0 = margin + dx, margin + dy
            frame = np.ascontiguousarray(canvas[y0 : y0 + h, x0 : x0 + w])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            faces = {}
            for pid, (x1, y1, x2, y2) in boxes.items():
                bx = (
                    max(0.0, (x1 - dx) / w),
                    max(0.0, (y1 - dy) / h),
                    min(1.0, (x2 - dx) / w),
                    min(1.0, (y2 - dy) / h),
                )
                if bx[2] - bx[0] > 0.01 and bx[3] - bx[1] > 0.01:
                    faces[pid] = bx
            frames.append(TruthFrame(round(t, 4), faces))
        for packet in stream.encode():
            container.mux(packet)
    wav = out / f".{plan.name}.wav"
    with wave.open(str(wav), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(SR)
        wf.writeframes((audio * 32767).astype("<i2").tobytes())
    target = out / f"{plan.name}.mp4"
    try:
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-i", str(wav), "-map", "0:v:0",
             "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-ar", "16000", "-shortest", str(target)],
            check=True,
        )  # fmt: skip
    finally:
        video.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)
    cuts = tuple(s.start for s in plan.shots[1:])
    meta = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "size": list(plan.size),
        "background": plan.background,
        "background_level": round(plan.background_level, 4),
        "people": {
            pid: {
                "photo": cast[pid].photo.name,
                "face": list(cast[pid].face),
                "voice": list(cast[pid].voice),
            }
            for pid in sorted(
                {p for s in plan.shots for p in s.people} | {s.speaker for s in speech}
            )
        },
        "shots": [
            {"start": s.start, "end": s.end, "people": list(s.people), "zoom": s.zoom}
            for s in plan.shots
        ],
    }
    return Truth(
        target.name, plan.duration, float(plan.fps), tuple(frames), tuple(speech), cuts, meta
    )


def scene_settings(seed: int, index: int, small: bool) -> dict:
    return {"generator": GENERATOR_VERSION, "seed": seed, "index": index, "small": small}


def generate(out: Path, seed: int = 0, scenes: int = 20, small: bool = False) -> list[Path]:
    """Generate (or keep) `scenes` scenes in `out`; returns their truth files."""
    out.mkdir(parents=True, exist_ok=True)
    everyone = people()
    written = []
    for i in range(scenes):
        name = f"scene_{i:02d}"
        truth_path = out / f"{name}.json"
        settings = scene_settings(seed, i, small)
        if truth_path.is_file() and (out / f"{name}.mp4").is_file():
            meta = json.loads(truth_path.read_text()).get("meta", {})
            if meta.get("settings") == settings:
                written.append(truth_path)
                continue
        rng = random.Random(f"{seed}:{i}")
        duration = round(rng.uniform(30, 45) if small else rng.uniform(60, 120), 1)
        cast = rng.sample(everyone, rng.randint(2, 5))
        plan = plan_scene(rng, name, duration, [p.pid for p in cast])
        truth = render_scene(plan, {p.pid: p for p in cast}, out, seed * 1000 + i)
        truth.meta["settings"] = settings
        truth.save(truth_path)
        written.append(truth_path)
        print(f"{name}: {duration:.0f} s, {plan.size[0]}x{plan.size[1]} @ {plan.fps} fps, "
              f"{len(plan.shots)} shots, {len(truth.speech)} lines, {plan.background}", flush=True)  # fmt: skip
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="folder of the set (created)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=None, help="number of scenes (20; --small: 3)")
    ap.add_argument("--small", action="store_true", help="3 short scenes (about 2 minutes)")
    args = ap.parse_args()
    n = args.scenes if args.scenes is not None else (3 if args.small else 20)
    paths = generate(args.out, args.seed, n, args.small)
    total = sum(json.loads(p.read_text())["duration"] for p in paths)
    print(f"{len(paths)} scenes, {total / 60:.1f} min in {args.out}")


if __name__ == "__main__":
    main()
