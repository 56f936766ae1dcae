"""What every benchmark module provides (`Benchmark`) and the file readers they share.

Floor 2 (bench). A benchmark module converts its published source (a local file or folder, or
rows fetched from the Hub) into `QARecord`s; it never touches media. Readers here turn JSON,
JSONL and parquet files into plain rows with errors that name the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmem_lab.bench.record import QARecord, check_unique
from taskmem_lab.errors import BenchmarkError

TABLE_SUFFIXES = (".parquet", ".json", ".jsonl")
TASK_KEY = "_task"  # the task-type key a row was listed under in an original TaskMem file
ALL_TASKS = "all"


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
        hub_ids: Hub repo ids that name the original (loaded with `hub_original`'s config).
        cluster_by_video: whether bootstrap intervals resample videos (questions of one video
            move together) rather than questions.
    """

    name: str
    title: str
    from_path: Callable[[Path], list[QARecord]]
    from_rows: Callable[[Sequence[Mapping[str, Any]], str], list[QARecord]]
    answer_kind: str
    hub_original: tuple[str, str | None] | None = None
    groups: tuple[str, ...] = ()
    has_evidence: bool = False
    hub_ids: tuple[str, ...] = ()
    cluster_by_video: bool = True


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
    if suffix not in (".json", ".jsonl"):
        raise BenchmarkError(f"{path}: expected one of {TABLE_SUFFIXES}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if suffix == ".jsonl":
        return [_json(line, f"{path}, line {n}") for n, line in _lines(text) if line.strip()]
    data = _json(text, str(path))
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if _is_task_dict(data):
            return task_dict_rows(data)
        if len(lists) != 1:
            raise BenchmarkError(f"{path}: expected a JSON list of rows or an object with one list")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BenchmarkError(f"{path}: expected a list of JSON objects")
    return data


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a JSONL text, counted as editors count them (only newlines end a
    line, so the numbers match what a user sees)."""
    return enumerate(text.split("\n"), 1)


def _json(text: str, where: str) -> Any:
    """`text` as JSON; `where` (the file, or the file and line) names it in the one-line error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BenchmarkError(f"{where} is nested too deeply to read") from None


def _is_task_dict(data: Mapping[str, Any]) -> bool:
    """The original TaskMem question files: `{task type or "all": [rows with "videoID"]}`."""
    return (
        len(data) > 0
        and all(isinstance(v, list) for v in data.values())
        and any(
            isinstance(v, list) and v and isinstance(v[0], dict) and "videoID" in v[0]
            for v in data.values()
        )
        and (ALL_TASKS in data or len(data) > 1)
    )


def task_dict_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of an original TaskMem question file (`video_info*.json`), each once.

    Each row carries the key it was listed under as `_task`: its task type, or "all" for a row
    listed only there. A row under several keys (its type and "all") is kept once, under its type.
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    keys = [k for k in data if k != ALL_TASKS] + ([ALL_TASKS] if ALL_TASKS in data else [])
    for key in keys:
        for row in data[key]:
            if not isinstance(row, dict):
                raise BenchmarkError(f"task {key!r}: expected JSON objects, got {row!r:.80}")
            ident = json.dumps(
                [row.get("question_id"), row.get("videoID"), row.get("question")], default=str
            )
            if ident in seen:
                continue
            seen.add(ident)
            rows.append({**row, TASK_KEY: key})
    return rows


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


def located(convert: Callable[..., QARecord], row: Any, where: str, *args: Any) -> QARecord:
    """`convert(row, where, *args)`, with any error's message prefixed by `where` (file, row)."""
    if not isinstance(row, Mapping):
        raise BenchmarkError(f"{where}: expected a JSON object, got {type(row).__name__}")
    try:
        return convert(row, where, *args)
    except BenchmarkError as exc:
        if str(exc).startswith(where):
            raise
        raise BenchmarkError(f"{where}: {exc}") from exc
