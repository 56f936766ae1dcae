"""How three answer extractors read the reply table of `tests/evaluation/data/choice_replies.jsonl`.

The table holds hand-written replies to four-option questions (letters A-D, and E for "cannot
tell from memory", as taskmem_lab's prompt offers), each with what a careful reader takes it to
mean: a letter, or "" (no answer given). Compared:

- `taskmem_lab`: `parse_choice(reply, "ABCD", options)`;
- `lmms-eval style`: the Video-MME rule of lmms-eval (`extract_characters_regex`), restated here:
  remove a few "The answer is"-style prefixes, give up on a long reply without a capital option
  letter, else take the first capital option letter anywhere in the reply;
- `VLMEvalKit style`: its rule-based matching (`can_infer`), restated here: split the reply into
  words after turning `.()[],:;!*#{}` into spaces; exactly one word that is an option letter
  gives that letter (unless "A" appears in a reply of more than three words: "A" may be an
  article); otherwise (no letter, several, or that possible article) the one option whose text
  appears in the lowercased reply.

Both restatements use the letters A-E (the E option's text "Cannot tell from memory"), so every
tool can read an abstention; they are small reimplementations of the rules as documented in the
two projects, written for this comparison, not their code.

Counts per tool: `agree` (reads what the careful reader reads), `wrong letter` (a letter the
reader does not read: the harmful case), `missed` (no letter where the reader reads one).

    python benchmarks/parsing/compare_parsers.py [--table PATH] [--show-wrong]
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from taskmem_lab.evaluation.qa import UNPARSEABLE, parse_choice

TABLE = (
    Path(__file__).resolve().parents[2] / "tests" / "evaluation" / "data" / "choice_replies.jsonl"
)
LETTERS = "ABCDE"
ABSTAIN_TEXT = "Cannot tell from memory"


def ours(reply: str, options: Sequence[str]) -> str:
    got = parse_choice(reply, "ABCD", options)
    return "" if got.status == UNPARSEABLE else got.value


def lmms_eval_style(reply: str, options: Sequence[str]) -> str:
    s = reply.strip()
    for prefix in (
        "The best answer is",
        "The correct answer is",
        "The answer is",
        "The answer",
        "The best option isThe correct option is",  # two adjacent literals in the original list
        "Best answer:Best option:",
    ):
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search(f"[{LETTERS}]", s):
        return ""
    m = re.search(f"[{LETTERS}]", s)
    return m.group(0) if m else ""


def vlmevalkit_style(reply: str, options: Sequence[str]) -> str:
    choices = {letter: text for letter, text in zip(LETTERS, [*options, ABSTAIN_TEXT], strict=True)}
    mod = reply
    for ch in ".()[],:;!*#{}":
        mod = mod.replace(ch, " ")
    words = mod.split()
    named = [c for c in choices if c in words]
    if len(named) == 1 and not ("A" in words and len(words) > 3):
        return named[0]
    # No single letter (or a possible article "A"): fall back to the options' texts.
    lowered = reply.lower()
    hits = [c for c, text in choices.items() if text.lower() in lowered]
    return hits[0] if len(hits) == 1 else ""


TOOLS: dict[str, Callable[[str, Sequence[str]], str]] = {
    "taskmem_lab": ours,
    "lmms-eval style": lmms_eval_style,
    "VLMEvalKit style": vlmevalkit_style,
}


def compare(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Per tool: agree / wrong letter / missed counts over the table."""
    counts = {name: {"agree": 0, "wrong letter": 0, "missed": 0} for name in TOOLS}
    for row in rows:
        for name, tool in TOOLS.items():
            got = tool(row["reply"], row["options"])
            key = "agree" if got == row["expect"] else "wrong letter" if got else "missed"
            counts[name][key] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--show-wrong", action="store_true", help="list each tool's wrong letters")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.table.read_text(encoding="utf-8").splitlines()]
    print(f"{len(rows)} replies ({sum(bool(r['expect']) for r in rows)} with a letter to read)\n")
    print("| tool | agree | wrong letter | missed |")
    print("| --- | ---: | ---: | ---: |")
    for name, c in compare(rows).items():
        print(f"| {name} | {c['agree']} | {c['wrong letter']} | {c['missed']} |")
    if args.show_wrong:
        for name, tool in TOOLS.items():
            for row in rows:
                got = tool(row["reply"], row["options"])
                if got and got != row["expect"]:
                    print(
                        f"{name}: {row['reply'][:70]!r} -> {got} (reader: {row['expect'] or '-'})"
                    )


if __name__ == "__main__":
    main()
