"""Face ids: global `[face_7]` in stored memory, local `<face_1>` in prompts.

Local ids are numbered per window in order of first appearance, so the same inputs always give
the same prompt. Model output is mapped back to global ids before it is stored; a local id the
window never showed cannot be mapped and is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

GLOBAL_ID = re.compile(r"\[face_(\d+)\]")
LOCAL_ID = re.compile(r"<face_(\d+)>")
UNKNOWN = "[face_unknown]"
UNKNOWN_WORDS = "an unidentified person"


def globals_in(text: str) -> list[str]:
    """Global ids in order of first appearance."""
    seen: dict[str, None] = {}
    for m in GLOBAL_ID.finditer(text):
        seen.setdefault(m.group(0), None)
    return list(seen)


@dataclass
class IdMap:
    """Bijection between a window's global ids and its local ids."""

    to_local_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_order(cls, global_ids: Iterable[str]) -> IdMap:
        mapping: dict[str, str] = {}
        for gid in global_ids:
            if gid not in mapping:
                mapping[gid] = f"<face_{len(mapping) + 1}>"
        return cls(mapping)

    @property
    def to_global_ids(self) -> dict[str, str]:
        return {v: k for k, v in self.to_local_ids.items()}

    def to_local(self, text: str) -> str:
        """Stored text -> prompt text (an id the model invented reads as plain words)."""
        text = text.replace(UNKNOWN, UNKNOWN_WORDS)
        return GLOBAL_ID.sub(lambda m: self.to_local_ids.get(m.group(0), m.group(0)), text)

    def to_global(self, text: str) -> tuple[str, list[str]]:
        """Model text -> stored text, plus the local ids that had no global id."""
        back = self.to_global_ids
        unknown: list[str] = []

        def sub(m: re.Match[str]) -> str:
            if m.group(0) in back:
                return back[m.group(0)]
            unknown.append(m.group(0))
            return UNKNOWN

        return LOCAL_ID.sub(sub, text), unknown
