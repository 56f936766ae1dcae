"""Coverage, precision and accuracy of memory QA, per benchmark and per group, with bootstrap CIs.

Floor 5. Over the questions of a group, as the TaskMem paper defines them:

    Coverage  = answered / total      (share of questions not abstained from: E / "cannot tell")
    Precision = correct / answered    (undefined, NaN, when nothing was answered)
    Accuracy  = correct / total       (= Coverage x Precision, exactly)

A reply with no readable answer is read one of two ways (`unparseable=`):
- `"wrong"` (default): it did not abstain, so it counts as answered and wrong;
- `"abstain"`: it counts as not answered (lowers Coverage, leaves Precision alone).
Either way it is also counted in its own `unparseable` column.

For judged free-form answers there is also the score variant: the mean judge score / 5 over the
answered questions. Intervals are percentile bootstrap intervals over videos when outcomes name
their video (all questions of a video are resampled together, as lmms-eval's clustered standard
errors treat them), else over questions; `n_boot` resamples, seeded per group from its name so a
table does not depend on the order of its rows or of the questions. A group of fewer than
`MIN_INTERVAL_UNITS` resampled units (one video, or one question) has no interval: resampling one
unit always gives the point estimate back, so its interval is NaN and prints as n/a.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

ANSWERED, ABSTAINED, UNPARSEABLE = "answered", "abstained", "unparseable"
STATUSES = (ANSWERED, ABSTAINED, UNPARSEABLE)
ALL = "all"
WRONG, ABSTAIN = "wrong", "abstain"
READINGS = (WRONG, ABSTAIN)  # how an unparseable reply counts: answered-and-wrong, or abstained

# Bootstrap resamples per table line (`EvalParams.n_boot` takes its default from here).
DEFAULT_N_BOOT = 2000
MIN_INTERVAL_UNITS = 2  # fewer videos (or questions) than this: no interval (n/a)


@dataclass(frozen=True)
class Outcome:
    """One scored question, as the metrics see it."""

    benchmark: str
    task_type: str
    status: str
    correct: bool = False
    score: float | None = None  # judge score 0-5 (free-form answers only)
    judge_unparseable: bool = False
    groups: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    video: str = ""  # the bootstrap resamples videos (questions of one video move together)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.correct and self.status != ANSWERED:
            raise ValueError("only an answered question can be correct")


@dataclass(frozen=True)
class MetricRow:
    """One line of the results table."""

    benchmark: str
    group: str  # "all", "task_type", or a benchmark group field such as "duration"
    value: str  # the group's value ("all" for the overall line)
    n: int
    answered: int
    abstained: int
    unparseable: int
    correct: int
    judge_unparseable: int
    coverage: float
    precision: float
    accuracy: float
    coverage_ci: tuple[float, float]
    precision_ci: tuple[float, float]
    accuracy_ci: tuple[float, float]
    score: float | None = None
    score_ci: tuple[float, float] | None = None
    missing: int = 0  # questions without a memory (overall line only); not in n
    reading: str = WRONG  # how unparseable replies were counted (see the module docstring)
    clusters: int = 0  # videos the bootstrap resampled (0: resampled questions)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _nan_percentiles(values: Any, level: float) -> tuple[float, float]:
    import numpy as np

    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


def _seed(seed: int, *names: str) -> int:
    return zlib.crc32("\x1f".join([str(seed), *names]).encode())


def _answered(o: Outcome, reading: str) -> bool:
    return o.status == ANSWERED or (o.status == UNPARSEABLE and reading == WRONG)


def metric_row(
    outcomes: Sequence[Outcome],
    benchmark: str,
    group: str,
    value: str,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = 0.95,
    seed: int = 0,
    unparseable: str = WRONG,
) -> MetricRow:
    """Point estimates and bootstrap intervals for one group of outcomes."""
    import numpy as np

    if unparseable not in READINGS:
        raise ValueError(f"unparseable must be one of {READINGS}, got {unparseable!r}")
    n = len(outcomes)
    if n == 0:
        raise ValueError(f"no outcomes for {benchmark} {group}={value}")
    # Clusters: one per video when every outcome names one, else one per question. Sorting makes
    # the bootstrap depend on the multiset of outcomes only, not on the order rows arrived in.
    by_video = all(o.video for o in outcomes)
    keyed: dict[str, list[Outcome]] = {}
    for i, o in enumerate(
        sorted(outcomes, key=lambda o: (o.status, o.correct, -1.0 if o.score is None else o.score))
    ):
        keyed.setdefault(o.video if by_video else f"{i:09d}", []).append(o)
    clusters = [keyed[k] for k in sorted(keyed)]

    def sums(pick: Any) -> Any:
        return np.array([sum(pick(o) for o in c) for c in clusters], dtype=float)

    answered = sums(lambda o: _answered(o, unparseable))
    correct = sums(lambda o: o.correct)
    scored = sums(lambda o: o.status == ANSWERED and o.score is not None)
    scores = sums(lambda o: (o.score or 0.0) / 5.0 if o.status == ANSWERED else 0.0)
    sizes = sums(lambda o: 1)
    a, c = int(answered.sum()), int(correct.sum())
    k = len(clusters)
    rng = np.random.default_rng(_seed(seed, benchmark, group, value))
    idx = rng.integers(0, k, size=(n_boot, k)) if n_boot > 0 else np.zeros((0, k), dtype=int)
    boot_n = sizes[idx].sum(axis=1)
    boot_a, boot_c = answered[idx].sum(axis=1), correct[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_prec = boot_c / boot_a
    score = score_ci = None
    if scored.any():
        score = float(scores.sum() / scored.sum())
        boot_s, boot_k = scores[idx].sum(axis=1), scored[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            score_ci = _nan_percentiles(boot_s / boot_k, level)
    intervals = {
        "coverage_ci": _nan_percentiles(boot_a / boot_n, level),
        "precision_ci": _nan_percentiles(boot_prec, level),
        "accuracy_ci": _nan_percentiles(boot_c / boot_n, level),
        "score_ci": score_ci,
    }
    if k < MIN_INTERVAL_UNITS:  # one unit: every resample is the sample itself
        intervals = {name: (math.nan, math.nan) for name in intervals}
        intervals["score_ci"] = None if score is None else (math.nan, math.nan)
    return MetricRow(
        benchmark=benchmark,
        group=group,
        value=value,
        n=n,
        answered=a,
        abstained=sum(o.status == ABSTAINED for o in outcomes),
        unparseable=sum(o.status == UNPARSEABLE for o in outcomes),
        correct=c,
        judge_unparseable=sum(o.judge_unparseable for o in outcomes),
        coverage=a / n,
        precision=c / a if a else math.nan,
        accuracy=c / n,
        score=score,
        **intervals,
        reading=unparseable,
        clusters=k if by_video else 0,
    )


def metrics_table(
    outcomes: Sequence[Outcome],
    by: Sequence[str] = ("task_type",),
    n_boot: int = DEFAULT_N_BOOT,
    level: float = 0.95,
    seed: int = 0,
    missing: Mapping[str, int] | None = None,
    unparseable: str = WRONG,
) -> list[MetricRow]:
    """Per benchmark: the overall line, then one line per value of each field in `by`.

    `by` names `task_type` or keys of `Outcome.groups`; `missing` counts questions per
    benchmark that had no memory (reported on the overall line, not scored); `unparseable`
    is the reading of replies without a readable answer (`"wrong"` or `"abstain"`).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rows: list[MetricRow] = []
    for bench in sorted({o.benchmark for o in outcomes}):
        mine = [o for o in outcomes if o.benchmark == bench]
        overall = metric_row(mine, bench, ALL, ALL, n_boot, level, seed, unparseable)
        rows.append(_with_missing(overall, (missing or {}).get(bench, 0)))
        for field_name in by:
            values: dict[str, list[Outcome]] = {}
            for o in mine:
                key = o.task_type if field_name == "task_type" else o.groups.get(field_name)
                if key is not None:
                    values.setdefault(str(key), []).append(o)
            for value in sorted(values):
                rows.append(
                    metric_row(
                        values[value], bench, field_name, value, n_boot, level, seed, unparseable
                    )
                )
    return rows


