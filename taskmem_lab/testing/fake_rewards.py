"""What the fake OpenAI-compatible server answers to reward, pairwise and sampled episodic prompts.

A test double used by `fake_openai_server.reply_for`. Every reply is deterministic, made by
simple rules from the request text, and marked `[fake server]`; the rules exist so tests can
reach every branch of the reward arithmetic through real HTTP, not to judge anything:

- video judge (system prompt holds `"supported"`): supported unless the entry holds the word
  UNSUPPORTED or no frame was sent; coherent unless it holds INCOHERENT.
- text judge (`"repeats_context"`): each flag from a regular expression over the entry (a
  sentence of four or more words copied from the context, "box"/"coordinates", "subtitle",
  a `<face_N>:` label inside double quotes, "overall"/"in summary"/"this shows").
- richness judge (`"ranking"`): candidates ranked by their number of distinct words, equal
  counts sharing a rank.
- pairwise judge (`"better"`): the entry with more distinct words wins, equal counts tie; a
  test can script verdicts (`FakeOpenAIServer.script_verdicts`) to make a judge that always
  picks one position.
- episodic prompts sampled with a seed and temperature > 0 (rollouts): a description whose
  wording and length depend on the seed, so candidates differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

MARK = "[fake server]"
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
_DETAILS = (
    "a red cup is moved to the left",
    "the clock shows ten past three",
    "a door opens behind the table",
    "someone says the word blue",
    "two books are stacked on the shelf",
)


def _between(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, re.S)
    return m.group(1).strip() if m else ""


def richness_of(text: str) -> int:
    """Distinct words: the fake judges' measure of information."""
    return len(set(_WORD.findall(text.lower())))


def _text_flags(entry: str, context: str) -> dict[str, bool]:
    ctx = " ".join(context.lower().split())
    repeats = any(
        len(s.split()) >= 4 and " ".join(s.lower().split()) in ctx for s in _SENTENCE.findall(entry)
    )
    return {"repeats_context": repeats, **{k: bool(p.search(entry)) for k, p in _FLAGS.items()}}


def _ranking(joined: str) -> list[list[int]]:
    found = re.findall(r'<candidate n="(\d+)">\n?(.*?)\n?</candidate>', joined, re.S)
    by_score: dict[int, list[int]] = {}
    for n, text in found:
        by_score.setdefault(richness_of(text), []).append(int(n))
    return [sorted(by_score[s]) for s in sorted(by_score, reverse=True)]


def _sampled(body: dict[str, Any], joined: str) -> str:
    seed = int(body["seed"])
    span = re.search(r"NEW SPAN: (\S+)-(\S+)", joined)
    where = f"{span.group(1)}-{span.group(2)}" if span else "?"
    details = [_DETAILS[(seed + i) % len(_DETAILS)] for i in range(seed % 3 + 1)]
    return json.dumps(
        {"description": f"{MARK} sample {seed} of {where}: " + "; ".join(details) + "."}
    )


def reward_reply(
    body: dict[str, Any],
    system: str,
    joined: str,
    images: int,
    next_verdict: Callable[[], str | None] | None = None,
) -> str | None:
    """The fake reply to a reward/pairwise/sampled prompt, or None for any other prompt."""
    if '"supported"' in system:
        entry = _between(joined, "entry")
        verdict = {
            "supported": "UNSUPPORTED" not in entry and images > 0,
            "coherent": "INCOHERENT" not in entry,
            "reason": f"{MARK} rule-based verdict over {images} frames",
        }
        return json.dumps(verdict)
    if '"repeats_context"' in system:
        flags = _text_flags(_between(joined, "entry"), _between(joined, "context"))
        return json.dumps({**flags, "reason": f"{MARK} rule-based flags"})
    if '"ranking"' in system:
        return json.dumps({"ranking": _ranking(joined), "reason": f"{MARK} by distinct words"})
    if '"better"' in system:
        scripted = next_verdict() if next_verdict is not None else None
        if scripted is None:
            a, b = (
                richness_of(_between(joined, "entry_a")),
                richness_of(_between(joined, "entry_b")),
            )
            scripted = "A" if a > b else "B" if b > a else "tie"
        return json.dumps({"better": scripted, "reason": f"{MARK} by distinct words"})
    if '"description"' in system and body.get("seed") is not None and body.get("temperature"):
        return _sampled(body, joined)
    return None
