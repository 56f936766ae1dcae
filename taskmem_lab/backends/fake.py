"""`fake`: a deterministic responder for tests and the offline smoke profile, keyed by purpose.

It never judges anything and never looks at pixels. Every answer is chosen by the request's
`purpose` (the kind of prompt that built it: `episodic`, `semantic`, `asr`, `speakers`,
`qa_choice`, `qa_open`, `judge`, `reward_video`, `reward_text`, `reward_richness`, `pairs`),
never by matching the prompt's wording, so a reworded prompt file gets the same answers. A
re-ask keeps its purpose and is answered from the turns before the first assistant reply (the
original question), so it gets the same, readable answer. Every answer carries a mark
(`[fake model]` in process, `[fake server]` from the local test server, which wraps these rules),
and `FakeModel` replies have `Reply.fake = True`, so nothing it writes can pass for model output.

The rules read the data a prompt carries from the slots the templates put it in (`NEW SPAN:`,
`<entry>`, `<candidate n=...>`, the QA and judge headings, numbered transcript lines); where a
slot is missing the answer still has the right shape (a choice question gets E, an open one
"Insufficient information"). Text-derived digests cover only that data, never the template.

- episodic: `{"description": "<mark> entry for <span>: <n> visual parts, media <digest>."}`;
  sampled at temperature > 0 with a seed (rollouts): a description whose wording and length
  depend on the seed, so candidates differ.
- semantic: one knowledge statement about the span.
- asr: one segment per loud span of the first audio part (a crude energy detector).
- speakers: transcript line n is said by the n-th visible face, round robin.
- qa_choice: the option whose text the memory mentions last (E when none), in one of several
  real reply styles; qa_open: the memory line sharing most words with the question.
- judge: yes (score 5) when every content word of the reference is in the candidate.
  `fake:flipN` (N >= 1) judges the same way but turns the verdict over on the questions whose
  digest of question, reference and candidate is divisible by N (`judge_flipped`): all of them
  for `fake:flip1`, about half for `fake:flip2`. A second judge whose disagreement with `fake`
  is known by construction (`taskmem judge-agreement`).
- attribute: the memory holds the answer ("yes") when at least half of the content words of the
  correct answer are in the memory notes.
- `fake:reader` (the smoke profile's answerer) answers qa_choice and qa_open by reading the
  memory instead (see `READER_RULES`), so the smoke figures have data.
- reward_video: supported unless the entry holds UNSUPPORTED or no frame was sent; coherent
  unless it holds INCOHERENT. reward_text: flags from regular expressions over the entry.
  reward_richness: candidates ranked by distinct words. pairs: more distinct words wins
  (a test server can script verdicts instead).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from taskmem_lab.backends.base import AudioPart, ImagePart, Reply, Request, TextPart, VideoPart

T = TypeVar("T")
FAKE_MARK = "[fake model]"
PURPOSES = (
    "episodic",
    "semantic",
    "asr",
    "speakers",
    "qa_choice",
    "qa_open",
    "judge",
    "attribute",
    "reward_video",
    "reward_text",
    "reward_richness",
    "pairs",
)


@dataclass(frozen=True)
class FakeAsk:
    """What the fake rules see of a request, whichever way it arrived (in process or HTTP).

    `user` is the text of the user turns before the first assistant reply (re-asks dropped);
    `media` a digest of the visual parts; `audio` the WAV bytes of the audio parts.
    """

    purpose: str
    user: str
    images: int = 0
    media: str = ""
    audio: tuple[bytes, ...] = field(default=(), repr=False)
    seed: int | None = None
    temperature: float = 0.0

    @classmethod
    def of(cls, request: Request) -> FakeAsk:
        """The view of an in-process request."""
        asked = before_first_reply([(m.role, m) for m in request.messages])
        texts, images, audio = [], 0, []
        media = hashlib.sha256()
        for role, m in asked:
            for p in m.parts:
                if isinstance(p, TextPart) and role == "user":
                    texts.append(p.text)
                elif isinstance(p, VideoPart):
                    images += len(p.frames)
                    for f in p.frames:
                        media.update(f"{f.time:.3f}".encode())
                        # a sparse grid of pixels tells windows apart at a fraction of the cost
                        media.update(np.ascontiguousarray(f.image[::16, ::16]).tobytes())
                elif isinstance(p, ImagePart):
                    images += 1
                    media.update(p.jpeg)
                elif isinstance(p, AudioPart):
                    audio.append(p.wav)
        s = request.sampling
        return cls(
            purpose=request.purpose,
            user="\n".join(texts),
            images=images,
            media=media.hexdigest()[:8] if images else "none",
            audio=tuple(audio),
            seed=s.seed,
            temperature=s.temperature,
        )


def before_first_reply(messages: Sequence[tuple[str, T]]) -> list[tuple[str, T]]:
    """The turns that asked the question: everything before the first assistant reply (a
    re-ask appends the reply and a follow-up; the fake answers the original question)."""
    out = []
    for role, m in messages:
        if role == "assistant":
            break
        out.append((role, m))
    return out


def answer(
    ask: FakeAsk, mark: str = FAKE_MARK, next_verdict: Callable[[], str | None] | None = None
) -> str:
    """The fake reply text for a request, chosen by its purpose (see the module docstring).

    `next_verdict` gives scripted pairwise verdicts ("A", "B", "tie"; None: use the rule).
    """
    if ask.purpose == "pairs":
        return _pairs(ask, mark, next_verdict)
    return _RULES.get(ask.purpose, _episodic)(ask, mark)


# --------------------------------------------------------------------------- memory writing

_SPAN = re.compile(r"NEW SPAN: (\S+)-(\S+)")
_DETAILS = (
    "a red cup is moved to the left",
    "the clock shows ten past three",
    "a door opens behind the table",
    "someone says the word blue",
    "two books are stacked on the shelf",
)


def _where(text: str) -> str:
    m = _SPAN.search(text)
    return f"{m.group(1)}-{m.group(2)}" if m else "?"


def _episodic(ask: FakeAsk, mark: str) -> str:
    where = _where(ask.user)
    if ask.seed is not None and ask.temperature > 0:
        seed = int(ask.seed)
        details = [_DETAILS[(seed + i) % len(_DETAILS)] for i in range(seed % 3 + 1)]
        text = f"{mark} sample {seed} of {where}: " + "; ".join(details) + "."
    else:
        text = f"{mark} entry for {where}: {ask.images} visual parts, media {ask.media}."
    return json.dumps({"description": text})


def _semantic(ask: FakeAsk, mark: str) -> str:
    return json.dumps({"knowledge": [f"{mark} statement about {_where(ask.user)} ({ask.media})"]})


# --------------------------------------------------------------------------- perception


def voiced_spans(
    wav: bytes, hop_s: float = 0.05, threshold: float = 0.02, bridge_s: float = 0.6
) -> tuple[list[tuple[float, float]], float]:
    """Spans (seconds) where a 16-bit mono WAV is louder than `threshold` RMS, short pauses
    bridged; and the WAV's duration. A crude energy detector: what the fake ASR "hears"."""
    with wave.open(io.BytesIO(wav), "rb") as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
    hop = max(1, int(sr * hop_s))
    n = len(pcm) // hop
    rms = np.sqrt((pcm[: n * hop].reshape(n, hop) ** 2).mean(axis=1)) if n else np.zeros(0)
    spans: list[tuple[float, float]] = []
    for i in np.flatnonzero(rms > threshold):
        a, b = i * hop / sr, (i + 1) * hop / sr
        if spans and a - spans[-1][1] <= bridge_s:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return [s for s in spans if s[1] - s[0] >= 0.2], len(pcm) / sr


