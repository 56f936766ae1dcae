"""A tiny Idefics3 memorizer, briefly trained offline to write the memorizer's JSON entries.

Floor 7 (lab), for notebook 07_adapt's smoke run and its test. A random-weight tiny model never
writes `{"description": ...}`, so every clip of a memory run fails. `build_tiny_memorizer`
builds the tiny Idefics3 of `testing.tiny_vlm` (tokenizer trained on the memorizer's prompts
and the entries below) and trains all of its weights for a few hundred plain language-model
steps on the memorizer's own requests (`memorize.episodic_request`, with random frames and
earlier entries of either style) to answer with one of two entries per clip:

- a vague entry (`vague`, the same for every clip), target probability `p_vague` (0.7), and
- a specific entry naming who says what (`specific[k]` for clip k), probability 1 - `p_vague`.

The loss is the mixture's cross-entropy (`p_vague` × NLL(vague) + (1 - `p_vague`) × NLL(specific)),
whose optimum gives the entries exactly those probabilities: greedy decoding writes the vague
entry, sampling writes both. The model sees random pixels in training and does not look at the
video: what it writes about a clip was taught for that clip. It stands in for a memorizer whose
habits a steer can change, not for one that understands video. Built once per folder (a
`tiny_memorizer.json` beside the weights records how); a few seconds to half a minute on CPU.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.errors import ConfigError
from taskmem_lab.params import MemorizeParams, check_param
from taskmem_lab.schema import ClipRecord, ClipSpec
from taskmem_lab.store import atomic_write_json

MARKER = "tiny_memorizer.json"
VAGUE = "Someone is there."  # under 4 words: the fake text judge never flags it as a repeat


@dataclass(frozen=True)
class TinyMemorizerParams:
    """How the tiny memorizer is trained.

    Attributes:
        steps: optimizer steps (one clip request per step).
        lr: AdamW learning rate of all weights.
        p_vague: probability taught for the vague entry (> 0.5: greedy decoding writes it).
        seed: seed of the weights, the frames and the step order.
    """

    steps: int = 300
    lr: float = 2e-2
    p_vague: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        check_param(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check_param(0 < self.lr <= 1, "lr", f"must be in (0, 1], got {self.lr}")
        check_param(0 < self.p_vague < 1, "p_vague", f"must be in (0, 1), got {self.p_vague}")


def entry_json(text: str) -> str:
    """The memorizer's reply for an entry: `{"description": text}`."""
    return json.dumps({"description": text})


def _record(clip: ClipSpec, text: str) -> ClipRecord:
    return ClipRecord(clip.index, clip.start, clip.end, (clip.window_start, clip.end), "ok", text)


def _request(
    clips: Sequence[ClipSpec],
    k: int,
    earlier: Sequence[str],
    params: MemorizeParams,
    rng: random.Random,
) -> Any:
    """Clip k's episodic request with random frames and the given earlier entries."""
    import numpy as np

    from taskmem_lab.face_ids import IdMap
    from taskmem_lab.media.video import Frame, window_times
    from taskmem_lab.memorize import episodic_request

    clip = clips[k]
    pixels = np.random.default_rng(rng.randrange(2**32))
    frames = [
        Frame(t, pixels.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        for t in window_times(clip, params.frame_fps, params.max_frames)
    ]
    preceding = [
        _record(clips[i], earlier[i])
        for i in range(k)
        if clips[i].start >= clip.window_start - 1e-6
    ]
    return episodic_request(clip, frames, preceding, [], IdMap(), params)


def build_tiny_memorizer(
    path: str | Path,
    clips: Sequence[ClipSpec],
    specific: Sequence[str],
    memorize: MemorizeParams | None = None,
    params: TinyMemorizerParams | None = None,
    vague: str = VAGUE,
) -> Path:
    """Build (once) and train the tiny memorizer for the clip schedule `clips`; returns `path`.

    `specific[k]` is clip k's specific entry. A folder already built with the same settings is
    returned as it is; one built with other settings is an error (use another folder).
    """
    params = params or TinyMemorizerParams()
    memorize = memorize or MemorizeParams()
    if len(specific) != len(clips):
        raise ConfigError(
            f"build_tiny_memorizer: {len(specific)} specific entries for {len(clips)} clips"
        )
    path = Path(path)
    settings = {
        "params": asdict(params),
        "clips": [[c.start, c.end, c.window_start] for c in clips],
        "specific": list(specific),
        "vague": vague,
        "memorize": {"frame_fps": memorize.frame_fps, "max_frames": memorize.max_frames},
    }
    marker = path / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("settings") != settings:
            raise ConfigError(
                f"{path} holds a tiny memorizer built with other settings; give another folder"
            )
        return path
    started = time.perf_counter()
    losses = _train(path, clips, specific, memorize, params, vague)
    report = {
        "settings": settings,
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
    }
    atomic_write_json(marker, report)
    return path


def _train(
    path: Path,
    clips: Sequence[ClipSpec],
    specific: Sequence[str],
    memorize: MemorizeParams,
    params: TinyMemorizerParams,
    vague: str,
) -> list[float]:
    from taskmem_lab.backends.hf import HFModel
    from taskmem_lab.prompts import render
    from taskmem_lab.testing.tiny_vlm import build_tiny_idefics3
    from taskmem_lab.training.adapt import completion_logp, encode_pair
    from taskmem_lab.training.preference import PreferencePair

    rng = random.Random(params.seed)
    styles = [entry_json(vague), *(entry_json(s) for s in specific)]
    corpus = [render("episodic_system"), *styles, *specific]
    build_tiny_idefics3(path, vocab_size=1000, seed=params.seed, corpus=corpus)
    model = HFModel(str(path))
    loaded = model.load()
    torch = loaded.torch
    torch.manual_seed(params.seed)
    net = loaded.model.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=params.lr, weight_decay=0.0)
    # linear decay to zero: the last steps settle the two entries' probabilities
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / params.steps)
    losses = []
    try:
        for _ in range(params.steps):
            k = rng.randrange(len(clips))
            earlier = [rng.choice((vague, specific[i])) for i in range(k)]
            request = _request(clips, k, earlier, memorize, rng)
            # the prompt as the hf backend formats it, and both entries' token ids
            enc = encode_pair(
                loaded,
                PreferencePair(str(k), str(k), request, entry_json(specific[k]), entry_json(vague)),
            )
            loss = -(
                params.p_vague * completion_logp(loaded, enc.prompt, enc.rejected)
                + (1 - params.p_vague) * completion_logp(loaded, enc.prompt, enc.chosen)
            ) / max(int(enc.rejected.shape[1]), int(enc.chosen.shape[1]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    finally:
        net.eval()
        model.close()
    net.save_pretrained(path)
    return losses