def reading_differences(
    outcomes: Sequence[Outcome],
    by: Sequence[str] = ("task_type",),
    n_boot: int = 0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Lines whose Cov/Prec differ between the two readings of unparseable replies.

    One dict per differing line: its benchmark, group, value, the unparseable count, and
    Cov/Prec under `wrong` (the default) and under `abstain`; empty when no reply was unreadable.
    """
    wrong = metrics_table(outcomes, by, n_boot, seed=seed, unparseable=WRONG)
    abstain = metrics_table(outcomes, by, n_boot, seed=seed, unparseable=ABSTAIN)
    out = []
    for w, a in zip(wrong, abstain, strict=True):
        if w.unparseable:
            out.append(
                {
                    "benchmark": w.benchmark,
                    "group": w.group,
                    "value": w.value,
                    "n": w.n,
                    "unparseable": w.unparseable,
                    "accuracy": w.accuracy,
                    "coverage (wrong)": w.coverage,
                    "precision (wrong)": w.precision,
                    "coverage (abstain)": a.coverage,
                    "precision (abstain)": a.precision,
                }
            )
    return out


def _with_missing(row: MetricRow, missing: int) -> MetricRow:
    data = asdict(row)
    data["missing"] = missing
    return MetricRow(**data)


# --------------------------------------------------------------------------- presentation


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _ci(x: float | None, ci: tuple[float, float] | None) -> str:
    if x is None or ci is None or math.isnan(x):
        return "–"
    if all(math.isnan(v) for v in ci):  # too few videos or questions for an interval
        return f"{_pct(x)} [n/a]"
    return f"{_pct(x)} [{_pct(ci[0])}, {_pct(ci[1])}]"


def table_rows(rows: Sequence[MetricRow]) -> list[dict[str, str]]:
    """Rows of display strings (percentages with 95% intervals)."""
    show_score = any(r.score is not None for r in rows)
    out = []
    for r in rows:
        line = {
            "benchmark": r.benchmark,
            "group": "all" if r.group == ALL else f"{r.group}: {r.value}",
            "n": str(r.n),
            "Acc": _ci(r.accuracy, r.accuracy_ci),
            "Cov": _ci(r.coverage, r.coverage_ci),
            "Prec": _ci(r.precision, r.precision_ci),
        }
        if show_score:
            line["Score/5"] = _ci(r.score, r.score_ci)
        line.update(
            {
                "abstained": str(r.abstained),
                "unparseable": str(r.unparseable),
                "judge unparseable": str(r.judge_unparseable),
                "missing memory": str(r.missing) if r.group == ALL else "",
            }
        )
        out.append(line)
    return out


def to_markdown(rows: Sequence[MetricRow]) -> str:
    """A GitHub-flavoured markdown table (percentages, 95% bootstrap intervals in brackets)."""
    lines = table_rows(rows)
    if not lines:
        return "(no results)\n"
    headers = list(lines[0])
    widths = [max(3, len(h), *(len(line[h]) for line in lines)) for h in headers]
    right = {"n", "abstained", "unparseable", "judge unparseable", "missing memory"}

    def fmt(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if h in right else c.ljust(w)
            for c, w, h in zip(cells, widths, headers, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        ("-" * (w - 1) + ":") if h in right else "-" * w
        for w, h in zip(widths, headers, strict=True)
    ]
    body = [fmt([line[h] for h in headers]) for line in lines]
    return "\n".join([fmt(headers), "| " + " | ".join(rule) + " |", *body]) + "\n"


def to_records(rows: Sequence[MetricRow]) -> list[dict[str, Any]]:
    """Flat rows for parquet: intervals split into `_lo`/`_hi` columns."""
    out = []
    for r in rows:
        data = r.to_json()
        for name in ("coverage", "precision", "accuracy", "score"):
            ci = data.pop(f"{name}_ci")
            data[f"{name}_lo"], data[f"{name}_hi"] = ci if ci is not None else (None, None)
        out.append(data)
    return out
