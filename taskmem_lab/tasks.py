"""The online task stream: questions that arrive at stream times and focus the memorizer.

Floor 2. A task file is JSON (a list), JSONL, or YAML with records `{id, question, time}` and
optional `options`. Clip k sees at most `limit` of the latest tasks that arrived strictly before
its end; never one that arrives later.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import yaml

from taskmem_lab.errors import ConfigError
from taskmem_lab.schema import Task


def load_tasks(path: str | Path) -> list[Task]:
    """Tasks sorted by arrival time (ties keep file order); a bad task is one line naming it
    (its line in a JSONL file, its position otherwise) and the field."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"task file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"task file {p} is not UTF-8 text: {exc}") from exc
    where: list[str] = []
    try:
        if p.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(text.split("\n"), 1):  # numbered as an editor shows
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ConfigError(
                            f"task file {p}, line {n}: not valid JSON ({exc})"
                        ) from exc
                    except RecursionError:
                        raise ConfigError(
                            f"task file {p}, line {n}: nested too deeply to read"
                        ) from None
                    where.append(f"line {n}")
        elif p.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"task file {p} is not valid: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"task file {p} is nested too deeply to read") from None
    if isinstance(rows, dict):
        rows = rows.get("tasks", [])
    if not isinstance(rows, list):
        raise ConfigError(f"task file {p} must hold a list of tasks")
    tasks = []
    for i, row in enumerate(rows):
        at = f"task file {p}, {where[i] if where else f'task {i}'}"
        if not isinstance(row, dict) or "question" not in row or "time" not in row:
            raise ConfigError(f"{at}: a task needs 'question' and 'time'")
        time = row["time"]
        number = isinstance(time, int | float) and not isinstance(time, bool)
        if not number or abs(time) > 1e12 or not math.isfinite(time):
            raise ConfigError(f"{at}: 'time' must be a finite number of seconds, got {time!r:.40}")
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise ConfigError(f"{at}: 'question' must be non-empty text")
        options = row.get("options") or []
        if not isinstance(options, list) or not all(
            isinstance(o, str | int | float) and not isinstance(o, bool) for o in options
        ):
            raise ConfigError(f"{at}: 'options' must be a list of texts, got {options!r}")
        tasks.append(
            Task(
                task_id=str(row.get("id", i)),
                question=row["question"],
                time=float(time),
                options=tuple(str(o) for o in options),
            )
        )
    return sorted(tasks, key=lambda t: t.time)


def arrived_before(tasks: Sequence[Task], t: float, limit: int = 5) -> list[Task]:
    """The latest `limit` tasks with arrival time < t, oldest first."""
    if limit <= 0:
        return []
    return [task for task in tasks if task.time < t][-limit:]


def tasks_digest(tasks: Sequence[Task]) -> str | None:
    if not tasks:
        return None
    data = json.dumps([[t.task_id, t.question, t.time, list(t.options)] for t in tasks])
    return hashlib.sha256(data.encode()).hexdigest()[:16]
