"""Figures and tables with provenance, the metrics file of 04 and the paper's reported table.

Floor 7. `save_figure(fig, name)` writes `figures/<name>.png`, `.pdf` and `<name>.json` (notebook,
parameters, package version, git commit, input files with sha256, whether any model was fake);
`save_table(df, name)` writes markdown and LaTeX beside the figures with the same provenance and
returns the table it saved, so the notebook shows exactly what was written. Parameters pass
through `redact` so nothing that looks like a key is ever written.

`write_metrics` / `read_metrics` are the file `04_qa` leaves per benchmark
(`<memories>/results/<benchmark>.metrics.json`) and `06_paper` reads; `paper_table` reads the
paper's reported numbers (`benchmarks/paper_results.csv`, long or wide layout) and
`main_table` lays reported and reproduced rows side by side in percent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
import subprocess
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import taskmem_lab
from taskmem_lab.errors import BenchmarkError, ConfigError
from taskmem_lab.evaluation.report import (  # the metrics file, re-exported for the notebooks
    metrics_path as metrics_path,
)
from taskmem_lab.evaluation.report import read_metrics as read_metrics
from taskmem_lab.evaluation.report import write_metrics as write_metrics
from taskmem_lab.paths import file_sha256, input_path, repo_root
from taskmem_lab.store import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd

FIGURES_ENV = "TASKMEM_FIGURES"
_SECRET_KEY = re.compile(r"(key|token|secret|password)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"^(sk-|hf_|AIza)[A-Za-z0-9_\-]{8,}")


BENCHMARKS = ("videomme", "egolife", "egotempo")
METRICS = ("accuracy", "coverage", "precision")
REPRODUCE_ENV = "TASKMEM_REPRODUCE"  # set by `taskmem reproduce` for the kernels it starts


def figures_dir() -> Path:
    """Default figures folder (`TASKMEM_FIGURES`, else `figures/` in the working directory)."""
    return Path(os.environ.get(FIGURES_ENV, "figures"))


def notebook_setup() -> bool:
    """Quiet, predictable notebook output; returns whether to show progress bars.

    Silences third-party deprecation notices (e.g. webrtcvad's `pkg_resources` warning) that say
    nothing about the run, and turns progress bars off under `taskmem reproduce`, where a saved
    widget would show a stale "0%" in the executed copy.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    return os.environ.get(REPRODUCE_ENV) != "1"


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters safe to write: key-like names or values are replaced by a marker."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if _SECRET_KEY.search(k) or (isinstance(v, str) and _SECRET_VALUE.match(v)):
            out[k] = "<redacted>"
        else:
            out[k] = v
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The checkout's HEAD commit (of the repository holding the package by default)."""
    path = path if path is not None else (repo_root() or ".")
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


@dataclass
class Provenance:
    """What made an output; notebooks build one from their parameters and inputs."""

    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    fake_model: bool = False

    def to_json(self) -> dict[str, Any]:
        inputs = []
        for p in self.inputs:
            path = Path(p)
            if path.is_file():
                inputs.append(
                    {"path": str(p), "sha256": file_sha256(path), "size": path.stat().st_size}
                )
            elif path.is_dir():
                files = sorted(f for f in path.rglob("*") if f.is_file())
                digest = hashlib.sha256()
                for f in files:
                    digest.update(str(f.relative_to(path)).encode())
                    digest.update(file_sha256(f).encode())
                inputs.append({"path": str(p), "sha256": digest.hexdigest(), "files": len(files)})
            else:
                inputs.append({"path": str(p), "missing": True})
        return {
            "notebook": self.notebook,
            "parameters": redact(self.parameters),
            "taskmem_lab": taskmem_lab.__version__,
            "git_commit": git_commit(),
            "inputs": inputs,
            "fake_model": self.fake_model,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def save_figure(
    fig: Any, name: str, provenance: Provenance, directory: str | Path | None = None
) -> Path:
    """PNG + PDF + provenance JSON; a figure made with a fake model says so in its corner."""
    out = Path(directory) if directory is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    if provenance.fake_model:
        # Below everything the figure draws (tick labels included), never on top of it.
        fig.text(
            0.99,
            0.0,
            "fake model output: not a result",
            ha="right",
            va="top",
            fontsize=7,
            color="red",
            transform=fig.transFigure,
        )
    fig.savefig(out / f"{name}.png", dpi=150, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    atomic_write_json(out / f"{name}.json", provenance.to_json())
    return out / f"{name}.png"


def save_table(
    table: Any, name: str, provenance: Provenance, directory: str | Path | None = None
) -> Path:
    """A pandas DataFrame as markdown and LaTeX, with provenance JSON; returns the table saved
    (display that, so the notebook shows what the files hold)."""
    out = Path(directory) if directory is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    note = "\n\n*Made with a fake model: not a result.*\n" if provenance.fake_model else "\n"
    shown = table.astype(object).where(table.notna(), None)  # missing cells stay empty
    (out / f"{name}.md").write_text(
        shown.to_markdown(index=False, floatfmt=".1f", missingval="") + note, encoding="utf-8"
    )
    (out / f"{name}.tex").write_text(
        table.to_latex(index=False, float_format="%.1f", na_rep="--"), encoding="utf-8"
    )
    atomic_write_json(out / f"{name}.json", provenance.to_json())
    return table


def any_fake(specs: Iterable[str]) -> bool:
    """Whether any model spec names the `fake` test double."""
    return any(str(s).split(":", 1)[0] == "fake" for s in specs)


# --------------------------------------------------------------------------- 04's metrics file


# --------------------------------------------------------------------------- the paper's table


def paper_table(path: str | Path = "benchmarks/paper_results.csv") -> pd.DataFrame:
    """The paper's reported numbers (`evaluation.report.paper_table`, which checks them), one row
    per (system, benchmark): accuracy, coverage and precision in percent, and the source.
    Relative paths resolve against the repository, never the kernel's working directory."""
    import pandas as pd

    from taskmem_lab.evaluation.report import paper_table as load_paper_table

    rows = load_paper_table(input_path(path, "the paper's results table"))
    return pd.DataFrame(
        [asdict(r) for r in rows], columns=["system", "benchmark", *METRICS, "source"]
    )


def main_table(
    reported: pd.DataFrame,
    metrics: Sequence[Mapping[str, Any]],
    benchmarks: Sequence[str] = BENCHMARKS,
) -> pd.DataFrame:
    """The paper's layout: one row per system (reported, then reproduced), one column per
    `benchmark/metric`, in percent, and `cited`: the paper's source for a reported row, the
    metrics files for a reproduced one. Reproduced rows come from `read_metrics`; an undefined
    metric (precision with nothing answered) stays NaN, never 0."""
    import pandas as pd

    columns = [f"{b}/{m}" for b in benchmarks for m in METRICS]
    rows: list[dict[str, Any]] = []
    for system, part in reported.groupby("system", sort=False):
        row: dict[str, Any] = {"system": system, "source": "reported"}
        row["cited"] = "; ".join(dict.fromkeys(part["source"]))
        for _, r in part.iterrows():
            for m in METRICS:
                row[f"{r['benchmark']}/{m}"] = r[m]
        rows.append(row)
    ours: dict[str, dict[str, Any]] = {}
    for data in metrics:
        name = f"taskmem_lab: {data['answerer']} on {data['tag']}"
        entry = ours.setdefault(name, {"system": name, "source": "reproduced", "cited": []})
        entry["cited"].append(data["path"])
        for m in METRICS:
            value = data["overall"].get(m)
            ok = value is not None and not (isinstance(value, float) and math.isnan(value))
            entry[f"{data['benchmark']}/{m}"] = 100 * float(value) if ok else float("nan")
    for entry in ours.values():
        entry["cited"] = ", ".join(entry["cited"])
    rows += list(ours.values())
    return pd.DataFrame(rows).reindex(columns=["system", "source", "cited", *columns])


def delta_table(table: pd.DataFrame, compare_to: str) -> pd.DataFrame:
    """Reproduced minus the reported row of `compare_to`, in percentage points (NaN where either
    side is missing). An unknown `compare_to` is an error naming the systems there are."""
    reported = table[table.source == "reported"]
    base = reported[reported.system == compare_to]
    if base.empty:  # "TaskMem" also finds "TaskMem (Qwen3-VL-30B-A3B)" when it is the only one
        base = reported[reported.system.str.startswith(compare_to)]
    if len(base) != 1:
        raise ConfigError(
            f"compare_to={compare_to!r} is not a reported system; known: "
            f"{', '.join(reported.system)}"
        )
    values = [c for c in table.columns if "/" in c]
    ours = table[table.source == "reproduced"]
    out = ours[["system"]].copy()
    for col in values:
        out[col] = ours[col].astype(float) - float(base[col].iloc[0])
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- 04: evaluation


def evaluate_benchmarks(
    benchmarks: Sequence[str],
    sources: Sequence[str],
    memories: str | Path,
    tag: str,
    answerer: str,
    judge: str | None,
    qa: Any,
    stand_in: bool = False,
    fake_model: bool = False,
    progress: bool = True,
    videos: Sequence[str] = (),
    model: str = "fake",
    tasks: str = "none",
    limit_streams: int | None = None,
    attribute: str | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Run `pipeline.run_eval` per benchmark and write its metrics file under
    `<memories>/results/` (unless `write` is False: a memorizer compared with the main one);
    returns `benchmark -> EvalResult`. `attribute` asks why wrong answers failed
    (`EvalParams.attribute`, None: its default; `evidence` turns into `memory` for a benchmark
    without windows).

    `sources` gives one source per benchmark (missing or "" entries use the repository's
    `benchmarks/<name>/sample`); with `stand_in`, memories missing for a question's video are
    made from a generated video by the fake model first (smoke runs only). A benchmark with a
    video folder in `videos` starts from its videos instead: `pipeline.run_benchmark` memorizes
    its streams with `model` (resuming, `limit_streams` of them when given), then evaluates; it
    writes the metrics file itself, and only when every stream was memorized."""
    from taskmem_lab.bench.hub import load_benchmark
    from taskmem_lab.evaluation.evaluate import EvalParams
    from taskmem_lab.lab.samples import stand_in_memories
    from taskmem_lab.paths import repo_path
    from taskmem_lab.pipeline import run_benchmark, run_eval

    for what, given_list in (("sources", sources), ("video folders", videos)):
        if len(given_list) > len(benchmarks):
            raise ConfigError(f"{len(given_list)} {what} given for {len(benchmarks)} benchmarks")
    attribute = attribute or EvalParams().attribute
    results = {}
    for i, name in enumerate(benchmarks):
        given = sources[i] if i < len(sources) else ""
        source = (
            input_path(given, f"source of {name}")
            if given
            else repo_path(f"benchmarks/{name}/sample")
        )
        folder = videos[i] if i < len(videos) else ""
        if folder:
            bench = run_benchmark(
                name, source, input_path(folder, f"video folder of {name}"), model, answerer,
                judge=judge, qa=qa, tag=tag, out=memories, tasks=tasks,
                limit_streams=limit_streams, progress=progress,
                eval_params=EvalParams(attribute=attribution_mode(name, source, attribute)),
            )  # fmt: skip
            if bench.evaluation is None:
                failed = "; ".join(f"{o.stream_id}: {o.error}" for o in bench.failed[:3])
                raise BenchmarkError(f"{name}: {bench.note}" + (f" ({failed})" if failed else ""))
            results[name] = bench.evaluation
            continue
        if stand_in:
            made = stand_in_memories(load_benchmark(name, source), memories, tag)
            print(f"{name}: stand-in memories for {len(made)} videos (generated, not real)")
        params = EvalParams(attribute=attribution_mode(name, source, attribute))
        result = run_eval(
            name,
            source,
            memories,
            answerer,
            qa,
            tag=tag,
            judge=judge,
            params=params,
            progress=progress,
        )
        results[name] = result
        if not write:
            continue
        from taskmem_lab.evaluation.metrics import to_records

        write_metrics(
            Path(memories) / "results",
            name,
            to_records(result.table),
            answerer,
            judge,
            tag,
            fake_model,
            result.out,
        )
    return results


_PERCENT = tuple(f"{m}{suffix}" for m in METRICS for suffix in ("", "_lo", "_hi"))


def metrics_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    """The 04 table: one row per benchmark and group, scores in percent (NaN: undefined)."""
    import pandas as pd

    from taskmem_lab.evaluation.metrics import to_records

    rows = [row for r in results.values() for row in to_records(r.table)]
    table = pd.DataFrame(rows)
    for col in _PERCENT:
        table[col] = 100 * pd.to_numeric(table[col], errors="coerce")
    return table[["benchmark", "group", "value", "n", "clusters", *_PERCENT, "unparseable"]]


def group_tables(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """04's breakdowns: `(title, lines)` per benchmark and group (task type, Video-MME's
    duration, domain and sub-category, ...), intervals resampling videos (`clusters` per line)."""
    columns = ["value", "n", "clusters", *_PERCENT]
    return [
        (f"{bench} by {group}", part[columns].reset_index(drop=True))
        for (bench, group), part in table[table.group != "all"].groupby(
            ["benchmark", "group"], sort=False
        )
    ]


def readings_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """The lines whose Coverage and Precision change when unparseable replies are read as
    abstentions instead of wrong answers (`evaluation.report.readings`), over all benchmarks."""
    import pandas as pd

    from taskmem_lab.bench import get_benchmark
    from taskmem_lab.evaluation.report import readings

    return pd.DataFrame(
        [d for name, r in results.items() for d in readings(r.rows, get_benchmark(name).groups)]
    )


def _na_mark(ax: Any, x: float, y: float = 2.0, horizontal: bool = False) -> None:
    """A grey 'n/a' where a bar would be: an undefined value, not a zero."""
    if horizontal:
        ax.text(y, x, "n/a", va="center", ha="left", fontsize=6, color="0.45")
    else:
        ax.text(x, y, "n/a", ha="center", va="bottom", fontsize=6, color="0.45", rotation=90)


def plot_metrics(
    table: pd.DataFrame, groups: Sequence[str] = ("all", "task_type", "duration", "domain")
) -> Any:
    """04's bars: per benchmark, Acc / Cov / Prec (percent) for the overall line and each line
    of `groups`; accuracy with its 95% interval; undefined precision marked 'n/a', a real zero
    '0'."""
    import matplotlib.pyplot as plt

    table = table[table.group.isin(groups)]
    names = list(dict.fromkeys(table.benchmark))
    widest = max(table.groupby("benchmark").size().max(), 1)
    fig, axes = plt.subplots(
        len(names), 1, figsize=(max(9.0, 0.5 * widest + 2), 3.1 * len(names)), squeeze=False
    )
    colours = {"accuracy": "tab:blue", "coverage": "tab:orange", "precision": "tab:green"}
    for ax, name in zip(axes[:, 0], names, strict=True):
        part = table[table.benchmark == name].reset_index(drop=True)
        labels = [
            "all" if g == "all" else (v if g == "task_type" else f"{g}: {v}")
            for g, v in zip(part.group, part.value, strict=True)
        ]
        for k, metric in enumerate(METRICS):
            xs = [i + 0.27 * (k - 1) for i in range(len(part))]
            values = part[metric]
            err = None
            if metric == "accuracy":
                err = [
                    (values - part.accuracy_lo).clip(lower=0).fillna(0),
                    (part.accuracy_hi - values).clip(lower=0).fillna(0),
                ]
            ax.bar(
                xs,
                values.fillna(0),
                width=0.27,
                yerr=err,
                capsize=2,
                label=metric,
                color=colours[metric],
            )
            for x, v in zip(xs, values, strict=True):
                if math.isnan(v):
                    _na_mark(ax, x)
                elif v == 0:  # a real zero: say so, since no bar is drawn
                    ax.text(x, 1, "0", ha="center", va="bottom", fontsize=6, color=colours[metric])
        ax.set_xticks(range(len(part)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel("percent")
        n = int(part.n.iloc[0]) if len(part) else 0
        ax.set_title(f"{name} ({n} questions)", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncols=3, loc="lower right", bbox_to_anchor=(1.0, 1.08))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 04: why wrong

_ERROR_COLOURS = {
    "memorization_miss": "tab:red",
    "answering_miss": "tab:blue",
    "unattributed": "0.7",
}


def error_split_frame(runs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per memorizer, benchmark and line (all, each task type): questions, errors and
    each error class's count and percent of the questions. `runs` maps a memorizer's label (a
    memory tag, a policy) to `benchmark -> EvalResult` (or a results folder); benchmarks
    evaluated without `--attribute` are left out."""
    import pandas as pd

    from taskmem_lab.evaluation.attribution import ERROR_CLASSES, error_split
    from taskmem_lab.evaluation.evaluate import results_dir

    lines = []
    for label, results in runs.items():
        for bench, result in results.items():
            if isinstance(result, (str, Path)):
                folder = Path(result)
                rows = list(results_dir(folder).good().values())
                summary = _summary(folder)
            else:
                rows, summary = result.rows, result.summary
            attribution = summary.get("attribution")
            if not attribution:
                continue
            for line in error_split(rows, attribution["mode"]):
                entry = {"memorizer": label, "mode": attribution["mode"], **line}
                entry["benchmark"] = bench
                for cls in ERROR_CLASSES:
                    entry[f"{cls}_pct"] = 100 * line[cls] / line["n"] if line["n"] else math.nan
                lines.append(entry)
    return pd.DataFrame(lines)


def _summary(folder: Path) -> dict[str, Any]:
    import json

    path = folder / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def plot_error_split(table: pd.DataFrame) -> Any:
    """04's error split: per benchmark a panel, per line (all, each task type) one stacked bar
    per memorizer, side by side: memorization misses (red), answering misses (blue) and
    unattributed errors (grey), as percent of the questions (the stack is 100 - accuracy).
    A bare matplotlib `Figure` (no pyplot state)."""
    from matplotlib.figure import Figure

    from taskmem_lab.evaluation.attribution import ERROR_CLASSES

    if table.empty:
        raise ConfigError("no error split to draw: evaluate with --attribute evidence or memory")
    names = list(dict.fromkeys(table.benchmark))
    memorizers = list(dict.fromkeys(table.memorizer))
    widest = max(len(set(table[table.benchmark == b].value)) for b in names)
    fig = Figure(figsize=(max(7.0, (0.45 + 0.3 * len(memorizers)) * widest + 2), 3.0 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)
    width = 0.8 / len(memorizers)
    for ax, name in zip(axes[:, 0], names, strict=True):
        part = table[table.benchmark == name]
        values = list(dict.fromkeys(part.value))
        for k, label in enumerate(memorizers):
            mine = part[part.memorizer == label].set_index("value").reindex(values)
            xs = [i + width * (k - (len(memorizers) - 1) / 2) for i in range(len(values))]
            bottom = [0.0] * len(values)
            for cls in ERROR_CLASSES:
                heights = mine[f"{cls}_pct"].fillna(0).tolist()
                ax.bar(
                    xs,
                    heights,
                    width=width * 0.92,
                    bottom=bottom,
                    color=_ERROR_COLOURS[cls],
                    edgecolor="white",
                    linewidth=0.5,
                    label=cls.replace("_", " ") if k == 0 else None,
                )
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
            for x, top, n in zip(xs, bottom, mine.n, strict=True):
                if math.isnan(n):
                    continue  # this memorizer has no such line
                text = (f"{label} " if len(memorizers) > 1 else "") + ("0" if top == 0 else "")
                if text:  # a real zero says so, since no bar is drawn
                    ax.text(x, top + 1, text, ha="center", va="bottom", fontsize=6, rotation=90)
        sizes = part.groupby("value", sort=False).n.max()
        ticks = [f"{v} (n={int(sizes[v])})" for v in values]
        ax.set_xticks(range(len(values)), ticks, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 135 if len(memorizers) > 1 else 108)
        ax.set_ylabel("% of questions")
        modes = ", ".join(sorted(set(part["mode"])))
        n = int(part[part.value == "all"].n.iloc[0])
        ax.set_title(
            f"{name} ({n} questions): why answers were wrong (--attribute {modes})", fontsize=9
        )
    axes[0, 0].legend(fontsize=7, ncols=3, loc="lower right", bbox_to_anchor=(1.0, 1.1))
    fig.tight_layout()
    return fig


def judge_agreements(
    results: Mapping[str, Any], second_judge: str, progress: bool = True
) -> pd.DataFrame:
    """Re-judge every benchmark's judged answers with `second_judge` (`taskmem judge-agreement`;
    benchmarks without free-form answers are skipped): one row per benchmark with both judges,
    answers compared, raw agreement (percent), Cohen's kappa and the disagreements."""
    import pandas as pd

    from taskmem_lab.pipeline import run_judge_agreement

    lines = []
    for name, result in results.items():
        if not any(row.get("judge") for row in result.rows):
            continue
        s = run_judge_agreement(result.out, second_judge, progress=progress).summary
        lines.append(_agreement_line(name, s))
    return pd.DataFrame(lines, columns=list(_AGREEMENT_COLUMNS))


_AGREEMENT_COLUMNS = ("benchmark", "judge", "second judge", "compared", "agreement", "kappa",
                      "disagreements")  # fmt: skip


def _agreement_line(benchmark: str, s: Mapping[str, Any]) -> dict[str, Any]:
    agreement = s.get("agreement")
    return {
        "benchmark": benchmark,
        "judge": ", ".join(s["first_judge"]),
        "second judge": s["second_judge"],
        "compared": s["compared"],
        "agreement": math.nan if agreement is None else 100 * agreement,
        "kappa": math.nan if s.get("kappa") is None else s["kappa"],
        "disagreements": len(s.get("disagreements", [])),
    }


def kappa_table(metrics: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """06's judge check: for each reproduced free-form benchmark whose results were re-judged
    (`taskmem judge-agreement`, or 04's `second_judge`), its accuracy (percent) beside the
    agreement and Cohen's kappa of its judge with the second one; empty when none was run."""
    import pandas as pd

    from taskmem_lab.evaluation.agreement import read_agreements

    lines = []
    for m in metrics:
        if not m.get("results_dir"):
            continue
        for s in read_agreements(m["results_dir"]):
            accuracy = m["overall"].get("accuracy")
            line: dict[str, Any] = {"system": f"taskmem_lab: {m['answerer']} on {m['tag']}"}
            line.update(_agreement_line(m["benchmark"], s))
            line["accuracy"] = math.nan if accuracy is None else 100 * float(accuracy)
            lines.append(line)
    columns = ["system", "benchmark", "accuracy", *list(_AGREEMENT_COLUMNS)[1:]]
    return pd.DataFrame(lines, columns=columns)


def attribution_mode(name: str, source: str | Path, wanted: str) -> str:
    """`wanted`, except that a benchmark without evidence windows gets `memory` for `evidence`."""
    if wanted != "evidence":
        return wanted
    from taskmem_lab.bench.hub import load_benchmark

    return "evidence" if any(r.evidence for r in load_benchmark(name, source)) else "memory"


# --------------------------------------------------------------------------- 05: ablations


def ablation_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`pipeline.ablate`'s rows as a table, scores in percent."""
    import pandas as pd

    table = pd.DataFrame(list(rows))
    if table.empty:
        raise ConfigError(
            "the ablation grid is empty (every context was shorter than its interval)"
        )
    for col in METRICS:
        table[col] = 100 * pd.to_numeric(table[col], errors="coerce")
    return table.drop(columns=["tag"], errors="ignore")


def _switches(row: Any) -> str:
    on = [name for name in ("faces", "asr", "tasks") if bool(row[name])]
    return "+".join(on) if on else "video only"


def _flat_note(ax: Any, model: str, n: int, value: float) -> None:
    """Says on the panel why every setting sits at one x (and so the sweep shows only in y)."""
    why = (
        "the fake model writes entries of one fixed length"
        if model.split(":")[0] == "fake"
        else "every setting wrote the same"
    )
    ax.text(
        0.02,
        0.97,
        f"all {n} settings at {value:g} tokens:\n{why}",
        transform=ax.transAxes,
        va="top",
        fontsize=7,
        color="0.35",
    )


def plot_ablations(table: pd.DataFrame) -> Any:
    """05's figure: a column per memorizer model; top accuracy vs memory length, bottom coverage
    vs cost. Colour: interval / context duration; marker: which of faces / ASR / tasks were on
    (hollow, so coinciding settings stay visible)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(table.model))
    schedules = list(dict.fromkeys(zip(table.interval, table.context, strict=True)))
    kinds = list(dict.fromkeys(_switches(r) for _, r in table.iterrows()))
    colour = {s: plt.cm.tab10(i % 10) for i, s in enumerate(schedules)}
    marks = "osD^vP*X"
    marker = {k: marks[i % len(marks)] for i, k in enumerate(kinds)}
    sizes = {k: 90 - 12 * (i % 5) for i, k in enumerate(kinds)}
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models) + 2.6, 6.2), squeeze=False)
    for col, model in enumerate(models):
        part = table[table.model == model]
        for row, (x, y, xlabel, ylabel) in enumerate(
            [
                ("memory_tokens", "accuracy", "memory length (completion tokens)", "accuracy (%)"),
                ("cost_tokens", "coverage", "cost (all tokens)", "coverage (%)"),
            ]
        ):
            ax = axes[row, col]
            for _, r in part.iterrows():
                k = _switches(r)
                ax.scatter(
                    r[x],
                    r[y],
                    s=sizes[k],
                    marker=marker[k],
                    facecolors="none",
                    edgecolors=[colour[(r.interval, r.context)]],
                    linewidths=1.6,
                )
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_ylim(-5, 105)
            ax.margins(x=0.15)
            if len(part) > 1 and part[x].nunique() == 1:
                _flat_note(ax, model, len(part), float(part[x].iloc[0]))
            if row == 0:
                ax.set_title(f"memorizer: {model}", fontsize=9)
    colour_handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="none",
            markeredgecolor=colour[s],
            markeredgewidth=1.6,
            label=f"interval {s[0]:g} s, context {s[1]:g} s",
        )
        for s in schedules
    ]
    marker_handles = [
        Line2D(
            [],
            [],
            marker=marker[k],
            linestyle="",
            markerfacecolor="none",
            markeredgecolor="0.2",
            label=k,
        )
        for k in kinds
    ]
    edge = 1 - 2.4 / fig.get_figwidth()
    fig.tight_layout(rect=(0, 0, edge, 1))
    first = fig.legend(
        handles=colour_handles,
        title="schedule (colour)",
        fontsize=7,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(edge, 0.95),
    )
    fig.add_artist(first)
    fig.legend(
        handles=marker_handles,
        title="perception (marker)",
        fontsize=7,
        title_fontsize=7,
        loc="upper left",
        bbox_to_anchor=(edge, 0.55),
    )
    return fig


# --------------------------------------------------------------------------- 06: the main table


def plot_main_table(table: pd.DataFrame, metric: str = "accuracy", fake: bool = False) -> Any:
    """06's figure: one panel per benchmark, one horizontal bar per system (reported blue,
    reproduced red), value written at the bar's end; a missing value reads 'n/a', a zero gets a
    tick where its bar would start. With `fake` (rows from a fake model) the title says that the
    red rows check the pipeline and reproduce nothing."""
    import matplotlib.pyplot as plt

    benchmarks = [c.split("/")[0] for c in table.columns if c.endswith(f"/{metric}")]
    systems = list(table.system)
    fig, axes = plt.subplots(
        1,
        len(benchmarks),
        figsize=(3.2 * len(benchmarks) + 3, 0.32 * len(systems) + 1.4),
        sharey=True,
        squeeze=False,
    )
    ys = list(range(len(systems)))[::-1]
    for ax, bench in zip(axes[0], benchmarks, strict=True):
        values = table[f"{bench}/{metric}"].astype(float)
        colours = ["tab:red" if s == "reproduced" else "tab:blue" for s in table.source]
        ax.barh(ys, values.fillna(0), color=colours, height=0.7)
        for y, v in zip(ys, values, strict=True):
            if math.isnan(v):
                _na_mark(ax, y, 1.0, horizontal=True)
            else:
                if v == 0:  # no bar to see: a tick where it would start
                    ax.plot([0], [y], marker="|", markersize=9, markeredgewidth=2, color="0.2")
                ax.text(v + 1, y, f"{v:.1f}", va="center", fontsize=6)
        ax.set_xlim(0, 110)
        ax.set_title(bench, fontsize=9)
        ax.set_xlabel(f"{metric} (%)")
    shown = {"reproduced": "fake model"} if fake else {}
    axes[0, 0].set_yticks(
        ys,
        [f"{s} ({shown.get(src, src)})" for s, src in zip(systems, table.source, strict=True)],
        fontsize=7,
    )
    title = (
        f"{metric.capitalize()}: reported in the paper (blue) beside this toolkit's pipeline "
        "check with a fake model (red: not a reproduction)"
        if fake
        else f"{metric.capitalize()}: reported in the paper (blue) and reproduced here (red)"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_reported(reported: pd.DataFrame) -> Any:
    """The paper's reported numbers alone (no run of this toolkit): a panel per benchmark, per
    system Acc / Cov / Prec bars, titled as reported numbers."""
    import matplotlib.pyplot as plt

    benchmarks = [b for b in BENCHMARKS if b in set(reported.benchmark)]
    systems = list(dict.fromkeys(reported.system))
    fig, axes = plt.subplots(
        1,
        len(benchmarks),
        figsize=(3.4 * len(benchmarks) + 2.5, 0.55 * len(systems) + 1.8),
        sharey=True,
        squeeze=False,
    )
    colours = {"accuracy": "tab:blue", "coverage": "tab:orange", "precision": "tab:green"}
    for ax, bench in zip(axes[0], benchmarks, strict=True):
        part = reported[reported.benchmark == bench].set_index("system")
        for k, metric in enumerate(METRICS):
            ys = [len(systems) - 1 - i + 0.26 * (1 - k) for i in range(len(systems))]
            vals = [float(part[metric].get(s, float("nan"))) for s in systems]
            ax.barh(
                ys,
                [0 if math.isnan(v) else v for v in vals],
                height=0.26,
                color=colours[metric],
                label=metric,
            )
            for y, v in zip(ys, vals, strict=True):
                if math.isnan(v):
                    _na_mark(ax, y, 1.0, horizontal=True)
        ax.set_xlim(0, 100)
        ax.set_xlabel("percent")
        ax.set_title(bench, fontsize=9)
    axes[0, 0].set_yticks(range(len(systems))[::-1], systems, fontsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle("Reported in the paper (not reproduced here): Acc / Cov / Prec", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.legend(handles, labels, fontsize=7, ncols=3, loc="upper right", bbox_to_anchor=(1.0, 0.955))
    return fig


@contextmanager
def _working_directory(path: Path | None) -> Iterator[None]:
    """Run a block in `path` (so relative input paths in provenance resolve there)."""
    before = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def write_reported_figure(
    directory: str | Path | None = None, reported: str | Path = "benchmarks/paper_results.csv"
) -> Path:
    """`paper_reported.png/.pdf/.json` in `directory` (the repository's `figures/` by default):
    the paper's table drawn by `plot_reported`, with provenance."""
    import matplotlib.pyplot as plt

    from taskmem_lab.paths import repo_path

    out = Path(directory) if directory is not None else repo_path("figures")
    csv = input_path(reported, "the paper's results table")
    fig = plot_reported(paper_table(csv))
    root = repo_root()
    shown = csv.relative_to(root) if root is not None and csv.is_relative_to(root) else csv
    provenance = Provenance(
        "lab.report.write_reported_figure", {"reported": str(shown)}, [str(shown)]
    )
    with _working_directory(root):
        path = save_figure(fig, "paper_reported", provenance, Path(out).absolute())
    plt.close(fig)
    return path