def _asr(ask: FakeAsk, mark: str) -> str:
    if not ask.audio:
        return json.dumps({"segments": []})
    spans, _ = voiced_spans(ask.audio[0])
    digest = hashlib.sha256(ask.audio[0]).hexdigest()[:8]
    segments = [
        {
            "start": round(a, 1),
            "end": round(b, 1),
            "speaker": "S1",
            "text": f"{mark} speech {i + 1} of audio {digest}.",
        }
        for i, (a, b) in enumerate(spans)
    ]
    return json.dumps({"segments": segments})


_NUMBERED = re.compile(r"^\s*(\d+)\. ", re.MULTILINE)
_LOCAL_FACE = re.compile(r"<face_\d+>")


def _speakers(ask: FakeAsk, mark: str) -> str:
    """Transcript line n is said by the n-th visible face (the ids outside the numbered lines),
    round robin; "unknown" with no faces."""
    lines = ask.user.splitlines()
    numbered = [ln for ln in lines if _NUMBERED.match(ln)]
    others = "\n".join(ln for ln in lines if not _NUMBERED.match(ln))
    faces = list(dict.fromkeys(_LOCAL_FACE.findall(others)))
    speakers = {
        n: faces[(int(n) - 1) % len(faces)] if faces else "unknown"
        for n in (_NUMBERED.match(ln).group(1) for ln in numbered)  # type: ignore[union-attr]
    }
    return json.dumps({"speakers": speakers, "note": f"{mark} round robin over visible faces"})


