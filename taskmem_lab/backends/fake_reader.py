"""`fake:reader`: the fake answerer of the smoke profile, which always reads the memory.

The plain `fake` answers a question only when the memory quotes an option, so on generated
stand-in memories it abstains everywhere and every figure of the smoke profile is empty. The
reader applies a simple deterministic rule to the memory text instead:

- multiple choice: the option sharing the most words with the memory; when none shares a word,
  a guess fixed by the hash of memory and question, except that one such question in three is
  abstained on (E), so coverage and precision differ;
- free form: the memory line sharing the most words with the question, abstaining the same way.

Its replies carry `[fake model]` like every fake reply: its scores measure this rule, never a
model.
"""

from __future__ import annotations

import hashlib
import json
import re

FAKE_MARK = "[fake model]"
_QA = re.compile(
    r"MEMORY \([^\n]*\):\n(?P<memory>.*?)\n\nQUESTION \(asked at [^\n]*\):\n(?P<question>.*?)\n"
    r"(?:OPTIONS:\n(?P<options>.*?)\n)?\nReply with",
    re.DOTALL,
)
_OPTION = re.compile(r"^([A-D])\. (.+)$", re.MULTILINE)
_STOP = {
    "the",
    "and",
    "for",
    "with",
    "that",
    "this",
    "from",
    "what",
    "does",
    "did",
    "who",
    "fake",
    "model",
}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in _STOP}


def _digest(*parts: str) -> int:
    return int(hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8], 16)


def reader_reply(user_text: str) -> str:
    """The reply to a QA user prompt (`prompts/qa_user.txt`), by the rule in the module doc."""
    m = _QA.search(user_text)
    if m is None:
        return json.dumps({"answer": "E", "note": FAKE_MARK})
    memory, question = m.group("memory"), m.group("question")
    seen = _words(memory)
    unsure_abstains = _digest(memory, question) % 3 == 0
    if m.group("options") is not None:
        options = _OPTION.findall(m.group("options"))
        scored = [(len(_words(text) & seen), letter) for letter, text in options]
        best = max(scored, default=(0, "E"))
        if best[0] > 0:
            letter = min(letter for score, letter in scored if score == best[0])
        elif not seen or unsure_abstains or not options:
            letter = "E"
        else:
            letter = options[_digest(memory, question) % len(options)][0]
        return json.dumps({"answer": letter, "note": FAKE_MARK})
    lines = [ln.strip() for ln in memory.splitlines() if ln.strip()]
    asked = _words(question)
    scored_lines = [(len(_words(ln) & asked), -i, ln) for i, ln in enumerate(lines)]
    best_line = max(scored_lines, default=(0, 0, ""))
    if best_line[0] == 0 and (unsure_abstains or not lines):
        return json.dumps({"answer": f"Insufficient information {FAKE_MARK}"})
    text = best_line[2] if best_line[0] > 0 else lines[_digest(memory, question) % len(lines)]
    return json.dumps({"answer": f"{FAKE_MARK} {text}"})
