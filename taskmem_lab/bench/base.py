"""What every benchmark module provides (`Benchmark`) and the file readers they share.

Floor 2 (bench). A benchmark module converts its published source (a local file or folder, or
rows fetched from the Hub) into `QARecord`s; it never touches media. Readers here turn JSON,
JSONL and parquet files into plain rows with errors that name the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.bench.record import QARecord, check_unique
from taskmem_lab.errors import BenchmarkError

TABLE_SUFFIXES = (".parquet", ".json", ".jsonl")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: how to read its source and what its records carry.

    Attributes:
        name: registry key, config name of the published dataset.
        title: human name.
        from_path: records from a local source file or folder (original schema).
        from_rows: records from rows of the original schema (e.g. fetched from the Hub); the
            second argument names where they came from, for error messages.
        hub_original: `(repo_id, config)` of the original on the Hub, when it is loadable with
            `datasets.load_dataset`.
        groups: meta fields the metrics table also breaks down by (besides task type).
        has_evidence: whether its questions carry evidence windows.
        answer_kind: "choice" or "open".
    """

    name: str
    title: str
    from_path: Callable[[Path], list[QARecord]]
    from_rows: Callable[[Sequence[Mapping[str, Any]], str], list[QARecord]]
    answer_kind: str
    hub_original: tuple[str, str | None] | None = None
    groups: tuple[str, ...] = ()
    has_evidence: bool = False


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of one `.json` (a list, or an object holding one list), `.jsonl` or `.parquet` file."""
    if not path.is_file():
        raise BenchmarkError(f"benchmark source not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise BenchmarkError(
                "reading parquet needs pyarrow: pip install 'taskmem_lab[eval]'"
            ) from exc
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if suffix == ".json":
            data = json.loads(text)
        else:
            raise BenchmarkError(f"{path}: expected one of {TABLE_SUFFIXES}")
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise BenchmarkError(f"{path}: expected a JSON list of rows or an object with one list")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BenchmarkError(f"{path}: expected a list of JSON objects")
    return data


def table_files(folder: Path, pattern: str = "*") -> list[Path]:
    """Data files under `folder` (recursively), sorted, skipping hidden files."""
    files = sorted(
        p
        for p in folder.rglob(pattern)
        if p.is_file()
        and p.suffix.lower() in TABLE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise BenchmarkError(
            f"no {'/'.join(TABLE_SUFFIXES)} files matching {pattern!r} in {folder}"
        )
    return files


def records_from_path(
    path: Path,
    from_rows: Callable[[Sequence[Mapping[str, Any]], str], list[QARecord]],
    pattern: str = "*",
) -> list[QARecord]:
    """Records of one source file, or of every data file matching `pattern` under a folder.

    Each file is converted by the benchmark's `from_rows`; ids must be unique across all files.
    """
    files = table_files(path, pattern) if path.is_dir() else [path]
    records: list[QARecord] = []
    for f in files:
        records += from_rows(read_rows(f), str(f))
    check_unique(records, str(path))
    return records


def require_fields(row: Mapping[str, Any], keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise BenchmarkError(f"{where}: missing field(s) {missing} (found {sorted(row)[:12]})")