# --------------------------------------------------------------------------- QA and judge

# The fake "reads" the memory: a choice question gets the option whose text the memory mentions
# last (E when it mentions none), in one of several real reply styles picked by a digest of the
# data; a free-form question gets the memory line sharing most words with it ("Insufficient
# information" when none does); a judge says yes (score 5) when every content word of the
# reference is in the candidate.
_QA = re.compile(
    r"MEMORY \([^\n]*\):\n(?P<memory>.*?)\n\nQUESTION \(asked at [^\n]*\):\n(?P<question>.*?)\n"
    r"(?:OPTIONS:\n(?P<options>.*?)\n)?\nReply with",
    re.DOTALL,
)
_OPTION = re.compile(r"^([A-D])\. (.+)$", re.MULTILINE)
_JUDGE = re.compile(
    r"QUESTION:\n(?P<question>.*?)\n\nREFERENCE ANSWER:\n(?P<reference>.*?)\n\n"
    r"CANDIDATE ANSWER:\n(?P<candidate>.*?)(?:\n|$)",
    re.DOTALL,
)
_STOP = {"the", "and", "for", "with", "that", "this", "from", "what", "does", "did", "who"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in _STOP}


def _digest(*parts: str) -> int:
    return int(hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:8], 16)


def _qa_slots(ask: FakeAsk) -> tuple[str, str, str]:
    m = _QA.search(ask.user)
    if m is None:
        return "", "", ""
    return m.group("memory"), m.group("question"), m.group("options") or ""


def _qa_choice(ask: FakeAsk, mark: str) -> str:
    memory, question, options = _qa_slots(ask)
    lowered = memory.lower()
    best, where = "E", -1
    for letter, text in _OPTION.findall(options):
        pos = lowered.rfind(text.strip().rstrip(".").lower())
        if pos > where:
            best, where = letter, pos
    styles = (
        json.dumps({"answer": best, "note": mark}),
        f"{mark} Option A and the others were weighed; the answer is {best}.",
        f"{mark}\n**Answer:** {best}",
        f"{mark} ({best})",
    )
    return styles[_digest(memory, question, options) % len(styles)]


def _qa_open(ask: FakeAsk, mark: str) -> str:
    memory, question, _ = _qa_slots(ask)
    asked = _words(question)
    lines = [ln.strip() for ln in memory.splitlines() if ln.strip() and not ln.startswith("[")]
    scored = [(len(_words(ln) & asked), -i, ln) for i, ln in enumerate(lines)]
    best = max(scored, default=(0, 0, ""))
    text = f"{mark} {best[2]}" if best[0] > 0 else f"Insufficient information {mark}"
    if _digest(memory, question) % 2:
        return json.dumps({"answer": text})
    return f"Answer: {text}"


# `fake:reader`, the smoke profile's answerer, always reads the memory (the rules above abstain
# on memories that quote no option, which leaves every smoke figure empty): a choice question
# gets the option sharing most words with the memory; when none shares a word, a guess fixed by
# the digest of memory and question, except that one such question in three is abstained on; an
# open question gets the memory line sharing most words with it, with the same fallback. Its
# scores measure this rule, never a model.


def _memory_words(memory: str) -> set[str]:
    return _words(memory.replace(FAKE_MARK, " ")) - {"fake", "model"}


