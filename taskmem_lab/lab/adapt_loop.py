"""The Phase-Two loop of notebook 07_adapt, one call per stage.

Floor 7 (lab). memorize with the base model (`pipeline.build_memory`); tasks arrive; rollouts of
that run (`training.rollouts`); preference pairs judged against the arrived tasks
(`training.pairs`); a steer trained by DPO (`pipeline.adapt`); memorize again with the steer
(`steered_spec`); answer the same questions from both memories (`evaluation.evaluate`).

In the smoke profile the base model is the tiny memorizer of `lab.tiny_memorizer`, taught on
the sample talk to write either a vague entry (more likely: greedy decoding writes it) or one
that names what was said; the judges are the `fake` test double (the pair judge prefers the
entry with more distinct words), the answerer is `fake:reader` (it picks the option sharing
most words with the memory). The gradient steps, the steer file and steered generation are
real; the judges' and the answerer's verdicts are rules, not models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmem_lab.params import MemorizeParams

if TYPE_CHECKING:
    import pandas as pd

    from taskmem_lab.bench.record import QARecord
    from taskmem_lab.store import RunDir

# What the sample talk's speech says about its two tasks (`samples.TALK_LINES`): the entry the
# tiny memorizer is taught as its less likely, specific style for every clip.
TALK_SPECIFIC = "The red ball is under the kitchen table; the keys are in the blue bowl."


def quiet_transformers() -> None:
    """No transformers progress bars (loading and saving weights) in an executed notebook."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def tiny_memorizer_spec(video: str | Path, root: str | Path, params: MemorizeParams) -> str:
    """`hf:DIR` of the tiny memorizer taught for `video`'s clip schedule (built once under
    `root/models/`). Only for the sample talk: its specific entry quotes that talk's speech."""
    from taskmem_lab.lab.tiny_memorizer import build_tiny_memorizer
    from taskmem_lab.media.stream import load_stream
    from taskmem_lab.memorize import schedule_for

    clips = schedule_for(load_stream(video), params)
    folder = Path(root) / "models" / "tiny_memorizer"
    return f"hf:{build_tiny_memorizer(folder, clips, [TALK_SPECIFIC] * len(clips), params)}"


def rollouts_and_pairs(
    run: RunDir,
    model: str,
    tasks: str | Path,
    n: int,
    judge: str,
    video_judge: str,
    temperature: float = 0.7,
    cache: bool | str | Path = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample `n` candidates per clip of `run` with `model` at `temperature`, judge them against
    the tasks and write the pairs (`<run>/rollouts/adapt/pairs/default/`); returns
    `make_pairs`' summary."""
    from taskmem_lab.backends import make_model
    from taskmem_lab.backends.cache import open_cache
    from taskmem_lab.tasks import load_tasks
    from taskmem_lab.training.pairs import PairParams, make_pairs
    from taskmem_lab.training.replay import RunReplay
    from taskmem_lab.training.rewards import Judges
    from taskmem_lab.training.rollouts import RolloutParams, rollout

    store = open_cache(cache)
    replay = RunReplay(run)
    params = RolloutParams(n=n, temperature=temperature)
    sampled = rollout(replay, make_model(model, store), params, "adapt", 1, progress)
    if sampled["failed"]:
        raise RuntimeError(f"{sampled['failed']} rollout samples failed; run again to retry")
    judges = Judges(text=make_model(judge, store), video=make_model(video_judge, store))
    return make_pairs(
        replay,
        "adapt",
        judges,
        make_model(judge, store),
        load_tasks(tasks),
        params=PairParams(questions="all"),
        concurrency=1,
        progress=progress,
    )


def answer(
    root: str | Path, tag: str, questions: Sequence[QARecord], answerer: str, out: str | Path
) -> Any:
    """Answer `questions` from the memory `root/<video>/memory/<tag>` with `answerer`; returns
    the overall `MetricRow` (accuracy, coverage, precision as fractions)."""
    from taskmem_lab.backends import make_model
    from taskmem_lab.evaluation.evaluate import EvalParams, MemoryLocator, evaluate
    from taskmem_lab.evaluation.qa import QAParams

    result = evaluate(
        list(questions),
        MemoryLocator(Path(root), tag),
        make_model(answerer),
        None,
        QAParams(),
        Path(out),
        EvalParams(n_boot=200),
        progress=False,
    )
    return next(r for r in result.table if r.group == "all")


def qa_frame(rows: dict[str, Any]) -> pd.DataFrame:
    """Acc / Cov / Prec (percent) per memory, from `answer`'s rows keyed by memory name."""
    import pandas as pd

    def pct(x: float | None) -> float | None:
        return None if x is None else round(100.0 * x, 1)

    return pd.DataFrame(
        [
            {
                "memory": name,
                "questions": row.n,
                "Acc": pct(row.accuracy),
                "Cov": pct(row.coverage),
                "Prec": pct(row.precision),
            }
            for name, row in rows.items()
        ]
    )


def changed_entries(base: RunDir, adapted: RunDir) -> pd.DataFrame:
    """The two memories' entries side by side, clip by clip, with whether they differ."""
    import pandas as pd

    a, b = base.finished(), adapted.finished()
    rows = [
        {
            "clip": k,
            "span": f"{a[k].start:g}-{a[k].end:g} s",
            "base": a[k].episodic,
            "adapted": b[k].episodic if k in b else None,
            "changed": k in b and a[k].episodic != b[k].episodic,
        }
        for k in sorted(a)
    ]
    return pd.DataFrame(rows)


def steer_norms(steer_file: str | Path) -> list[float]:
    """The length of each layer's steer vector in a steer file (0 where a layer has none)."""
    from taskmem_lab.backends.steer import load_steer

    return [round(float(v), 4) for v in load_steer(steer_file).norm(dim=1)]
