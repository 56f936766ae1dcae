"""Figures and tables with provenance, the metrics file of 04 and the paper's reported table.

Floor 5. `save_figure(fig, name)` writes `figures/<name>.png`, `.pdf` and `<name>.json` (notebook,
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
import json
import math
import os
import re
import subprocess
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import taskmem_lab
from taskmem_lab.errors import ConfigError
from taskmem_lab.paths import input_path, repo_root
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


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


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
    (out / f"{name}.md").write_text(
        table.to_markdown(index=False, floatfmt=".1f") + note, encoding="utf-8"
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


def metrics_path(results: str | Path, benchmark: str) -> Path:
    """`<results>/<benchmark>.metrics.json`."""
    return Path(results) / f"{benchmark}.metrics.json"


def write_metrics(
    results: str | Path,
    benchmark: str,
    rows: Sequence[Mapping[str, Any]],
    answerer: str,
    judge: str | None,
    tag: str,
    fake_model: bool,
    results_dir: str | Path,
) -> Path:
    """Write one benchmark's metric rows (fractions, as `evaluation.metrics.to_records` gives
    them) with who answered and judged; `06_paper` reads it back with `read_metrics`."""
    if not any(r.get("group") == "all" for r in rows):
        raise ConfigError(f"metrics of {benchmark} have no overall ('all') row")
    path = metrics_path(results, benchmark)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path,
        {
            "benchmark": benchmark,
            "answerer": answerer,
            "judge": judge,
            "tag": tag,
            "fake_model": bool(fake_model),
            "rows": [dict(r) for r in rows],
            "results_dir": str(results_dir),
        },
    )
    return path


def read_metrics(results: str | Path) -> list[dict[str, Any]]:
    """Every `*.metrics.json` under `results`, checked; none found is an error naming the folder."""
    folder = Path(results)
    files = sorted(folder.glob("*.metrics.json"))
    if not files:
        raise ConfigError(
            f"no metrics files (*.metrics.json) in {folder}: run 04_qa with its results there first"
        )
    out = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            overall = next(r for r in data["rows"] if r["group"] == "all")
            data["overall"] = overall
            data["path"] = str(f)
            _ = data["benchmark"], data["answerer"], data["tag"]
        except (ValueError, KeyError, StopIteration, TypeError) as exc:
            raise ConfigError(f"{f}: not a metrics file written by 04_qa ({exc!r})") from exc
        out.append(data)
    return out


# --------------------------------------------------------------------------- the paper's table


def paper_table(path: str | Path = "benchmarks/paper_results.csv") -> pd.DataFrame:
    """The paper's reported numbers, one row per (system, benchmark) with accuracy, coverage and
    precision in percent (missing cells are NaN) and a `source` column.

    Reads either layout: long (`system,benchmark,metric,value[,source]`) or wide
    (`system,benchmark,accuracy,coverage,precision[,source]`). Relative paths resolve against the
    repository, never the kernel's working directory."""
    import pandas as pd

    csv = input_path(path, "the paper's results table")
    raw = pd.read_csv(csv)
    if {"metric", "value"} <= set(raw.columns):
        wide = raw.pivot_table(
            index=["system", "benchmark"], columns="metric", values="value", sort=False
        ).reset_index()
        if "source" in raw.columns:
            sources = raw.groupby(["system", "benchmark"], sort=False)["source"].first()
            wide = wide.merge(sources.reset_index(), on=["system", "benchmark"], how="left")
    elif set(METRICS) & set(raw.columns):
        wide = raw
    else:
        raise ConfigError(
            f"{csv}: expected columns system,benchmark,metric,value or "
            f"system,benchmark,{','.join(METRICS)}; found {','.join(raw.columns)}"
        )
    for m in METRICS:
        if m not in wide.columns:
            wide[m] = float("nan")
    if "source" not in wide.columns:
        wide["source"] = str(csv.name)
    return wide[["system", "benchmark", *METRICS, "source"]]


def main_table(
    reported: pd.DataFrame,
    metrics: Sequence[Mapping[str, Any]],
    benchmarks: Sequence[str] = BENCHMARKS,
) -> pd.DataFrame:
    """The paper's layout: one row per system (reported, then reproduced), one column per
    `benchmark/metric`, in percent. Reproduced rows come from `read_metrics`; an undefined metric
    (precision with nothing answered) stays NaN, never 0."""
    import pandas as pd

    columns = [f"{b}/{m}" for b in benchmarks for m in METRICS]
    rows: list[dict[str, Any]] = []
    for system, part in reported.groupby("system", sort=False):
        row: dict[str, Any] = {"system": system, "source": "reported"}
        for _, r in part.iterrows():
            for m in METRICS:
                row[f"{r['benchmark']}/{m}"] = r[m]
        rows.append(row)
    ours: dict[str, dict[str, Any]] = {}
    for data in metrics:
        name = f"taskmem_lab: {data['answerer']} on {data['tag']}"
        entry = ours.setdefault(name, {"system": name, "source": "reproduced"})
        for m in METRICS:
            value = data["overall"].get(m)
            ok = value is not None and not (isinstance(value, float) and math.isnan(value))
            entry[f"{data['benchmark']}/{m}"] = 100 * float(value) if ok else float("nan")
    rows += list(ours.values())
    return pd.DataFrame(rows).reindex(columns=["system", "source", *columns])


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