def _reader_choice(ask: FakeAsk, mark: str) -> str:
    memory, question, options = _qa_slots(ask)
    seen = _memory_words(memory)
    listed = _OPTION.findall(options)
    scored = [(len(_words(text) & seen), letter) for letter, text in listed]
    top = max((score for score, _ in scored), default=0)
    if top > 0:
        letter = min(letter for score, letter in scored if score == top)
    elif not seen or not listed or _digest(memory, question) % 3 == 0:
        letter = "E"
    else:
        letter = listed[_digest(memory, question) % len(listed)][0]
    return json.dumps({"answer": letter, "note": mark})


def _reader_open(ask: FakeAsk, mark: str) -> str:
    memory, question, _ = _qa_slots(ask)
    asked = _words(question)
    # entry lines (a fake entry starts with its mark), not the `[HH:MM:SS-HH:MM:SS]` headings
    lines = [
        ln.replace(FAKE_MARK, "").strip()
        for ln in memory.splitlines()
        if ln.strip() and not re.match(r"\[\d", ln.strip())
    ]
    scored = [(len(_memory_words(ln) & asked), -i, ln) for i, ln in enumerate(lines)]
    best = max(scored, default=(0, 0, ""))
    if best[0] > 0:
        text = f"{mark} {best[2]}"
    elif lines and _digest(memory, question) % 3 != 0:
        text = f"{mark} {lines[_digest(memory, question) % len(lines)]}"
    else:
        text = f"Insufficient information {mark}"
    return json.dumps({"answer": text})


READER_RULES: dict[str, Callable[[FakeAsk, str], str]] = {
    "qa_choice": _reader_choice,
    "qa_open": _reader_open,
}


def _judge_slots(ask: FakeAsk) -> tuple[str, str, str]:
    m = _JUDGE.search(ask.user)
    return (m.group("question"), m.group("reference"), m.group("candidate")) if m else ("", "", "")


def _judge(ask: FakeAsk, mark: str, flip_every: int = 0) -> str:
    question, reference, candidate = _judge_slots(ask)
    ref, cand = _words(reference), _words(candidate)
    share = len(ref & cand) / len(ref) if ref else 0.0
    correct, score = ("yes", 5) if share >= 0.99 else ("no", 3) if share >= 0.5 else ("no", 1)
    reason = f"{mark} {share:.0%} of the words"
    if flip_every and judge_flipped(question, reference, candidate, flip_every):
        correct, score = ("no", 1) if correct == "yes" else ("yes", 5)
        reason += " (turned over by the flip rule)"
    verdict = {"correct": correct, "score": score, "reason": reason}
    if _digest(question, reference, candidate) % 2:
        return json.dumps(verdict)
    return repr(verdict)  # the Python-dict style some judges answer in


_FLIP = re.compile(r"flip(\d+)")


def judge_flipped(question: str, reference: str, candidate: str, every: int) -> bool:
    """Whether `fake:flip<every>` turns the `fake` judge's verdict over on this answer."""
    return _digest("flip", question, reference, candidate) % every == 0


_ATTRIBUTE = re.compile(
    r"CORRECT ANSWER:\n(?P<answer>.*?)\n\nMEMORY NOTES \([^\n]*\):\n(?P<memory>.*?)\n\nDo these",
    re.DOTALL,
)


def _attribute(ask: FakeAsk, mark: str) -> str:
    m = _ATTRIBUTE.search(ask.user)
    answer, memory = (m.group("answer"), m.group("memory")) if m else ("", "")
    wanted = _words(re.sub(r"^[A-E]\. ", "", answer.strip()))
    share = len(wanted & _memory_words(memory)) / len(wanted) if wanted else 0.0
    found = "yes" if share >= 0.5 else "no"
    return json.dumps({"in_memory": found, "reason": f"{mark} {share:.0%} of the answer's words"})


# --------------------------------------------------------------------------- rewards and pairs

_WORD = re.compile(r"[a-z0-9_<>]+")
_SENTENCE = re.compile(r"[^.!?]+")
_FLAGS = {
    "mentions_boxes_or_coordinates": re.compile(
        r"\b(bounding box(es)?|box(es)?|coordinates?|pixels?)\b|\(\s*\d+\s*,\s*\d+\s*\)", re.I
    ),
    "cites_subtitles": re.compile(r"\b(subtitles?|captions?)\b", re.I),
    "speaker_label_in_quotes": re.compile(r"\"[^\"]*<face_\d+>\s*:"),
    "conclusion_statement": re.compile(r"\b(overall|in summary|in conclusion|this shows)\b", re.I),
}


