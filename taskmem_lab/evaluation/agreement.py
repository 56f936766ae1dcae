"""How much a free-form score depends on its judge: re-judge a finished evaluation with another.

Floor 5. `judge_agreement` reads an evaluation's results folder, asks a second judge about every
answer the first judge graded (the same prompt, `judge.judge`), and writes under
`<results>/agreement/<second judge>/`:

- `verdicts.jsonl`: one row per question, both verdicts (resumable: a killed run is resumed by
  running it again; a question whose answer changed since is asked again; the response cache
  makes a finished run's rerun free);
- `agreement.json`: raw agreement, Cohen's kappa (`sklearn.metrics.cohen_kappa_score`) and the
  confusion table (`sklearn.metrics.confusion_matrix`, rows: the first judge, columns: the
  second, labels yes/no) over the answers both judges could grade; how many verdicts either
  could not read; the per-question disagreements; calls, tokens and cost like `eval`'s summary.

Kappa is undefined (None, with a note) when both judges give one label only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.backends.base import ChatModel, model_identity
from taskmem_lab.errors import ConfigError, ModelError
from taskmem_lab.evaluation.evaluate import fresh_replies, priced, results_dir, tally_asked
from taskmem_lab.evaluation.judge import judge
from taskmem_lab.evaluation.judge import prompt_hashes as judge_prompt_hashes
from taskmem_lab.jobs import Progress, ResumableDir, bounded_map
from taskmem_lab.params import check_param
from taskmem_lab.paths import default_tag
from taskmem_lab.store import FolderLock, utc_now

AGREEMENT = "agreement.json"
VERDICTS = "verdicts.jsonl"
LABELS = ("yes", "no")


@dataclass(frozen=True)
class AgreementParams:
    """Parameters of a judge-agreement run.

    Attributes:
        concurrency: answers re-judged at once.
        judge_reasks: how often an unreadable reply of the second judge is asked again.
    """

    concurrency: int = 8
    judge_reasks: int = 1

    def __post_init__(self) -> None:
        check_param(1 <= self.concurrency <= 256, "concurrency", "must be in 1..256")
        check_param(0 <= self.judge_reasks <= 5, "judge_reasks", "must be in 0..5")


@dataclass
class AgreementResult:
    """What a judge-agreement run produced (also on disk under `out`)."""

    out: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    failures: list[str]


def agreement_dir(results: str | Path, judge_id: str) -> Path:
    """`<results>/agreement/<judge id, made a plain name>`."""
    return Path(results) / "agreement" / default_tag(judge_id)


def judged_rows(results: str | Path) -> list[dict[str, Any]]:
    """The rows of an evaluation whose answer a judge graded; a clear error when there is none."""
    folder = results_dir(Path(results))
    if not folder.exists():
        raise ConfigError(f"{results} is not an evaluation results folder (no run.json there)")
    rows = [r for r in folder.good().values() if r.get("judge")]
    if not rows:
        raise ConfigError(
            f"{results} has no judged answers: judge-agreement re-judges free-form answers "
            "(e.g. EgoTempo evaluated with --judge)"
        )
    return rows


def _label(verdict: Mapping[str, Any]) -> str | None:
    if verdict.get("status") != "ok":
        return None
    return LABELS[0] if verdict.get("correct") else LABELS[1]


def agreement_stats(pairs: Sequence[tuple[str | None, str | None]]) -> dict[str, Any]:
    """Raw agreement, Cohen's kappa and the confusion table of (first, second) labels; pairs
    with an unreadable verdict (None) are counted apart."""
    try:
        from sklearn.metrics import cohen_kappa_score, confusion_matrix
    except ImportError as exc:
        raise ConfigError(
            "judge agreement needs scikit-learn: pip install 'taskmem_lab[eval]'"
        ) from exc

    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    out: dict[str, Any] = {
        "compared": len(both),
        "unparseable": {
            "first": sum(a is None for a, _ in pairs),
            "second": sum(b is None for _, b in pairs),
        },
        "labels": list(LABELS),
    }
    if not both:
        return {**out, "agreement": None, "kappa": None, "confusion": None,
                "note": "no answer was graded by both judges"}  # fmt: skip
    first, second = [a for a, _ in both], [b for _, b in both]
    matrix = confusion_matrix(first, second, labels=list(LABELS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined (0/0) when both judges say one thing
        kappa = float(cohen_kappa_score(first, second, labels=list(LABELS)))
    note = ""
    if math.isnan(kappa):
        kappa_out = None
        note = "kappa is undefined: both judges gave the same single label to every answer"
    else:
        kappa_out = kappa
    return {
        **out,
        "agreement": sum(a == b for a, b in both) / len(both),
        "kappa": kappa_out,
        "confusion": matrix.tolist(),
        "note": note,
    }


def judge_agreement(
    results: str | Path,
    second: ChatModel,
    params: AgreementParams = AgreementParams(),
    out: str | Path | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    progress: bool = True,
) -> AgreementResult:
    """Re-judge `results`' judged answers with `second`; see the module docstring."""
    rows = judged_rows(results)
    folder_path = Path(out) if out else agreement_dir(results, second.model_id)
    first_models = sorted({r["judge"]["model"] for r in rows})
    settings = {
        "results": str(Path(results).resolve()),
        "first_judge": first_models,
        "judge": second.model_id,
        "judge_endpoint": model_identity(second),
        "prompts": judge_prompt_hashes(),
    }
    with FolderLock(folder_path, "judge agreement"):
        store = ResumableDir(
            folder_path,
            kind="judge-agreement",
            key=lambda row: str(row["id"]),
            rows_name=VERDICTS,
            ok=lambda row: True,
            hint="use another --out, or delete the folder to start over",
        ).open(settings)
        return _run(rows, second, params, store, prices, progress)


