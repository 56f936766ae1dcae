"""The online task stream: questions that arrive at stream times and focus the memorizer.

Floor 2. A task file is JSON (a list), JSONL, or YAML with records `{id, question, time}` and
optional `options`. Clip k sees at most `limit` of the latest tasks that arrived strictly before
its end; never one that arrives later.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from taskmem_lab.errors import ConfigError
from taskmem_lab.schema import Task


def load_tasks(path: str | Path) -> list[Task]:
    """Tasks sorted by arrival time (ties keep file order)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"task file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif p.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"task file {p} is not valid: {exc}") from exc
    if isinstance(rows, dict):
        rows = rows.get("tasks", [])
    if not isinstance(rows, list):
        raise ConfigError(f"task file {p} must hold a list of tasks")
    tasks = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "question" not in row or "time" not in row:
            raise ConfigError(f"task file {p}: task {i} needs 'question' and 'time'")
        tasks.append(
            Task(
                task_id=str(row.get("id", i)),
                question=str(row["question"]),
                time=float(row["time"]),
                options=tuple(str(o) for o in row.get("options", ()) or ()),
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