def _between(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.S)
    return m.group(1).strip() if m else ""


def richness_of(text: str) -> int:
    """Distinct words: the fake judges' measure of information."""
    return len(set(_WORD.findall(text.lower())))


def _reward_video(ask: FakeAsk, mark: str) -> str:
    entry = _between(ask.user, "entry")
    verdict = {
        "supported": "UNSUPPORTED" not in entry and ask.images > 0,
        "coherent": "INCOHERENT" not in entry,
        "reason": f"{mark} rule-based verdict over {ask.images} frames",
    }
    return json.dumps(verdict)


def _reward_text(ask: FakeAsk, mark: str) -> str:
    entry, context = _between(ask.user, "entry"), _between(ask.user, "context")
    ctx = " ".join(context.lower().split())
    repeats = any(
        len(s.split()) >= 4 and " ".join(s.lower().split()) in ctx for s in _SENTENCE.findall(entry)
    )
    flags = {"repeats_context": repeats, **{k: bool(p.search(entry)) for k, p in _FLAGS.items()}}
    return json.dumps({**flags, "reason": f"{mark} rule-based flags"})


def _reward_richness(ask: FakeAsk, mark: str) -> str:
    found = re.findall(r'<candidate n="(\d+)">\n?(.*?)\n?</candidate>', ask.user, re.S)
    by_score: dict[int, list[int]] = {}
    for n, text in found:
        by_score.setdefault(richness_of(text), []).append(int(n))
    ranking = [sorted(by_score[s]) for s in sorted(by_score, reverse=True)]
    return json.dumps({"ranking": ranking, "reason": f"{mark} by distinct words"})


def _pairs(ask: FakeAsk, mark: str, next_verdict: Callable[[], str | None] | None) -> str:
    scripted = next_verdict() if next_verdict is not None else None
    if scripted is None:
        a = richness_of(_between(ask.user, "entry_a"))
        b = richness_of(_between(ask.user, "entry_b"))
        scripted = "A" if a > b else "B" if b > a else "tie"
    return json.dumps({"better": scripted, "reason": f"{mark} by distinct words"})


_RULES: dict[str, Callable[[FakeAsk, str], str]] = {
    "episodic": _episodic,
    "semantic": _semantic,
    "asr": _asr,
    "speakers": _speakers,
    "qa_choice": _qa_choice,
    "qa_open": _qa_open,
    "judge": _judge,
    "attribute": _attribute,
    "reward_video": _reward_video,
    "reward_text": _reward_text,
    "reward_richness": _reward_richness,
}


# --------------------------------------------------------------------------- the model


class FakeModel:
    """The in-process fake model (`--model fake`): `answer` applied to each request."""

    backend = "fake"
    video_mode = "frames"

    def __init__(self, name: str = "fake") -> None:
        self.model_id = f"fake:{name}"
        self.calls = 0

    def generate(self, request: Request) -> Reply:
        self.calls += 1
        ask = FakeAsk.of(request)
        rule = READER_RULES.get(ask.purpose) if self.model_id == "fake:reader" else None
        flip = _FLIP.fullmatch(self.model_id.partition(":")[2])
        if flip and ask.purpose == "judge":
            rule = functools.partial(_judge, flip_every=int(flip.group(1)))
        return Reply(
            text=rule(ask, FAKE_MARK) if rule else answer(ask),
            usage={
                "prompt_tokens": len(ask.user.split()) + 85 * ask.images,
                "completion_tokens": 20,
            },
            model=self.model_id,
            backend=self.backend,
            fake=True,
        )


def from_spec(name: str) -> FakeModel:
    """`fake`, `fake:reader` (reads the memory to answer), `fake:flipN` (a judge that turns over
    the verdict on a deterministic subset, see the module docstring) or any other name."""
    flip = _FLIP.fullmatch(name or "")
    if flip and int(flip.group(1)) < 1:
        from taskmem_lab.errors import ConfigError

        raise ConfigError(f"fake:{name}: the flip rule needs N >= 1 (fake:flip1, fake:flip2, ...)")
    return FakeModel(name or "fake")
