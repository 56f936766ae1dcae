"""Tables for the notebooks: the paper's reported main table, and breakdowns of our results.

Floor 5. `paper_table()` reads `benchmarks/paper_results.csv` (the TaskMem paper's main table:
Accuracy, Coverage and Precision in percent for eight systems on Video-MME, EgoLife and EgoTempo,
each row with its source) and checks it: every value in [0, 100], and Acc = Cov x Prec up to the
rounding of one-decimal figures.
`write_metrics()` / `read_metrics()` keep one benchmark's metric rows with who answered and judged
(`<results>/<benchmark>.metrics.json`: written by `04_qa` and `taskmem bench`, read by `06_paper`).
`readings()` lists, from a results folder's rows, the table lines where the two readings of
unparseable replies (answered-and-wrong, or abstained) give different Coverage and Precision.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.errors import BenchmarkError, ConfigError
from taskmem_lab.evaluation.metrics import reading_differences
from taskmem_lab.store import atomic_write_json

PAPER_TABLE = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_results.csv"
METRICS = ("accuracy", "coverage", "precision")
COLUMNS = ("system", "benchmark", *METRICS, "source")
ROUNDING_SLACK = 0.15  # |Acc - Cov x Prec| allowed by three figures rounded to 0.1


@dataclass(frozen=True)
class PaperRow:
    """One system on one benchmark, as the paper reports it (percent)."""

    system: str
    benchmark: str
    accuracy: float
    coverage: float
    precision: float
    source: str


def paper_table(path: str | Path | None = None) -> list[PaperRow]:
    """The reported main table, checked; errors name the file and line."""
    p = Path(path) if path else PAPER_TABLE
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BenchmarkError(f"cannot read the paper table {p}: {exc.strerror}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BenchmarkError(f"{p}: missing column(s) {missing}; expected {list(COLUMNS)}")
    rows = []
    for line, raw in enumerate(reader, start=2):
        where = f"{p} line {line}"
        try:
            values = {m: float(raw[m]) for m in METRICS}
        except (TypeError, ValueError):
            raise BenchmarkError(f"{where}: {METRICS} must be numbers, got {raw}") from None
        if not all(math.isfinite(v) and 0 <= v <= 100 for v in values.values()):
            raise BenchmarkError(f"{where}: values are percentages in [0, 100], got {values}")
        implied = values["coverage"] * values["precision"] / 100
        if abs(values["accuracy"] - implied) > ROUNDING_SLACK:
            raise BenchmarkError(
                f"{where}: accuracy {values['accuracy']} is not coverage x precision "
                f"({implied:.2f})"
            )
        if not (raw["system"] or "").strip() or not (raw["source"] or "").strip():
            raise BenchmarkError(f"{where}: every row needs a system and a source")
        rows.append(
            PaperRow(
                raw["system"].strip(),
                raw["benchmark"].strip(),
                **values,
                source=raw["source"].strip(),
            )
        )
    if not rows:
        raise BenchmarkError(f"{p}: no rows")
    return rows


def paper_wide(rows: Sequence[PaperRow]) -> list[dict[str, Any]]:
    """One line per system in the paper's layout: `benchmark/metric` columns, and the source."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        line = out.setdefault(r.system, {"system": r.system, "source": r.source})
        for m in METRICS:
            line[f"{r.benchmark}/{m}"] = getattr(r, m)
    return list(out.values())


def readings(rows: Sequence[Mapping[str, Any]], groups: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Lines whose Cov/Prec differ between the two readings of unparseable replies."""
    from taskmem_lab.evaluation.evaluate import outcome_of

    return reading_differences([outcome_of(r) for r in rows], by=("task_type", *groups))


# --------------------------------------------------------------------------- metrics files


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