def _same_answer(kept: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    return kept.get("prediction") == row["prediction"] and kept.get("first") == _first(row)


def _first(row: Mapping[str, Any]) -> dict[str, Any]:
    j = row["judge"]
    return {
        "model": j["model"],
        "status": j["status"],
        "correct": j["correct"],
        "score": j["score"],
    }


def _run(
    rows: Sequence[Mapping[str, Any]],
    second: ChatModel,
    params: AgreementParams,
    store: ResumableDir,
    prices: Mapping[str, tuple[float, float]] | None,
    progress: bool,
) -> AgreementResult:
    kept = store.good()
    done = {
        r["id"]: kept[r["id"]] for r in rows if r["id"] in kept and _same_answer(kept[r["id"]], r)
    }
    todo = [r for r in rows if r["id"] not in done]

    def one(row: Mapping[str, Any]) -> dict[str, Any]:
        verdict = judge(
            second, row["question"], row["reference"], row["prediction"], params.judge_reasks
        )
        first, other = _first(row), verdict.to_json()
        a, b = _label(first), _label(other)
        return {
            "id": row["id"],
            "benchmark": row["benchmark"],
            "task_type": row["task_type"],
            "question": row["question"],
            "reference": row["reference"],
            "prediction": row["prediction"],
            "first": first,
            "first_reason": row["judge"].get("reason", ""),
            "second": other,
            "agree": None if a is None or b is None else a == b,
            "created": utc_now(),
        }

    bar = Progress(
        "judge agreement", total=len(rows), initial=len(done), unit="q", enabled=progress
    )
    failures: list[str] = []
    calls = fresh = 0
    for outcome in bounded_map(
        one, todo, params.concurrency, key=lambda r: r["id"], progress=bar, catch=(ModelError,)
    ):
        if not outcome.ok:
            failures.append(outcome.message)
            continue
        new = outcome.value
        assert new is not None
        store.append(new)
        calls += fresh_replies(new["second"])
        fresh += 1
        done[new["id"]] = new
    kept_rows = [done[r["id"]] for r in rows if r["id"] in done]
    stats = agreement_stats([(_label(r["first"]), _label(r["second"])) for r in kept_rows])
    per: dict[str, dict[str, Any]] = {}
    for r in kept_rows:
        tally_asked(per, "second judge", r["second"])
    complete = not failures and len(kept_rows) == len(rows)
    settings = store.settings()
    summary = {
        "results": settings["results"],
        "first_judge": settings["first_judge"],
        "second_judge": second.model_id,
        "status": "complete" if complete else "partial",
        "judged": len(rows),
        "rejudged": len(kept_rows),
        **stats,
        "disagreements": [
            {k: r[k] for k in ("id", "task_type", "question", "reference", "prediction")}
            | {
                "first": r["first"]["correct"],
                "second": r["second"]["correct"],
                "first_reason": r["first_reason"],
                "second_reason": r["second"]["reason"],
            }
            for r in kept_rows
            if r["agree"] is False
        ],
        "fake_models": any(r["second"].get("fake") for r in kept_rows),
        "failed": len(failures),
        "failures": failures[:50],
        "usage": list(priced(per, prices).values()),
        "this_run": {"questions": fresh, "model_calls": calls},
        "updated": utc_now(),
    }
    store.write_summary(summary, summary["status"], name=AGREEMENT)
    return AgreementResult(store.path, kept_rows, summary, failures)


def read_agreements(results: str | Path) -> list[dict[str, Any]]:
    """Every `agreement.json` written for an evaluation results folder (none: empty list)."""
    import json

    out = []
    for path in sorted(Path(results).glob(f"agreement/*/{AGREEMENT}")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["path"] = str(path)
        out.append(data)
    return out


__all__ = [
    "AgreementParams",
    "AgreementResult",
    "agreement_dir",
    "agreement_stats",
    "judge_agreement",
    "read_agreements",
]
