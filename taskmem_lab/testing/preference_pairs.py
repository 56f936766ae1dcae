"""Generated preference pairs with a learnable signal, for steer-training tests and benchmarks.

Floor 2, a test helper (nothing downloaded). `signal_pairs(n)` makes `n` prompts in TRL's
conversational format, each asking about one person and one object, with a `chosen` entry that
names them and what they did and a `rejected` entry that is generic. Both kinds are drawn from
combinations of phrase pools, so held-out prompts and sentences are unseen in training while the
difference between the two kinds (specific names and objects vs vague wording) is systematic:
what a steer trained by DPO should pick up. `write_signal_pairs` writes them as JSONL, optionally
with one generated image per prompt (an `images` column).
"""

from __future__ import annotations

import io
import itertools
import json
import random
from pathlib import Path
from typing import Any

PEOPLE = ("Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas")
OBJECTS = ("keys", "red cup", "phone", "blue book", "wallet", "laptop", "scissors", "umbrella")
VERBS = ("puts", "leaves", "places", "drops", "hides")
PLACES = ("on the shelf", "near the door", "in the drawer", "under the table", "by the window")
VAGUE_WHO = ("Someone", "A person", "Somebody", "Some people")
VAGUE_WHAT = ("does something", "moves around", "stays there", "waits a while", "looks busy")
VAGUE_WHERE = ("in the room", "somewhere else", "for some time", "in the scene", "over there")
VAGUE_TAIL = ("as usual", "for a bit", "again", "as before")


def _entry(text: str) -> str:
    return json.dumps({"description": text})


def signal_pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` TRL conversational rows (`id`, `prompt`, `chosen`, `rejected`), one prompt each."""
    rng = random.Random(seed)
    asked = list(itertools.product(PEOPLE, OBJECTS))
    rng.shuffle(asked)
    if n > len(asked):
        raise ValueError(f"at most {len(asked)} distinct prompts, asked for {n}")
    rows = []
    for i, (person, thing) in enumerate(asked[:n]):
        good = f"{person} {rng.choice(VERBS)} the {thing} {rng.choice(PLACES)}."
        vague = " ".join(rng.choice(pool) for pool in (VAGUE_WHO, VAGUE_WHAT, VAGUE_WHERE))
        vague = f"{vague} {rng.choice(VAGUE_TAIL)}."
        question = f"Where did {person} put the {thing}?"
        rows.append(
            {
                "id": f"pair-{i}",
                "prompt": [
                    {"role": "system", "content": "You write episodic memory."},
                    {
                        "role": "user",
                        "content": f"Tasks: {question} Describe the new span as JSON.",
                    },
                ],
                "chosen": [{"role": "assistant", "content": _entry(good)}],
                "rejected": [{"role": "assistant", "content": _entry(vague)}],
            }
        )
    return rows


def _image(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_signal_pairs(path: str | Path, n: int, seed: int = 0, images: bool = False) -> Path:
    """Write `signal_pairs(n, seed)` as JSONL at `path`; with `images`, each user message
    starts with one image block and a generated PNG is written beside the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = signal_pairs(n, seed)
    if images:
        for i, row in enumerate(rows):
            name = f"image_{i}.png"
            (path.parent / name).write_bytes(_image(seed * 1000 + i))
            user = row["prompt"][1]
            user["content"] = [{"type": "image"}, {"type": "text", "text": user["content"]}]
            row["images"] = [name]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
